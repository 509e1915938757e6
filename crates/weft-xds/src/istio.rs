//! Istio's own Envoy filter configs that `envoy-types` does not carry, hand-written from
//! istio/api 1.14 (`envoy/config/filter/http/authn/v2alpha1/config.proto`,
//! `authentication/v1alpha1/policy.proto`). Only the fields istiod 1.14 sets for
//! RequestAuthentication are modelled; the rest (`targets`, `peers`, the JWT locations of the
//! alpha policy) are skipped when decoding, as prost skips unknown fields.

use std::collections::HashMap;

/// The HTTP filter name istiod gives the authn filter.
pub const AUTHN_FILTER_NAME: &str = "istio_authn";

/// The type URL of [`FilterConfig`] in an `Any`.
pub const AUTHN_FILTER_TYPE_URL: &str =
    "type.googleapis.com/istio.envoy.config.filter.http.authn.v2alpha1.FilterConfig";

/// `istio.envoy.config.filter.http.authn.v2alpha1.FilterConfig`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FilterConfig {
    /// The authentication policy (its origins name the JWT issuers).
    #[prost(message, optional, tag = "1")]
    pub policy: Option<Policy>,
    /// Obsolete (alpha policy): issuer → header of the payload.
    #[prost(map = "string, string", tag = "2")]
    pub jwt_output_payload_locations: HashMap<String, String>,
    /// Skip the peer trust-domain check (istiod always sets it).
    #[prost(bool, tag = "3")]
    pub skip_validate_trust_domain: bool,
    /// Trust domains accepted from peers.
    #[prost(string, repeated, tag = "4")]
    pub allowed_trust_domains: Vec<String>,
    /// Don't clear the route cache after authentication (sidecars).
    #[prost(bool, tag = "5")]
    pub disable_clear_route_cache: bool,
}

impl prost::Name for FilterConfig {
    const NAME: &'static str = "FilterConfig";
    const PACKAGE: &'static str = "istio.envoy.config.filter.http.authn.v2alpha1";
    fn type_url() -> String {
        AUTHN_FILTER_TYPE_URL.to_string()
    }
}

/// `istio.authentication.v1alpha1.Policy` (the fields istiod 1.14 writes).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Policy {
    /// Peer authentication is optional.
    #[prost(bool, tag = "3")]
    pub peer_is_optional: bool,
    /// The origins (end-user JWT issuers), in order.
    #[prost(message, repeated, tag = "4")]
    pub origins: Vec<OriginAuthenticationMethod>,
    /// A request without an origin passes.
    #[prost(bool, tag = "5")]
    pub origin_is_optional: bool,
    /// Where `request.auth.principal` comes from.
    #[prost(enumeration = "PrincipalBinding", tag = "6")]
    pub principal_binding: i32,
}

/// `istio.authentication.v1alpha1.PrincipalBinding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum PrincipalBinding {
    /// From the peer identity.
    UsePeer = 0,
    /// From the origin (JWT).
    UseOrigin = 1,
}

/// `istio.authentication.v1alpha1.OriginAuthenticationMethod`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OriginAuthenticationMethod {
    /// The JWT origin.
    #[prost(message, optional, tag = "1")]
    pub jwt: Option<Jwt>,
}

/// `istio.authentication.v1alpha1.Jwt` (issuer and the plain fields; trigger rules skipped).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Jwt {
    /// `iss` of the tokens.
    #[prost(string, tag = "1")]
    pub issuer: String,
    /// Accepted audiences.
    #[prost(string, repeated, tag = "2")]
    pub audiences: Vec<String>,
    /// Where the keys come from.
    #[prost(string, tag = "3")]
    pub jwks_uri: String,
    /// Headers carrying the token.
    #[prost(string, repeated, tag = "6")]
    pub jwt_headers: Vec<String>,
    /// Query parameters carrying the token.
    #[prost(string, repeated, tag = "7")]
    pub jwt_params: Vec<String>,
    /// Inline JWKS.
    #[prost(string, tag = "10")]
    pub jwks: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn filter_config_round_trips_with_its_type_url() {
        let cfg = FilterConfig {
            policy: Some(Policy {
                origins: vec![OriginAuthenticationMethod {
                    jwt: Some(Jwt {
                        issuer: "testing@secure.istio.io".into(),
                        ..Default::default()
                    }),
                }],
                origin_is_optional: true,
                principal_binding: PrincipalBinding::UseOrigin as i32,
                ..Default::default()
            }),
            skip_validate_trust_domain: true,
            disable_clear_route_cache: true,
            ..Default::default()
        };
        assert_eq!(
            <FilterConfig as prost::Name>::type_url(),
            AUTHN_FILTER_TYPE_URL
        );
        let bytes = cfg.encode_to_vec();
        let back = FilterConfig::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(back, cfg);
        assert_eq!(bytes[0], 0x0a, "policy is field 1, length-delimited");
        assert_eq!(
            &bytes[bytes.len() - 4..],
            &[0x18, 1, 0x28, 1],
            "fields 3 and 5 true"
        );
    }
}

/// The type URL of Istio's name table (NDS, pilot-agent's DNS proxy).
pub const NAME_TABLE_TYPE_URL: &str = "type.googleapis.com/istio.networking.nds.v1.NameTable";

/// `istio.networking.nds.v1.NameTable` (istio/istio `pkg/dns/proto/nds.proto`): the host
/// names a sidecar's DNS proxy answers itself, with their addresses.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NameTable {
    /// Host name → its addresses.
    #[prost(btree_map = "string, message", tag = "1")]
    pub table: std::collections::BTreeMap<String, NameInfo>,
}

/// `istio.networking.nds.v1.NameTable.NameInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NameInfo {
    /// The service's addresses (its VIPs, or the one allocated for it).
    #[prost(string, repeated, tag = "1")]
    pub ips: Vec<String>,
    /// `Kubernetes` for cluster services (short names apply), `External` otherwise.
    #[prost(string, tag = "2")]
    pub registry: String,
    /// The service name, for `name`, `name.namespace` and `name.namespace.svc`.
    #[prost(string, tag = "3")]
    pub shortname: String,
    /// The service namespace.
    #[prost(string, tag = "4")]
    pub namespace: String,
    /// Other names of the host.
    #[prost(string, repeated, tag = "5")]
    pub alt_hosts: Vec<String>,
}

impl prost::Name for NameTable {
    const NAME: &'static str = "NameTable";
    const PACKAGE: &'static str = "istio.networking.nds.v1";
    fn type_url() -> String {
        NAME_TABLE_TYPE_URL.to_string()
    }
}
