//! Envoy/Istio access logs: the entry, Istio's default TEXT and JSON formats, custom
//! `accessLogFormat` strings and a non-blocking file sink.

mod cel;
mod format;
mod sink;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::SystemTime;

pub(crate) use cel::context as cel_context;
pub use cel::{CelFilter, CelInput};
pub use format::{CompiledFormat, CompiledJsonFormat, HeaderLookup};
pub use sink::AccessLogSink;

/// Istio's default TEXT access-log format (`EnvoyTextLogFormat`), exactly.
pub const ENVOY_TEXT_LOG_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";

/// Istio's default JSON access-log format (`EnvoyJSONLogFormatIstio`): key → operator.
pub const ENVOY_JSON_LOG_FORMAT_ISTIO: [(&str, &str); 24] = [
    ("start_time", "%START_TIME%"),
    ("route_name", "%ROUTE_NAME%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
    (
        "connection_termination_details",
        "%CONNECTION_TERMINATION_DETAILS%",
    ),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("duration", "%DURATION%"),
    (
        "upstream_service_time",
        "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    ),
    ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("authority", "%REQ(:AUTHORITY)%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER%"),
    ("upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%"),
    ("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
    (
        "upstream_transport_failure_reason",
        "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    ),
];

/// Access-log logger names Istio gives Envoy's loggers.
pub const HTTP_ACCESS_LOGGER: &str = "http_envoy_accesslog";
/// TCP access-log logger name.
pub const TCP_ACCESS_LOGGER: &str = "tcp_envoy_accesslog";
/// Listener access-log logger name.
pub const LISTENER_ACCESS_LOGGER: &str = "listener_envoy_accesslog";

/// The downstream protocol (`%PROTOCOL%`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HttpProtocol {
    /// `HTTP/1.0`.
    Http10,
    /// `HTTP/1.1`.
    Http11,
    /// `HTTP/2`.
    Http2,
    /// `HTTP/3`.
    Http3,
}

impl HttpProtocol {
    /// Envoy's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpProtocol::Http10 => "HTTP/1.0",
            HttpProtocol::Http11 => "HTTP/1.1",
            HttpProtocol::Http2 => "HTTP/2",
            HttpProtocol::Http3 => "HTTP/3",
        }
    }
}

/// The values of the Envoy operators used by Istio's access-log formats for one request or
/// TCP connection. `None` prints as `-` in text formats and `null` in JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLogEntry {
    /// `%START_TIME%`.
    pub start_time: SystemTime,
    /// `%REQ(:METHOD)%`.
    pub method: Option<String>,
    /// `%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%`: the original path if rewritten, else `:path`.
    pub path: Option<String>,
    /// `%PROTOCOL%` (`None` for TCP).
    pub protocol: Option<HttpProtocol>,
    /// `%RESPONSE_CODE%` (0 for TCP or when no response was sent).
    pub response_code: u16,
    /// `%RESPONSE_FLAGS%` (empty or `-` when none; printed as `-`).
    pub response_flags: Cow<'static, str>,
    /// `%RESPONSE_CODE_DETAILS%`, e.g. `via_upstream`.
    pub response_code_details: Option<Cow<'static, str>>,
    /// `%CONNECTION_TERMINATION_DETAILS%`.
    pub connection_termination_details: Option<Cow<'static, str>>,
    /// `%UPSTREAM_TRANSPORT_FAILURE_REASON%`.
    pub upstream_transport_failure_reason: Option<Cow<'static, str>>,
    /// `%BYTES_RECEIVED%` (body bytes from downstream).
    pub bytes_received: u64,
    /// `%BYTES_SENT%` (body bytes to downstream).
    pub bytes_sent: u64,
    /// `%DURATION%` in milliseconds.
    pub duration_ms: u64,
    /// `%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%` in milliseconds.
    pub upstream_service_time: Option<u64>,
    /// `%REQ(X-FORWARDED-FOR)%`.
    pub x_forwarded_for: Option<String>,
    /// `%REQ(USER-AGENT)%`.
    pub user_agent: Option<String>,
    /// `%REQ(X-REQUEST-ID)%`.
    pub request_id: Option<String>,
    /// `%REQ(:AUTHORITY)%`.
    pub authority: Option<String>,
    /// `%UPSTREAM_HOST%`.
    pub upstream_host: Option<SocketAddr>,
    /// `%UPSTREAM_CLUSTER%`.
    pub upstream_cluster: Option<Arc<str>>,
    /// `%UPSTREAM_LOCAL_ADDRESS%`.
    pub upstream_local_address: Option<SocketAddr>,
    /// `%DOWNSTREAM_LOCAL_ADDRESS%`.
    pub downstream_local_address: Option<SocketAddr>,
    /// `%DOWNSTREAM_REMOTE_ADDRESS%`.
    pub downstream_remote_address: Option<SocketAddr>,
    /// `%REQUESTED_SERVER_NAME%` (SNI).
    pub requested_server_name: Option<String>,
    /// `%ROUTE_NAME%`.
    pub route_name: Option<Arc<str>>,
    /// `%DOWNSTREAM_PEER_URI_SAN%` (custom formats only).
    pub downstream_peer_uri_san: Option<String>,
    /// `%UPSTREAM_PEER_URI_SAN%` (custom formats only).
    pub upstream_peer_uri_san: Option<String>,
}

impl AccessLogEntry {
    /// An entry with the given start time and every other value missing / zero.
    pub fn new(start_time: SystemTime) -> Self {
        AccessLogEntry {
            start_time,
            method: None,
            path: None,
            protocol: None,
            response_code: 0,
            response_flags: Cow::Borrowed("-"),
            response_code_details: None,
            connection_termination_details: None,
            upstream_transport_failure_reason: None,
            bytes_received: 0,
            bytes_sent: 0,
            duration_ms: 0,
            upstream_service_time: None,
            x_forwarded_for: None,
            user_agent: None,
            request_id: None,
            authority: None,
            upstream_host: None,
            upstream_cluster: None,
            upstream_local_address: None,
            downstream_local_address: None,
            downstream_remote_address: None,
            requested_server_name: None,
            route_name: None,
            downstream_peer_uri_san: None,
            upstream_peer_uri_san: None,
        }
    }
}

static DEFAULT_TEXT: LazyLock<CompiledFormat> = LazyLock::new(|| {
    CompiledFormat::compile(ENVOY_TEXT_LOG_FORMAT).expect("Istio's constant text format compiles")
});

static DEFAULT_JSON: LazyLock<CompiledJsonFormat> = LazyLock::new(|| {
    CompiledJsonFormat::from_pairs(ENVOY_JSON_LOG_FORMAT_ISTIO)
        .expect("Istio's constant JSON format compiles")
});

fn no_headers(_: &str) -> Option<String> {
    None
}

/// Renders `entry` with Istio's default TEXT format (line ends with `\n`).
pub fn format_text(entry: &AccessLogEntry) -> String {
    let mut out = String::with_capacity(384);
    DEFAULT_TEXT.render_into(entry, &no_headers, &no_headers, &mut out);
    out
}

/// Renders `entry` with Istio's default JSON format (`EnvoyJSONLogFormatIstio`; keys sorted,
/// numbers as numbers, missing values `null`; line ends with `\n`).
pub fn format_json(entry: &AccessLogEntry) -> String {
    let mut out = String::with_capacity(768);
    DEFAULT_JSON.render_into(entry, &no_headers, &no_headers, &mut out);
    out
}

/// Renders `entry` with a compiled custom format. `req` / `resp` look up request / response
/// headers by lower-case name (pseudo-headers like `:path` included); when they return `None`
/// the values recorded in the entry are used for the headers it holds.
pub fn format_custom(
    format: &CompiledFormat,
    entry: &AccessLogEntry,
    req: HeaderLookup<'_>,
    resp: HeaderLookup<'_>,
) -> String {
    let mut out = String::with_capacity(256);
    format.render_into(entry, req, resp, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// Digest sample line (otel task), reconstructed.
    fn sample_entry() -> AccessLogEntry {
        // 2020-11-25T21:26:18.409Z
        let start = UNIX_EPOCH + Duration::from_millis(1_606_339_578_409);
        AccessLogEntry {
            method: Some("GET".into()),
            path: Some("/status/418".into()),
            protocol: Some(HttpProtocol::Http11),
            response_code: 418,
            response_flags: "-".into(),
            response_code_details: Some("via_upstream".into()),
            bytes_received: 0,
            bytes_sent: 135,
            duration_ms: 3,
            upstream_service_time: Some(1),
            user_agent: Some("curl/7.73.0-DEV".into()),
            request_id: Some("84961386-…".into()),
            authority: Some("httpbin:8000".into()),
            upstream_host: "127.0.0.1:80".parse().ok(),
            upstream_cluster: Some(Arc::from("inbound|8000||")),
            upstream_local_address: "127.0.0.1:41854".parse().ok(),
            downstream_local_address: "10.44.1.27:80".parse().ok(),
            downstream_remote_address: "10.44.1.23:37652".parse().ok(),
            requested_server_name: Some("outbound_.8000_._.httpbin.foo.svc.cluster.local".into()),
            route_name: Some(Arc::from("default")),
            ..AccessLogEntry::new(start)
        }
    }

    #[test]
    fn text_format_matches_istio_sample_byte_for_byte() {
        let expected = "[2020-11-25T21:26:18.409Z] \"GET /status/418 HTTP/1.1\" 418 - via_upstream - \"-\" 0 135 3 1 \"-\" \"curl/7.73.0-DEV\" \"84961386-…\" \"httpbin:8000\" \"127.0.0.1:80\" inbound|8000|| 127.0.0.1:41854 10.44.1.27:80 10.44.1.23:37652 outbound_.8000_._.httpbin.foo.svc.cluster.local default\n";
        assert_eq!(format_text(&sample_entry()), expected);
    }

    #[test]
    fn text_format_for_tcp_entry() {
        let start = UNIX_EPOCH + Duration::from_millis(1_606_339_578_009);
        let entry = AccessLogEntry {
            response_flags: "UF".into(),
            bytes_sent: 10,
            duration_ms: 12,
            upstream_cluster: Some(Arc::from(
                "outbound|9000||tcp-echo.default.svc.cluster.local",
            )),
            upstream_transport_failure_reason: Some("delayed connect error: 111".into()),
            ..AccessLogEntry::new(start)
        };
        assert_eq!(
            format_text(&entry),
            "[2020-11-25T21:26:18.009Z] \"- - -\" 0 UF - - \"delayed connect error: 111\" 0 10 12 - \"-\" \"-\" \"-\" \"-\" \"-\" outbound|9000||tcp-echo.default.svc.cluster.local - - - - -\n"
        );
    }

    #[test]
    fn json_format_has_istio_keys_and_types() {
        let line = format_json(&sample_entry());
        assert!(line.ends_with("}\n"));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let obj = v.as_object().unwrap();
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut expected: Vec<&str> = ENVOY_JSON_LOG_FORMAT_ISTIO
            .iter()
            .map(|(k, _)| *k)
            .collect();
        expected.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(obj["start_time"], "2020-11-25T21:26:18.409Z");
        assert_eq!(obj["response_code"], 418);
        assert_eq!(obj["bytes_received"], 0);
        assert_eq!(obj["bytes_sent"], 135);
        assert_eq!(obj["duration"], 3);
        assert_eq!(obj["upstream_service_time"], "1");
        assert_eq!(obj["response_flags"], "-");
        assert_eq!(obj["x_forwarded_for"], serde_json::Value::Null);
        assert_eq!(
            obj["connection_termination_details"],
            serde_json::Value::Null
        );
        assert_eq!(
            obj["upstream_transport_failure_reason"],
            serde_json::Value::Null
        );
        assert_eq!(obj["upstream_cluster"], "inbound|8000||");
        assert_eq!(obj["protocol"], "HTTP/1.1");
        assert_eq!(obj["path"], "/status/418");
        assert_eq!(obj["request_id"], "84961386-…");
        // Keys are emitted in sorted order, deterministically.
        assert!(line.starts_with("{\"authority\":\"httpbin:8000\",\"bytes_received\":0,"));
    }

    #[test]
    fn json_escapes_strings() {
        let entry = AccessLogEntry {
            user_agent: Some("a\"b\\c\n\u{1}".into()),
            ..sample_entry()
        };
        let line = format_json(&entry);
        assert!(line.contains(r#""user_agent":"a\"b\\c\n\u0001""#), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["user_agent"], "a\"b\\c\n\u{1}");
    }

    #[test]
    fn custom_format_uses_header_lookups() {
        let format = CompiledFormat::compile(
            "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %REQ(X-B3-TRACEID)% %RESP(SERVER):3% %DURATION%ms",
        )
        .unwrap();
        let req = |name: &str| match name {
            "x-envoy-original-path" => Some("/original".to_owned()),
            "x-b3-traceid" => Some("abc123".to_owned()),
            _ => None,
        };
        let resp = |name: &str| (name == "server").then(|| "envoy".to_owned());
        let line = format_custom(&format, &sample_entry(), &req, &resp);
        assert_eq!(line, "GET /original abc123 env 3ms");
        let none = |_: &str| None;
        let line = format_custom(&format, &sample_entry(), &none, &none);
        assert_eq!(line, "GET /status/418 - - 3ms");
    }

    #[test]
    fn default_formats_compile() {
        assert!(!DEFAULT_TEXT.is_empty());
        assert!(!DEFAULT_JSON.is_empty());
    }
}
