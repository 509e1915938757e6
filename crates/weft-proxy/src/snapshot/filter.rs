//! The HTTP filters Weft runs, compiled from the HCM's `http_filters` and the routes'
//! `typed_per_filter_config`: fault injection and CORS before the router; and the route-level
//! pieces the router applies (header operations, the retry policy).

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::filters::common::fault::v3 as common_fault;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3 as cors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3 as fault;
use envoy_types::pb::envoy::r#type::v3 as types;
use envoy_types::pb::google::protobuf;
use http::{HeaderName, HeaderValue};
use prost::Message;

use crate::error::ProxyError;

mod telemetry;
pub(crate) use telemetry::{harmless_network, network_stats_overrides, type_name};

pub const FAULT: &str = "envoy.filters.http.fault";
pub const CORS: &str = "envoy.filters.http.cors";
pub const ROUTER: &str = "envoy.filters.http.router";

/// A share of requests, in millionths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fraction(pub u32);

impl Fraction {
    pub const ALL: Fraction = Fraction(1_000_000);

    pub fn from_envoy(p: Option<&types::FractionalPercent>) -> Fraction {
        use types::fractional_percent::DenominatorType as D;
        let Some(p) = p else { return Fraction::ALL };
        let scale = match D::try_from(p.denominator).unwrap_or(D::Hundred) {
            D::Hundred => 10_000,
            D::TenThousand => 100,
            D::Million => 1,
        };
        Fraction(p.numerator.saturating_mul(scale).min(1_000_000))
    }

    /// A random draw: true for this share of calls.
    pub fn hit(self) -> bool {
        self.0 >= 1_000_000 || (self.0 > 0 && rand::random::<u32>() % 1_000_000 < self.0)
    }
}

/// What an abort answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortWith {
    Http(u16),
    Grpc(u32),
}

/// Envoy's fault filter config.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fault {
    pub delay: Option<(Duration, Fraction)>,
    pub abort: Option<(AbortWith, Fraction)>,
}

fn duration(d: &protobuf::Duration) -> Duration {
    Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32)
}

fn fault(any: &protobuf::Any, what: &str) -> Result<Fault, ProxyError> {
    let f = fault::HttpFault::decode(any.value.as_slice())
        .map_err(|e| ProxyError::Config(format!("{what}: fault filter config: {e}")))?;
    let delay = match &f.delay {
        Some(d) => match &d.fault_delay_secifier {
            Some(common_fault::fault_delay::FaultDelaySecifier::FixedDelay(fd)) => {
                Some((duration(fd), Fraction::from_envoy(d.percentage.as_ref())))
            }
            _ => {
                return Err(ProxyError::Config(format!(
                    "{what}: fault delay: only fixed_delay is supported"
                )));
            }
        },
        None => None,
    };
    let abort = match &f.abort {
        Some(a) => {
            use fault::fault_abort::ErrorType as E;
            let with = match a.error_type {
                Some(E::HttpStatus(s)) if (200..600).contains(&s) => AbortWith::Http(s as u16),
                Some(E::GrpcStatus(g)) => AbortWith::Grpc(g),
                _ => {
                    return Err(ProxyError::Config(format!(
                        "{what}: fault abort: needs http_status (200-599) or grpc_status"
                    )));
                }
            };
            Some((with, Fraction::from_envoy(a.percentage.as_ref())))
        }
        None => None,
    };
    Ok(Fault { delay, abort })
}

/// Envoy's CORS policy.
#[derive(Debug, Clone, Default)]
pub struct Cors {
    pub origins: Vec<super::route::StrMatch>,
    pub allow_methods: Option<HeaderValue>,
    pub allow_headers: Option<HeaderValue>,
    pub expose_headers: Option<HeaderValue>,
    pub max_age: Option<HeaderValue>,
    pub allow_credentials: bool,
}

impl Cors {
    pub fn allows(&self, origin: &str) -> bool {
        self.origins.iter().any(|m| m.matches(origin))
    }
}

fn header_value(s: &str, what: &str) -> Result<Option<HeaderValue>, ProxyError> {
    if s.is_empty() {
        return Ok(None);
    }
    HeaderValue::from_str(s)
        .map(Some)
        .map_err(|_| ProxyError::Config(format!("{what}: bad header value {s:?}")))
}

fn cors(any: &protobuf::Any, what: &str) -> Result<Cors, ProxyError> {
    let c = cors::CorsPolicy::decode(any.value.as_slice())
        .map_err(|e| ProxyError::Config(format!("{what}: cors policy: {e}")))?;
    Ok(Cors {
        origins: c
            .allow_origin_string_match
            .iter()
            .map(|m| super::route::StrMatch::compile(m, what))
            .collect::<Result<_, _>>()?,
        allow_methods: header_value(&c.allow_methods, what)?,
        allow_headers: header_value(&c.allow_headers, what)?,
        expose_headers: header_value(&c.expose_headers, what)?,
        max_age: header_value(&c.max_age, what)?,
        allow_credentials: c.allow_credentials.is_some_and(|b| b.value),
    })
}

/// Per-route overrides of the HTTP filters' config.
#[derive(Debug, Clone, Default)]
pub struct PerRoute {
    pub fault: Option<Arc<Fault>>,
    pub cors: Option<Arc<Cors>>,
}

impl PerRoute {
    pub fn compile(
        configs: &std::collections::HashMap<String, protobuf::Any>,
        what: &str,
    ) -> Result<PerRoute, ProxyError> {
        let mut out = PerRoute::default();
        for (name, any) in configs {
            match name.as_str() {
                FAULT => out.fault = Some(Arc::new(fault(any, what)?)),
                CORS => out.cors = Some(Arc::new(cors(any, what)?)),
                // Config for filters Weft does not run (Istio's stats and metadata exchange
                // are built in).
                _ => {}
            }
        }
        Ok(out)
    }
}

/// One HTTP filter of an HCM, in chain order.
#[derive(Debug, Clone)]
pub enum HttpFilter {
    /// Fault injection; the listener-level config (usually empty: routes configure it).
    Fault(Option<Arc<Fault>>),
    Cors,
    /// `envoy.filters.http.rbac`; several may follow each other (AUDIT, DENY, ALLOW, and the
    /// shadow-only trigger of a CUSTOM policy).
    Rbac(Arc<super::rbac::RbacFilter>),
    /// `envoy.filters.http.jwt_authn`: verifies the request's JWTs.
    JwtAuthn(Arc<super::jwt::JwtAuthn>),
    /// Istio's `istio_authn`: `request.auth.*` from the verified JWT payloads.
    IstioAuthn(Arc<super::jwt::IstioAuthn>),
    /// `envoy.filters.http.ext_authz`: asks an external authorizer (CUSTOM policies).
    ExtAuthz(Arc<super::extauthz::ExtAuthz>),
    /// `istio.stats` with Telemetry metric overrides: the HCM records its metrics under them.
    Stats(Arc<weft_telemetry::overrides::MetricOverrides>),
    Router,
}

impl HttpFilter {
    /// The filter's Envoy name (for `/config_dump`).
    pub fn name(&self) -> &'static str {
        match self {
            HttpFilter::Fault(_) => FAULT,
            HttpFilter::Cors => CORS,
            HttpFilter::Rbac(_) => "envoy.filters.http.rbac",
            HttpFilter::JwtAuthn(_) => super::jwt::JWT_AUTHN,
            HttpFilter::IstioAuthn(_) => super::jwt::ISTIO_AUTHN,
            HttpFilter::ExtAuthz(_) => "envoy.filters.http.ext_authz",
            HttpFilter::Stats(_) => "istio.stats",
            HttpFilter::Router => ROUTER,
        }
    }
}

const FAULT_TYPE: &str = "envoy.extensions.filters.http.fault.v3.HTTPFault";
const CORS_TYPE: &str = "envoy.extensions.filters.http.cors.v3.Cors";
const ROUTER_TYPE: &str = "envoy.extensions.filters.http.router.v3.Router";

const JWT_AUTHN_TYPE: &str = "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication";
const ISTIO_AUTHN_TYPE: &str = "istio.envoy.config.filter.http.authn.v2alpha1.FilterConfig";

/// The HCM's filter chain, decoded by config type (names may repeat: Istio names its three
/// RBAC filters alike). Istio's telemetry filters, which Weft implements natively, are
/// skipped; any other filter Weft does not run refuses the listener (fail closed: a security
/// filter silently skipped would let everything through). The router ends the chain.
pub fn chain(
    filters: &[envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter],
    hcm_stat_prefix: &str,
    what: &str,
) -> Result<Vec<HttpFilter>, ProxyError> {
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType;
    let mut out = Vec::new();
    for (i, f) in filters.iter().enumerate() {
        let fwhat = format!("{what}: http_filters[{i}] {}", f.name);
        let any = match &f.config_type {
            Some(ConfigType::TypedConfig(any)) => Some(any),
            Some(ConfigType::ConfigDiscovery(_)) => {
                return Err(ProxyError::Config(format!(
                    "{fwhat}: config_discovery (ECDS) is not supported; refused"
                )));
            }
            None => None,
        };
        if let Some(json) = telemetry::http_stats_overrides(any) {
            let ov = weft_telemetry::overrides::MetricOverrides::from_plugin_json(&json)
                .map_err(|e| ProxyError::Config(format!("{fwhat}: {e}")))?;
            out.push(HttpFilter::Stats(Arc::new(ov)));
            continue;
        }
        if telemetry::harmless_http(&f.name, any) {
            continue;
        }
        if f.disabled {
            return Err(ProxyError::Config(format!(
                "{fwhat}: a filter disabled by default (enabled per route) is not supported; refused"
            )));
        }
        // Without a config, only the filters whose default config is empty.
        let kind = match any {
            Some(any) => telemetry::type_name(&any.type_url),
            None => match f.name.as_str() {
                FAULT => FAULT_TYPE,
                CORS => CORS_TYPE,
                ROUTER => ROUTER_TYPE,
                _ => "",
            },
        };
        match (kind, any) {
            (FAULT_TYPE, any) => {
                let cfg = match any {
                    Some(any) => Some(fault(any, &fwhat)?)
                        .filter(|f| f.delay.is_some() || f.abort.is_some())
                        .map(Arc::new),
                    None => None,
                };
                out.push(HttpFilter::Fault(cfg));
            }
            (CORS_TYPE, _) => out.push(HttpFilter::Cors),
            (super::rbac::HTTP_RBAC_TYPE, Some(any)) => out.push(HttpFilter::Rbac(Arc::new(
                super::rbac::RbacFilter::http(any, hcm_stat_prefix, &fwhat)?,
            ))),
            (JWT_AUTHN_TYPE, Some(any)) => out.push(HttpFilter::JwtAuthn(Arc::new(
                super::jwt::compile_jwt_authn(any, &fwhat)?,
            ))),
            (ISTIO_AUTHN_TYPE, Some(any)) => out.push(HttpFilter::IstioAuthn(Arc::new(
                super::jwt::compile_istio_authn(any, &fwhat)?,
            ))),
            (super::extauthz::HTTP_EXT_AUTHZ_TYPE, Some(any)) => out.push(HttpFilter::ExtAuthz(
                Arc::new(super::extauthz::compile_http(any, hcm_stat_prefix, &fwhat)?),
            )),
            (ROUTER_TYPE, _) => {
                out.push(HttpFilter::Router);
                break;
            }
            (t, _) => {
                return Err(ProxyError::Config(format!(
                    "{fwhat}: unknown HTTP filter type {:?}; refused (fail closed)",
                    if t.is_empty() { "<no config>" } else { t }
                )));
            }
        }
    }
    if !matches!(out.last(), Some(HttpFilter::Router)) {
        out.push(HttpFilter::Router);
    }
    Ok(out)
}

/// Header operations of a route or weighted cluster.
#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    /// (name, value, overwrite): overwrite replaces, else appends.
    pub add: Vec<(HeaderName, HeaderValue, bool)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderOps {
    pub fn compile(
        add: &[core::HeaderValueOption],
        remove: &[String],
        what: &str,
    ) -> Result<HeaderOps, ProxyError> {
        use core::header_value_option::HeaderAppendAction as A;
        let mut out = HeaderOps::default();
        for h in add {
            let Some(hv) = &h.header else { continue };
            let name = HeaderName::from_bytes(hv.key.as_bytes())
                .map_err(|_| ProxyError::Config(format!("{what}: bad header name {:?}", hv.key)))?;
            let value = HeaderValue::from_str(&hv.value).map_err(|_| {
                ProxyError::Config(format!("{what}: bad value for header {}", hv.key))
            })?;
            #[allow(deprecated)]
            let overwrite = match A::try_from(h.append_action).unwrap_or(A::AppendIfExistsOrAdd) {
                A::OverwriteIfExistsOrAdd | A::OverwriteIfExists => true,
                _ => h.append.as_ref().is_some_and(|b| !b.value),
            };
            out.add.push((name, value, overwrite));
        }
        for r in remove {
            out.remove.push(
                HeaderName::from_bytes(r.as_bytes())
                    .map_err(|_| ProxyError::Config(format!("{what}: bad header name {r:?}")))?,
            );
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }

    pub fn apply(&self, h: &mut http::HeaderMap) {
        for name in &self.remove {
            h.remove(name);
        }
        for (name, value, overwrite) in &self.add {
            if *overwrite {
                h.insert(name.clone(), value.clone());
            } else {
                h.append(name.clone(), value.clone());
            }
        }
    }
}

/// What makes a response or failure worth another attempt (Envoy's `retry_on`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn {
    pub five_xx: bool,
    pub gateway_error: bool,
    pub reset: bool,
    pub connect_failure: bool,
    pub refused_stream: bool,
    pub retriable_4xx: bool,
    pub retriable_status_codes: bool,
    pub grpc_cancelled: bool,
    pub grpc_deadline_exceeded: bool,
    pub grpc_internal: bool,
    pub grpc_resource_exhausted: bool,
    pub grpc_unavailable: bool,
}

impl RetryOn {
    /// Envoy's `retry_on` tokens of the conditions set (`connect-failure,refused-stream`).
    pub fn conditions(&self) -> String {
        [
            (self.five_xx, "5xx"),
            (self.gateway_error, "gateway-error"),
            (self.reset, "reset"),
            (self.connect_failure, "connect-failure"),
            (self.refused_stream, "refused-stream"),
            (self.retriable_4xx, "retriable-4xx"),
            (self.retriable_status_codes, "retriable-status-codes"),
            (self.grpc_cancelled, "cancelled"),
            (self.grpc_deadline_exceeded, "deadline-exceeded"),
            (self.grpc_internal, "internal"),
            (self.grpc_resource_exhausted, "resource-exhausted"),
            (self.grpc_unavailable, "unavailable"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, token)| *token)
        .collect::<Vec<_>>()
        .join(",")
    }
}

/// A route's retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub on: RetryOn,
    pub num_retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub status_codes: Vec<u16>,
    /// Prefer endpoints not tried before (`previous_hosts`).
    pub other_hosts: bool,
    pub base_interval: Duration,
    pub max_interval: Duration,
}

impl RetryPolicy {
    pub fn compile(p: &route::RetryPolicy, what: &str) -> Result<RetryPolicy, ProxyError> {
        let mut on = RetryOn::default();
        for token in p
            .retry_on
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            match token {
                "5xx" => on.five_xx = true,
                "gateway-error" => on.gateway_error = true,
                "reset" | "reset-before-request" => on.reset = true,
                "connect-failure" => on.connect_failure = true,
                "refused-stream" => on.refused_stream = true,
                "retriable-4xx" => on.retriable_4xx = true,
                "retriable-status-codes" => on.retriable_status_codes = true,
                "cancelled" => on.grpc_cancelled = true,
                "deadline-exceeded" => on.grpc_deadline_exceeded = true,
                "internal" => on.grpc_internal = true,
                "resource-exhausted" => on.grpc_resource_exhausted = true,
                "unavailable" => on.grpc_unavailable = true,
                // Conditions about headers Weft does not send or track.
                "retriable-headers" | "envoy-ratelimited" | "http3-post-connect-failure" => {}
                other => {
                    return Err(ProxyError::Config(format!(
                        "{what}: retry_on: unknown condition {other:?}"
                    )));
                }
            }
        }
        let backoff = p.retry_back_off.as_ref();
        let base_interval = backoff
            .and_then(|b| b.base_interval.as_ref())
            .map(duration)
            .unwrap_or(Duration::from_millis(25));
        let max_interval = backoff
            .and_then(|b| b.max_interval.as_ref())
            .map(duration)
            .unwrap_or(base_interval * 10);
        Ok(RetryPolicy {
            on,
            num_retries: p.num_retries.as_ref().map(|n| n.value).unwrap_or(1),
            per_try_timeout: p
                .per_try_timeout
                .as_ref()
                .map(duration)
                .filter(|d| !d.is_zero()),
            status_codes: p
                .retriable_status_codes
                .iter()
                .filter_map(|c| u16::try_from(*c).ok())
                .collect(),
            other_hosts: p
                .retry_host_predicate
                .iter()
                .any(|h| h.name == "envoy.retry_host_predicates.previous_hosts"),
            base_interval,
            max_interval,
        })
    }

    /// Whether a response (status, grpc-status) is worth another attempt.
    pub fn retry_response(&self, status: u16, grpc_status: Option<u32>) -> bool {
        let on = &self.on;
        (on.five_xx && status >= 500)
            || (on.gateway_error && matches!(status, 502..=504))
            || (on.retriable_4xx && status == 409)
            || (on.retriable_status_codes && self.status_codes.contains(&status))
            || match grpc_status {
                Some(1) => on.grpc_cancelled,
                Some(4) => on.grpc_deadline_exceeded,
                Some(13) => on.grpc_internal,
                Some(8) => on.grpc_resource_exhausted,
                Some(14) => on.grpc_unavailable,
                _ => false,
            }
    }

    /// Envoy's jittered exponential back-off before retry number `n` (1-based).
    pub fn backoff(&self, n: u32) -> Duration {
        let ceiling = self
            .base_interval
            .saturating_mul(1u32 << n.min(16))
            .min(self.max_interval)
            .max(Duration::from_millis(1));
        let ms = ceiling.as_millis().max(1) as u64;
        Duration::from_millis(rand::random::<u64>() % ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_scale_to_millionths() {
        use types::fractional_percent::DenominatorType as D;
        let f = |n, d: D| {
            Fraction::from_envoy(Some(&types::FractionalPercent {
                numerator: n,
                denominator: d as i32,
            }))
        };
        assert_eq!(f(50, D::Hundred), Fraction(500_000));
        assert_eq!(f(100_000, D::Million), Fraction(100_000));
        assert_eq!(Fraction::from_envoy(None), Fraction::ALL);
        assert!(Fraction::ALL.hit());
        assert!(!Fraction(0).hit());
        let hits = (0..10_000).filter(|_| Fraction(500_000).hit()).count();
        assert!((4_000..6_000).contains(&hits), "{hits}");
    }

    #[test]
    fn retry_policy_follows_envoy_conditions() {
        let p = RetryPolicy::compile(
            &route::RetryPolicy {
                retry_on: "gateway-error,retriable-status-codes,unavailable".into(),
                num_retries: Some(protobuf::UInt32Value { value: 3 }),
                retriable_status_codes: vec![409],
                ..Default::default()
            },
            "r",
        )
        .unwrap();
        assert_eq!(p.num_retries, 3);
        assert!(p.retry_response(503, None));
        assert!(p.retry_response(409, None));
        assert!(!p.retry_response(500, None));
        assert!(p.retry_response(200, Some(14)));
        assert!(!p.retry_response(200, Some(0)));
        let bad = RetryPolicy::compile(
            &route::RetryPolicy {
                retry_on: "5xx,sometimes".into(),
                ..Default::default()
            },
            "route r",
        )
        .unwrap_err()
        .to_string();
        assert!(
            bad.contains("route r") && bad.contains("sometimes"),
            "{bad}"
        );
    }

    #[test]
    fn header_ops_set_add_and_remove() {
        use super::core::header_value_option::HeaderAppendAction as A;
        let opt = |k: &str, v: &str, a: A| super::core::HeaderValueOption {
            header: Some(super::core::HeaderValue {
                key: k.into(),
                value: v.into(),
                ..Default::default()
            }),
            append_action: a as i32,
            ..Default::default()
        };
        let ops = HeaderOps::compile(
            &[
                opt("x-set", "new", A::OverwriteIfExistsOrAdd),
                opt("x-add", "two", A::AppendIfExistsOrAdd),
            ],
            &["x-gone".into()],
            "r",
        )
        .unwrap();
        let mut h = http::HeaderMap::new();
        h.insert("x-set", HeaderValue::from_static("old"));
        h.insert("x-add", HeaderValue::from_static("one"));
        h.insert("x-gone", HeaderValue::from_static("1"));
        ops.apply(&mut h);
        assert_eq!(h["x-set"], "new");
        assert_eq!(h.get_all("x-add").iter().count(), 2);
        assert!(h.get("x-gone").is_none());
    }
}
