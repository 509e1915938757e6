//! The HTTP connection manager's settings: routes, the HTTP filter chain, access logs, path
//! normalization and the `x-forwarded-client-cert` handling.

use std::sync::Arc;

use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;

use super::RouteRef;
use crate::error::ProxyError;
use crate::snapshot::accesslog::AccessLogConfig;
use crate::snapshot::filter::HttpFilter;
use crate::snapshot::route;

/// `path_with_escaped_slashes_action`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EscapedSlashes {
    #[default]
    Keep,
    /// 400 for a path with `%2F`/`%5C`.
    Reject,
    /// `%2F` → `/`, `%5C` → `\` before normalization; the result goes upstream.
    Unescape,
}

/// Envoy's `maybeNormalizePath` settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathNormalization {
    /// `normalize_path`: RFC 3986 dot segments, unreserved escapes decoded, `\` → `/`.
    pub normalize: bool,
    pub merge_slashes: bool,
    pub escaped_slashes: EscapedSlashes,
}

impl PathNormalization {
    pub fn active(&self) -> bool {
        self.normalize || self.merge_slashes || self.escaped_slashes != EscapedSlashes::Keep
    }
}

/// `forward_client_cert_details`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum XfccMode {
    /// Remove the header (Envoy's default).
    #[default]
    Sanitize,
    /// Forward it unchanged on mTLS connections (removed otherwise).
    ForwardOnly,
    /// On mTLS, append this hop's details (removed otherwise).
    AppendForward,
    /// On mTLS, replace it with this hop's details (removed otherwise).
    SanitizeSet,
    /// Forward it unchanged, always.
    AlwaysForwardOnly,
}

/// What the proxy does with `x-forwarded-client-cert`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Xfcc {
    pub mode: XfccMode,
    pub subject: bool,
    pub uri: bool,
    pub dns: bool,
}

impl Xfcc {
    /// Whether the downstream peer's certificate details are needed (hash, subject, SANs).
    pub fn needs_peer_cert(&self) -> bool {
        matches!(self.mode, XfccMode::AppendForward | XfccMode::SanitizeSet)
    }
}

#[derive(Debug)]
pub struct Hcm {
    pub stat_prefix: String,
    pub routes: RouteRef,
    /// The HTTP filter chain, router last.
    pub filters: Vec<HttpFilter>,
    pub access_log: Vec<Arc<AccessLogConfig>>,
    /// The Telemetry metric overrides the metrics of this HCM's requests are recorded under.
    pub stats: Option<Arc<weft_telemetry::overrides::MetricOverrides>>,
    /// Envoy's `tracing`: a span per request when set.
    pub tracing: Option<Arc<crate::snapshot::tracing::Tracing>>,
    pub path: PathNormalization,
    pub xfcc: Xfcc,
    /// Where the HCM sits (listener name, chain index and name): a connection opened under
    /// an older snapshot serves each new request with the HCM now at that place, so policy
    /// and route changes apply to requests on connections that stay open.
    pub origin: (Arc<str>, usize, Arc<str>),
    /// Envoy's limits on the downstream connection this HCM sets, and their counters.
    pub limits: crate::http::HcmLimits,
}

pub(super) fn compile(
    h: hcm::HttpConnectionManager,
    origin: (Arc<str>, usize, Arc<str>),
    what: &str,
) -> Result<Hcm, ProxyError> {
    use hcm::http_connection_manager::{
        ForwardClientCertDetails as F, PathWithEscapedSlashesAction as P,
    };
    let limits = crate::http::HcmLimits::compile(&h, what)?;
    let routes = match h.route_specifier {
        Some(hcm::http_connection_manager::RouteSpecifier::Rds(rds)) => {
            RouteRef::Rds(rds.route_config_name)
        }
        Some(hcm::http_connection_manager::RouteSpecifier::RouteConfig(rc)) => {
            RouteRef::Inline(Arc::new(route::compile(&rc)?))
        }
        _ => {
            return Err(ProxyError::Config(format!(
                "{what}: route_specifier must be rds or route_config"
            )));
        }
    };
    let escaped_slashes = match P::try_from(h.path_with_escaped_slashes_action) {
        Ok(P::ImplementationSpecificDefault | P::KeepUnchanged) => EscapedSlashes::Keep,
        Ok(P::RejectRequest) => EscapedSlashes::Reject,
        Ok(P::UnescapeAndForward) => EscapedSlashes::Unescape,
        Ok(P::UnescapeAndRedirect) | Err(_) => {
            return Err(ProxyError::Config(format!(
                "{what}: path_with_escaped_slashes_action {} is not supported (use KEEP_UNCHANGED, REJECT_REQUEST or UNESCAPE_AND_FORWARD)",
                h.path_with_escaped_slashes_action
            )));
        }
    };
    let path = PathNormalization {
        normalize: h.normalize_path.as_ref().is_some_and(|b| b.value),
        merge_slashes: h.merge_slashes,
        escaped_slashes,
    };
    let mode = match F::try_from(h.forward_client_cert_details) {
        Ok(F::Sanitize) => XfccMode::Sanitize,
        Ok(F::ForwardOnly) => XfccMode::ForwardOnly,
        Ok(F::AppendForward) => XfccMode::AppendForward,
        Ok(F::SanitizeSet) => XfccMode::SanitizeSet,
        Ok(F::AlwaysForwardOnly) => XfccMode::AlwaysForwardOnly,
        Err(_) => {
            return Err(ProxyError::Config(format!(
                "{what}: unknown forward_client_cert_details {}",
                h.forward_client_cert_details
            )));
        }
    };
    let details = h.set_current_client_cert_details.unwrap_or_default();
    if details.cert || details.chain {
        tracing::debug!("{what}: set_current_client_cert_details cert/chain are not sent");
    }
    let xfcc = Xfcc {
        mode,
        subject: details.subject.is_some_and(|b| b.value),
        uri: details.uri,
        dns: details.dns,
    };
    let filters = crate::snapshot::filter::chain(&h.http_filters, &h.stat_prefix, what)?;
    let stats = filters.iter().find_map(|f| match f {
        crate::snapshot::filter::HttpFilter::Stats(s) => Some(s.clone()),
        _ => None,
    });
    let tracing = match &h.tracing {
        Some(t) => Some(Arc::new(crate::snapshot::tracing::compile(t, what)?)),
        None => None,
    };
    Ok(Hcm {
        filters,
        stats,
        tracing,
        access_log: crate::snapshot::accesslog::access_logs(&h.access_log, what)?,
        stat_prefix: h.stat_prefix,
        routes,
        path,
        xfcc,
        origin,
        limits,
    })
}
