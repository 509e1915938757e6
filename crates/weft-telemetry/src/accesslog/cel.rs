//! Envoy's CEL access-log filter (`envoy.access_loggers.extension_filters.cel`, what a Telemetry
//! resource's `accessLogging[].filter.expression` becomes): the expression is compiled once per
//! config with the `cel` crate and evaluated over Envoy's attribute vocabulary — `request.*`,
//! `response.*`, `source.*`, `destination.*`, `connection.*`, `upstream.*` — for the requests
//! and connections of a logger that has one. As in Envoy, an evaluation error or a result that is
//! not `true` means the entry is not logged.

use std::collections::HashMap;
use std::net::SocketAddr;

use cel::{Context, Program, Value};

use super::AccessLogEntry;
use crate::error::TelemetryError;

/// A compiled filter.
pub struct CelFilter {
    expression: String,
    program: Program,
}

impl std::fmt::Debug for CelFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CelFilter").field(&self.expression).finish()
    }
}

/// What a filter may look at besides the access-log entry.
#[derive(Default)]
pub struct CelInput<'a> {
    pub request_headers: Option<&'a http::HeaderMap>,
    pub response_headers: Option<&'a http::HeaderMap>,
    /// The downstream connection is mutual TLS.
    pub mtls: bool,
    /// The gRPC status of the response, when it has one.
    pub grpc_status: Option<u32>,
}

fn string(s: impl Into<String>) -> Value {
    Value::String(std::sync::Arc::new(s.into()))
}

/// Envoy's header map attribute: lower-case names, repeated values joined with `,`.
fn headers(h: Option<&http::HeaderMap>) -> Value {
    let mut out: HashMap<String, Value> = HashMap::new();
    if let Some(h) = h {
        let mut joined: HashMap<&str, String> = HashMap::new();
        for (name, value) in h {
            let v = String::from_utf8_lossy(value.as_bytes());
            joined
                .entry(name.as_str())
                .and_modify(|e| {
                    e.push(',');
                    e.push_str(&v);
                })
                .or_insert_with(|| v.into_owned());
        }
        out.extend(joined.into_iter().map(|(k, v)| (k.to_string(), string(v))));
    }
    out.into()
}

/// `address` (`ip:port`, as Envoy prints an address) and `port` of an endpoint.
fn endpoint(addr: Option<SocketAddr>, extra: Vec<(&'static str, Value)>) -> Value {
    let mut m: HashMap<&str, Value> = HashMap::new();
    if let Some(a) = addr {
        m.insert("address", string(a.to_string()));
        m.insert("port", Value::Int(i64::from(a.port())));
    }
    m.extend(extra);
    m.into()
}

impl CelFilter {
    pub fn compile(expression: &str) -> Result<CelFilter, TelemetryError> {
        let program = Program::compile(expression).map_err(|e| TelemetryError::CelFilter {
            expression: expression.to_string(),
            reason: e
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        })?;
        Ok(CelFilter {
            expression: expression.to_string(),
            program,
        })
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// Whether the entry is logged.
    pub fn matches(&self, e: &AccessLogEntry, input: &CelInput<'_>) -> bool {
        let cx = context(e, input);
        matches!(self.program.execute(&cx), Ok(Value::Bool(true)))
    }
}

/// Envoy's attributes of one request or connection as a CEL context.
pub(crate) fn context(e: &AccessLogEntry, input: &CelInput<'_>) -> Context<'static, 'static> {
    let mut cx = Context::default();
    cx.add_variable_from_value("request", request(e, input));
    cx.add_variable_from_value("response", response(e, input));
    cx.add_variable_from_value("source", endpoint(e.downstream_remote_address, Vec::new()));
    cx.add_variable_from_value(
        "destination",
        endpoint(e.downstream_local_address, Vec::new()),
    );
    let mut conn: HashMap<&str, Value> = HashMap::new();
    conn.insert("mtls", Value::Bool(input.mtls));
    conn.insert(
        "requested_server_name",
        string(e.requested_server_name.clone().unwrap_or_default()),
    );
    if let Some(san) = &e.downstream_peer_uri_san {
        conn.insert("uri_san_peer_certificate", string(san.clone()));
    }
    if let Some(t) = &e.connection_termination_details {
        conn.insert("termination_details", string(t.to_string()));
    }
    cx.add_variable_from_value("connection", conn);
    let mut up = Vec::new();
    if let Some(a) = e.upstream_local_address {
        up.push(("local_address", string(a.to_string())));
    }
    if let Some(r) = &e.upstream_transport_failure_reason {
        up.push(("transport_failure_reason", string(r.to_string())));
    }
    if let Some(san) = &e.upstream_peer_uri_san {
        up.push(("uri_san_peer_certificate", string(san.clone())));
    }
    cx.add_variable_from_value("upstream", endpoint(e.upstream_host, up));
    cx
}

/// `request.*`; on a TCP connection only `size`/`total_size` (bytes received).
fn request(e: &AccessLogEntry, input: &CelInput<'_>) -> Value {
    let mut m: HashMap<&str, Value> = HashMap::new();
    let bytes = i64::try_from(e.bytes_received).unwrap_or(i64::MAX);
    m.insert("size", Value::Int(bytes));
    m.insert("total_size", Value::Int(bytes));
    if let Some(method) = &e.method {
        let path = e.path.clone().unwrap_or_default();
        let url_path = path.split_once('?').map_or(path.as_str(), |(p, _)| p);
        m.insert("url_path", string(url_path));
        m.insert("path", string(path.clone()));
        m.insert("method", string(method.clone()));
        m.insert("host", string(e.authority.clone().unwrap_or_default()));
        m.insert(
            "useragent",
            string(e.user_agent.clone().unwrap_or_default()),
        );
        m.insert("id", string(e.request_id.clone().unwrap_or_default()));
        m.insert(
            "protocol",
            string(e.protocol.map(|p| p.as_str()).unwrap_or_default()),
        );
        let scheme = input
            .request_headers
            .and_then(|h| h.get("x-forwarded-proto"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("http");
        m.insert("scheme", string(scheme));
        if let Some(referer) = input
            .request_headers
            .and_then(|h| h.get(http::header::REFERER))
            .and_then(|v| v.to_str().ok())
        {
            m.insert("referer", string(referer));
        }
        m.insert("headers", headers(input.request_headers));
    }
    m.into()
}

/// `response.*`; on a TCP connection only `size`/`total_size` (bytes sent).
fn response(e: &AccessLogEntry, input: &CelInput<'_>) -> Value {
    let mut m: HashMap<&str, Value> = HashMap::new();
    let bytes = i64::try_from(e.bytes_sent).unwrap_or(i64::MAX);
    m.insert("size", Value::Int(bytes));
    m.insert("total_size", Value::Int(bytes));
    if e.method.is_some() {
        m.insert("code", Value::Int(i64::from(e.response_code)));
        m.insert(
            "code_details",
            string(
                e.response_code_details
                    .as_deref()
                    .unwrap_or_default()
                    .to_string(),
            ),
        );
        if let Some(g) = input.grpc_status {
            m.insert("grpc_status", Value::Int(i64::from(g)));
        }
        m.insert("headers", headers(input.response_headers));
    }
    m.into()
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::accesslog::HttpProtocol;

    fn entry(code: u16, path: &str) -> AccessLogEntry {
        let mut e = AccessLogEntry::new(SystemTime::now());
        e.method = Some("GET".into());
        e.path = Some(path.into());
        e.protocol = Some(HttpProtocol::Http11);
        e.response_code = code;
        e.authority = Some("httpbin:8000".into());
        e.downstream_remote_address = Some("10.0.0.1:40000".parse().unwrap());
        e.downstream_local_address = Some("10.0.0.2:8000".parse().unwrap());
        e.bytes_sent = 135;
        e
    }

    #[test]
    fn istio_examples_filter_as_envoy_does() {
        let f = CelFilter::compile("response.code >= 400").unwrap();
        let none = CelInput::default();
        assert!(f.matches(&entry(418, "/status/418"), &none));
        assert!(!f.matches(&entry(200, "/get"), &none));

        let f =
            CelFilter::compile("connection.mtls && request.url_path.contains('v1beta3')").unwrap();
        let mtls = CelInput {
            mtls: true,
            ..Default::default()
        };
        assert!(f.matches(&entry(200, "/api/v1beta3/x?y=1"), &mtls));
        assert!(!f.matches(&entry(200, "/api/v1beta3/x"), &none));
        assert!(!f.matches(&entry(200, "/api/v1/x"), &mtls));
    }

    #[test]
    fn headers_ports_and_sizes_are_attributes() {
        let mut h = http::HeaderMap::new();
        h.append("x-user", "a".parse().unwrap());
        h.append("x-user", "b".parse().unwrap());
        let input = CelInput {
            request_headers: Some(&h),
            ..Default::default()
        };
        let e = entry(200, "/");
        for (expr, want) in [
            ("request.headers['x-user'] == 'a,b'", true),
            (
                "destination.port == 8000 && source.address == '10.0.0.1:40000'",
                true,
            ),
            (
                "response.size > 100 && request.host == 'httpbin:8000'",
                true,
            ),
            ("request.method == 'POST'", false),
            // An error (a missing key) is not a match.
            ("request.headers['absent'] == 'x'", false),
            // Neither is a result that is not a bool.
            ("response.code", false),
        ] {
            assert_eq!(
                CelFilter::compile(expr).unwrap().matches(&e, &input),
                want,
                "{expr}"
            );
        }
        // TCP entries have sizes and endpoints, no request line.
        let mut tcp = AccessLogEntry::new(SystemTime::now());
        tcp.bytes_received = 10;
        tcp.downstream_local_address = Some("10.0.0.2:9000".parse().unwrap());
        let f = CelFilter::compile("request.size == 10 && destination.port == 9000").unwrap();
        assert!(f.matches(&tcp, &CelInput::default()));
    }

    #[test]
    fn a_bad_expression_is_an_error_naming_it() {
        let e = CelFilter::compile("response.code >= (400")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("response.code >= (400") && e.contains("accessLogging"),
            "{e}"
        );
    }
}
