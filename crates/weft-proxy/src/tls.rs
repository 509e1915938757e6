//! TLS for the data path: turns the xDS TLS contexts (SDS `default`/`ROOTCA`, SAN matchers,
//! ALPN, minimum version) into rustls configs backed by the proxy's live identity, so a
//! certificate rotation never needs new configs and never drops a connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use weft_identity::{ClientTlsOptions, LiveIdentity, ServerTlsOptions, TlsVersion};

/// A peer SAN requirement from the xDS validation context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SanMatch {
    Exact(String),
    Prefix(String),
}

/// The SAN matchers of a TLS context (typed and the legacy `match_subject_alt_names`).
pub fn san_matchers(common: &tls::CommonTlsContext) -> Vec<SanMatch> {
    use tls::common_tls_context::ValidationContextType as V;
    let vc = match &common.validation_context_type {
        Some(V::CombinedValidationContext(c)) => c.default_validation_context.clone(),
        Some(V::ValidationContext(v)) => Some(v.clone()),
        _ => None,
    };
    let Some(vc) = vc else { return Vec::new() };
    let mut out = Vec::new();
    let mut push = |m: &matcher::StringMatcher| {
        use matcher::string_matcher::MatchPattern as P;
        match &m.match_pattern {
            Some(P::Exact(s)) => out.push(SanMatch::Exact(s.clone())),
            Some(P::Prefix(s)) => out.push(SanMatch::Prefix(s.clone())),
            _ => {}
        }
    };
    for m in &vc.match_typed_subject_alt_names {
        if let Some(sm) = &m.matcher {
            push(sm);
        }
    }
    #[allow(deprecated)]
    for m in &vc.match_subject_alt_names {
        push(m);
    }
    out
}

type ClientKey = (Vec<String>, Vec<String>);
type ServerKey = (bool, Vec<Vec<u8>>, Vec<String>);

/// Builds and caches rustls configs for the TLS contexts in the config.
#[derive(Debug)]
pub struct TlsFactory {
    live: Arc<LiveIdentity>,
    trust_domain: String,
    clients: Mutex<HashMap<ClientKey, Arc<rustls::ClientConfig>>>,
    servers: Mutex<HashMap<ServerKey, Arc<rustls::ServerConfig>>>,
    originations: Mutex<HashMap<weft_identity::OriginationOptions, Arc<rustls::ClientConfig>>>,
}

impl TlsFactory {
    pub fn new(live: Arc<LiveIdentity>, trust_domain: String) -> Self {
        TlsFactory {
            live,
            trust_domain,
            clients: Mutex::default(),
            servers: Mutex::default(),
            originations: Mutex::default(),
        }
    }

    pub fn live(&self) -> &Arc<LiveIdentity> {
        &self.live
    }

    /// A client config that requires the server to present one of `sans` (any ID of the trust
    /// domain when empty) and offers `alpn`.
    pub fn client(
        &self,
        sans: &[String],
        alpn: &[String],
    ) -> Result<Arc<rustls::ClientConfig>, weft_identity::IdentityError> {
        let key = (sans.to_vec(), alpn.to_vec());
        if let Some(c) = self.clients.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(c);
        }
        let cfg = weft_identity::client_config(
            self.live.clone(),
            ClientTlsOptions {
                expected_ids: sans.to_vec(),
                alpn: alpn.iter().map(|a| a.as_bytes().to_vec()).collect(),
                trust_domains: vec![self.trust_domain.clone()],
            },
        )?;
        if let Ok(mut m) = self.clients.lock() {
            m.insert(key, cfg.clone());
        }
        Ok(cfg)
    }

    /// A client config for TLS origination outside the mesh (DestinationRule SIMPLE/MUTUAL).
    /// Its files are read once per distinct setting.
    pub fn origination(
        &self,
        opts: &weft_identity::OriginationOptions,
    ) -> Result<Arc<rustls::ClientConfig>, weft_identity::IdentityError> {
        if let Some(c) = self
            .originations
            .lock()
            .ok()
            .and_then(|m| m.get(opts).cloned())
        {
            return Ok(c);
        }
        let cfg = weft_identity::origination_client_config(opts)?;
        if let Ok(mut m) = self.originations.lock() {
            m.insert(opts.clone(), cfg.clone());
        }
        Ok(cfg)
    }

    /// A server config requiring a client certificate from `trust_domains` (the mesh trust
    /// domain when empty).
    pub fn server(
        &self,
        min_tls13: bool,
        alpn: &[Vec<u8>],
        trust_domains: &[String],
    ) -> Result<Arc<rustls::ServerConfig>, weft_identity::IdentityError> {
        let domains = if trust_domains.is_empty() {
            vec![self.trust_domain.clone()]
        } else {
            trust_domains.to_vec()
        };
        let key = (min_tls13, alpn.to_vec(), domains.clone());
        if let Some(c) = self.servers.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(c);
        }
        let cfg = weft_identity::server_config(
            self.live.clone(),
            ServerTlsOptions {
                min_version: if min_tls13 {
                    TlsVersion::V1_3
                } else {
                    TlsVersion::V1_2
                },
                alpn: alpn.to_vec(),
                trust_domains: domains,
            },
        )?;
        if let Ok(mut m) = self.servers.lock() {
            m.insert(key, cfg.clone());
        }
        Ok(cfg)
    }
}
