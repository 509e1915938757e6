//! The per-request security runtime of the HTTP filter chain: what the security filters of one
//! request share ([`FilterCtx`], with its [`SecurityCtx`]) and the RBAC filter
//! (`envoy.filters.http.rbac`, compiled in `snapshot/rbac.rs`): the shadow engine's result goes
//! into the context (where a later ext_authz filter's `filter_enabled_metadata` looks), a LOG
//! engine sets the access-log hint, a denial is Envoy's local reply — 403 `RBAC: access
//! denied`, details `rbac_access_denied_matched_policy[<id>]`, no response flag.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use http::StatusCode;
use http::request::Parts;

use super::Local;
use crate::Proxy;
use crate::authn::SecurityCtx;
use crate::conn::ConnInfo;
use crate::snapshot::Snapshot;
use crate::snapshot::rbac::{Attrs, HttpAttrs, RbacFilter};

/// What the HTTP filters of one request share. Made for every request; it allocates nothing
/// until a security filter records something.
pub(crate) struct FilterCtx<'a> {
    pub proxy: &'a Arc<Proxy>,
    /// The snapshot the request runs under (the ext_authz filter's cluster is looked up here).
    pub snap: &'a Snapshot,
    pub conn: &'a Arc<ConnInfo>,
    /// The request's authority (`:authority`, else `Host`).
    pub authority: &'a str,
    /// `http` or `https` (`:scheme`).
    pub scheme: &'static str,
    /// Filled in filter order: jwt_authn payloads, istio_authn, RBAC shadow results, the
    /// AUDIT verdict.
    pub sec: SecurityCtx,
}

const XFF: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");

/// Envoy's trusted client address with `use_remote_address: false` and no trusted hops (Istio's
/// sidecars): the last `x-forwarded-for` address, else the connection's peer.
pub(crate) fn remote_ip(conn: &ConnInfo, headers: &http::HeaderMap) -> IpAddr {
    headers
        .get_all(&XFF)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|last| last.trim().parse().ok())
        .unwrap_or(conn.remote.ip())
}

impl FilterCtx<'_> {
    /// The request's attributes as RBAC sees them.
    fn attrs<'b>(&'b self, parts: &'b Parts) -> Attrs<'b> {
        Attrs {
            local: self.conn.original_dst,
            peer: self.conn.remote,
            remote_ip: remote_ip(self.conn, &parts.headers),
            principal: self.conn.peer_principal.as_deref(),
            sni: self.conn.sni.as_deref().unwrap_or(""),
            http: Some(HttpAttrs {
                method: parts.method.as_str(),
                authority: self.authority,
                scheme: self.scheme,
                path: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
                headers: &parts.headers,
            }),
            sec: Some(&self.sec),
        }
    }

    /// Runs one RBAC filter on the request.
    pub fn rbac(&mut self, f: &RbacFilter, parts: &Parts) -> Result<(), Local> {
        let outcome = f.check(&self.attrs(parts));
        if let Some(shadow) = outcome.shadow {
            // Envoy's dynamic metadata: a later filter with the same prefix overwrites.
            self.sec.shadow.retain(|s| s.prefix != shadow.prefix);
            self.sec.shadow.push(shadow);
        }
        if let Some(hint) = outcome.log_hint {
            self.sec.access_log_hint = Some(hint);
        }
        match outcome.denied {
            None => Ok(()),
            Some(details) => Err(denied(details)),
        }
    }
}

impl FilterCtx<'_> {
    /// `jwt_authn`: verifies the request's tokens; a failure is answered with 401 (403 for
    /// audiences), the verifier's message and `www-authenticate`.
    pub fn jwt_authn(
        &mut self,
        f: &crate::snapshot::jwt::JwtAuthn,
        parts: &mut Parts,
    ) -> Result<(), Local> {
        super::jwt::authenticate(f, parts, &mut self.sec).map_err(|d| {
            tracing::debug!(target: "jwt", status = %d.jwt_status, "JWT authentication failed");
            Local {
                status: d.status,
                flags: "-",
                headers: d.headers().into_iter().collect(),
                details: Cow::Owned(d.details),
                body: d.body,
                grpc_status: None,
            }
        })
    }
}

/// The local reply of an RBAC denial.
pub(crate) fn denied(details: String) -> Local {
    Local {
        status: StatusCode::FORBIDDEN,
        flags: "-",
        details: Cow::Owned(details),
        body: "RBAC: access denied".into(),
        headers: Vec::new(),
        grpc_status: None,
    }
}
