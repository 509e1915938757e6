//! Compiler and renderer for Envoy substitution formats (`%OPERATOR%`, `%REQ(X?Y):N%`, ...).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::SocketAddr;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Datelike, Timelike, Utc};

use super::AccessLogEntry;
use crate::error::TelemetryError;

/// A header lookup by lower-case header name (`:authority`, `user-agent`, ...).
pub type HeaderLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

const SUPPORTED: &str = "START_TIME, REQ, RESP, PROTOCOL, RESPONSE_CODE, RESPONSE_FLAGS, \
RESPONSE_CODE_DETAILS, CONNECTION_TERMINATION_DETAILS, UPSTREAM_TRANSPORT_FAILURE_REASON, \
BYTES_RECEIVED, BYTES_SENT, DURATION, UPSTREAM_HOST, UPSTREAM_CLUSTER, UPSTREAM_LOCAL_ADDRESS, \
DOWNSTREAM_LOCAL_ADDRESS, DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT, DOWNSTREAM_REMOTE_ADDRESS, \
DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT, REQUESTED_SERVER_NAME, ROUTE_NAME, \
DOWNSTREAM_PEER_URI_SAN, UPSTREAM_PEER_URI_SAN";

#[derive(Clone, Debug)]
enum Field {
    StartTime(Option<Vec<Item<'static>>>),
    Req(Vec<String>),
    Resp(Vec<String>),
    Protocol,
    ResponseCode,
    ResponseFlags,
    ResponseCodeDetails,
    ConnectionTerminationDetails,
    UpstreamTransportFailureReason,
    BytesReceived,
    BytesSent,
    Duration,
    UpstreamHost,
    UpstreamCluster,
    UpstreamLocalAddress,
    DownstreamLocalAddress,
    DownstreamLocalAddressWithoutPort,
    DownstreamRemoteAddress,
    DownstreamRemoteAddressWithoutPort,
    RequestedServerName,
    RouteName,
    DownstreamPeerUriSan,
    UpstreamPeerUriSan,
}

#[derive(Clone, Debug)]
struct Operator {
    field: Field,
    max_len: Option<usize>,
}

#[derive(Clone, Debug)]
enum Token {
    Literal(String),
    Op(Operator),
}

/// The value of one operator for one entry.
enum Rendered<'a> {
    Str(Cow<'a, str>),
    Num(u64),
    Missing,
}

/// A compiled Envoy text access-log format; compile once, render many times.
#[derive(Clone, Debug)]
pub struct CompiledFormat {
    tokens: Vec<Token>,
}

fn format_error(position: usize, reason: impl Into<String>) -> TelemetryError {
    TelemetryError::AccessLogFormat {
        position,
        reason: reason.into(),
    }
}

/// Translates absl/Envoy time specifiers that chrono spells differently.
fn translate_time_format(format: &str) -> String {
    format
        .replace("%E*S", "%S%.f")
        .replace("%E3S", "%S%.3f")
        .replace("%E6S", "%S%.6f")
        .replace("%E9S", "%S%.9f")
        .replace("%E*z", "%::z")
        .replace("%Ez", "%:z")
        .replace("%E4Y", "%Y")
}

fn header_names(args: &str, position: usize) -> Result<Vec<String>, TelemetryError> {
    let names: Vec<String> = args.split('?').map(str::to_ascii_lowercase).collect();
    if names.len() > 2 {
        return Err(format_error(
            position,
            "more than one alternative header in REQ/RESP (use X?Y)",
        ));
    }
    if names.iter().any(String::is_empty) {
        return Err(format_error(position, "empty header name in REQ/RESP"));
    }
    Ok(names)
}

fn parse_field(name: &str, args: Option<&str>, position: usize) -> Result<Field, TelemetryError> {
    let field = match (name, args) {
        ("START_TIME", None) => Field::StartTime(None),
        ("START_TIME", Some("")) => Field::StartTime(None),
        ("START_TIME", Some(fmt)) => {
            let translated = translate_time_format(fmt);
            let items = StrftimeItems::new(&translated)
                .parse_to_owned()
                .map_err(|e| {
                    format_error(position, format!("invalid START_TIME format {fmt:?}: {e}"))
                })?;
            Field::StartTime(Some(items))
        }
        ("REQ", Some(args)) => Field::Req(header_names(args, position)?),
        ("RESP", Some(args)) => Field::Resp(header_names(args, position)?),
        ("REQ" | "RESP", None) => {
            return Err(format_error(
                position,
                format!("%{name}% needs a header name, e.g. %{name}(X-REQUEST-ID)%"),
            ));
        }
        (_, Some(_)) if SUPPORTED.split(", ").any(|s| s == name) => {
            return Err(format_error(
                position,
                format!("%{name}% does not take arguments"),
            ));
        }
        ("PROTOCOL", None) => Field::Protocol,
        ("RESPONSE_CODE", None) => Field::ResponseCode,
        ("RESPONSE_FLAGS", None) => Field::ResponseFlags,
        ("RESPONSE_CODE_DETAILS", None) => Field::ResponseCodeDetails,
        ("CONNECTION_TERMINATION_DETAILS", None) => Field::ConnectionTerminationDetails,
        ("UPSTREAM_TRANSPORT_FAILURE_REASON", None) => Field::UpstreamTransportFailureReason,
        ("BYTES_RECEIVED", None) => Field::BytesReceived,
        ("BYTES_SENT", None) => Field::BytesSent,
        ("DURATION", None) => Field::Duration,
        ("UPSTREAM_HOST", None) => Field::UpstreamHost,
        ("UPSTREAM_CLUSTER", None) => Field::UpstreamCluster,
        ("UPSTREAM_LOCAL_ADDRESS", None) => Field::UpstreamLocalAddress,
        ("DOWNSTREAM_LOCAL_ADDRESS", None) => Field::DownstreamLocalAddress,
        ("DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", None) => Field::DownstreamLocalAddressWithoutPort,
        ("DOWNSTREAM_REMOTE_ADDRESS", None) => Field::DownstreamRemoteAddress,
        ("DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", None) => {
            Field::DownstreamRemoteAddressWithoutPort
        }
        ("REQUESTED_SERVER_NAME", None) => Field::RequestedServerName,
        ("ROUTE_NAME", None) => Field::RouteName,
        ("DOWNSTREAM_PEER_URI_SAN", None) => Field::DownstreamPeerUriSan,
        ("UPSTREAM_PEER_URI_SAN", None) => Field::UpstreamPeerUriSan,
        _ => {
            return Err(format_error(
                position,
                format!("unsupported operator %{name}%; supported: {SUPPORTED}"),
            ));
        }
    };
    Ok(field)
}

/// Parses one `%...%` command starting at `start` (the opening `%`); returns the operator
/// and the index just past the closing `%`.
fn parse_command(format: &str, start: usize) -> Result<(Operator, usize), TelemetryError> {
    let bytes = format.as_bytes();
    let mut i = start + 1;
    while i < bytes.len()
        && (bytes[i].is_ascii_uppercase() || bytes[i].is_ascii_digit() || bytes[i] == b'_')
    {
        i += 1;
    }
    if i == start + 1 {
        return Err(format_error(
            start,
            "'%' must start an operator like %START_TIME% (write %% for a literal '%')",
        ));
    }
    let name = &format[start + 1..i];
    let mut args = None;
    if bytes.get(i) == Some(&b'(') {
        let close = format[i..]
            .find(')')
            .map(|off| i + off)
            .ok_or_else(|| format_error(i, format!("unterminated '(' after %{name}")))?;
        args = Some(&format[i + 1..close]);
        i = close + 1;
    }
    let mut max_len = None;
    if bytes.get(i) == Some(&b':') {
        let digits_start = i + 1;
        let mut j = digits_start;
        while j < bytes.len() && bytes[j].is_ascii_digit() {
            j += 1;
        }
        let len = format[digits_start..j]
            .parse::<usize>()
            .map_err(|_| format_error(i, format!("expected a length after ':' in %{name}")))?;
        max_len = Some(len);
        i = j;
    }
    if bytes.get(i) != Some(&b'%') {
        return Err(format_error(
            start,
            format!("operator %{name} is not closed with '%'"),
        ));
    }
    let field = parse_field(name, args, start)?;
    Ok((Operator { field, max_len }, i + 1))
}

impl CompiledFormat {
    /// Compiles an Envoy format string exactly as given (no newline is added).
    pub fn compile(format: &str) -> Result<Self, TelemetryError> {
        let mut tokens = Vec::new();
        let mut literal = String::new();
        let mut i = 0;
        let bytes = format.as_bytes();
        while i < bytes.len() {
            let Some(off) = format[i..].find('%') else {
                literal.push_str(&format[i..]);
                break;
            };
            literal.push_str(&format[i..i + off]);
            i += off;
            if bytes.get(i + 1) == Some(&b'%') {
                literal.push('%');
                i += 2;
                continue;
            }
            let (op, next) = parse_command(format, i)?;
            if !literal.is_empty() {
                tokens.push(Token::Literal(std::mem::take(&mut literal)));
            }
            tokens.push(Token::Op(op));
            i = next;
        }
        if !literal.is_empty() {
            tokens.push(Token::Literal(literal));
        }
        Ok(CompiledFormat { tokens })
    }

    /// Compiles `meshConfig.accessLogFormat` the way Istio does: empty means Istio's default
    /// TEXT format, and a trailing newline is added when missing.
    pub fn from_mesh_config(format: &str) -> Result<Self, TelemetryError> {
        if format.is_empty() {
            return Self::compile(super::ENVOY_TEXT_LOG_FORMAT);
        }
        if format.ends_with('\n') {
            Self::compile(format)
        } else {
            Self::compile(&format!("{format}\n"))
        }
    }

    /// True when the format renders nothing.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Appends the rendered line to `out` (reuse `out` across calls to avoid allocation).
    pub fn render_into(
        &self,
        entry: &AccessLogEntry,
        req: HeaderLookup<'_>,
        resp: HeaderLookup<'_>,
        out: &mut String,
    ) {
        for token in &self.tokens {
            match token {
                Token::Literal(s) => out.push_str(s),
                Token::Op(op) => write_text(out, op, entry, req, resp),
            }
        }
    }

    /// The single operator when the format is exactly one operator (typed JSON values).
    fn single_operator(&self) -> Option<&Operator> {
        match self.tokens.as_slice() {
            [Token::Op(op)] => Some(op),
            _ => None,
        }
    }
}

fn truncate(s: Cow<'_, str>, max_len: Option<usize>) -> Cow<'_, str> {
    match max_len {
        Some(max) if s.len() > max => {
            let mut end = max;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            match s {
                Cow::Borrowed(b) => Cow::Borrowed(&b[..end]),
                Cow::Owned(mut o) => {
                    o.truncate(end);
                    Cow::Owned(o)
                }
            }
        }
        _ => s,
    }
}

fn entry_request_header<'a>(entry: &'a AccessLogEntry, name: &str) -> Option<&'a str> {
    match name {
        ":method" => entry.method.as_deref(),
        ":path" => entry.path.as_deref(),
        ":authority" => entry.authority.as_deref(),
        "user-agent" => entry.user_agent.as_deref(),
        "x-forwarded-for" => entry.x_forwarded_for.as_deref(),
        "x-request-id" => entry.request_id.as_deref(),
        _ => None,
    }
}

fn lookup_header<'a>(
    names: &[String],
    lookup: HeaderLookup<'_>,
    from_entry: impl Fn(&str) -> Option<Cow<'a, str>>,
) -> Rendered<'a> {
    for name in names {
        if let Some(v) = lookup(name) {
            return Rendered::Str(Cow::Owned(v));
        }
        if let Some(v) = from_entry(name) {
            return Rendered::Str(v);
        }
    }
    Rendered::Missing
}

fn opt_str(v: Option<&str>) -> Rendered<'_> {
    v.map_or(Rendered::Missing, |s| Rendered::Str(Cow::Borrowed(s)))
}

fn opt_addr(v: Option<SocketAddr>, with_port: bool) -> Rendered<'static> {
    match v {
        Some(addr) if with_port => Rendered::Str(Cow::Owned(addr.to_string())),
        Some(addr) => Rendered::Str(Cow::Owned(addr.ip().to_string())),
        None => Rendered::Missing,
    }
}

/// Envoy's default START_TIME rendering: `2020-11-25T21:26:18.409Z`.
fn write_default_time(out: &mut String, t: &DateTime<Utc>) {
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.timestamp_subsec_millis().min(999)
    );
}

fn evaluate<'a>(
    op: &Operator,
    entry: &'a AccessLogEntry,
    req: HeaderLookup<'_>,
    resp: HeaderLookup<'_>,
) -> Rendered<'a> {
    let value = match &op.field {
        Field::StartTime(items) => {
            let t: DateTime<Utc> = entry.start_time.into();
            let mut s = String::with_capacity(32);
            match items {
                None => write_default_time(&mut s, &t),
                Some(items) => {
                    if write!(s, "{}", t.format_with_items(items.iter())).is_err() {
                        return Rendered::Missing;
                    }
                }
            }
            Rendered::Str(Cow::Owned(s))
        }
        Field::Req(names) => lookup_header(names, req, |n| {
            entry_request_header(entry, n).map(Cow::Borrowed)
        }),
        Field::Resp(names) => lookup_header(names, resp, |n| {
            (n == "x-envoy-upstream-service-time")
                .then_some(entry.upstream_service_time)
                .flatten()
                .map(|v| Cow::Owned(v.to_string()))
        }),
        Field::Protocol => opt_str(entry.protocol.map(|p| p.as_str())),
        Field::ResponseCode => Rendered::Num(u64::from(entry.response_code)),
        Field::ResponseFlags => {
            let flags: &str = &entry.response_flags;
            Rendered::Str(Cow::Borrowed(if flags.is_empty() { "-" } else { flags }))
        }
        Field::ResponseCodeDetails => opt_str(entry.response_code_details.as_deref()),
        Field::ConnectionTerminationDetails => {
            opt_str(entry.connection_termination_details.as_deref())
        }
        Field::UpstreamTransportFailureReason => {
            opt_str(entry.upstream_transport_failure_reason.as_deref())
        }
        Field::BytesReceived => Rendered::Num(entry.bytes_received),
        Field::BytesSent => Rendered::Num(entry.bytes_sent),
        Field::Duration => Rendered::Num(entry.duration_ms),
        Field::UpstreamHost => opt_addr(entry.upstream_host, true),
        Field::UpstreamCluster => opt_str(entry.upstream_cluster.as_deref()),
        Field::UpstreamLocalAddress => opt_addr(entry.upstream_local_address, true),
        Field::DownstreamLocalAddress => opt_addr(entry.downstream_local_address, true),
        Field::DownstreamLocalAddressWithoutPort => opt_addr(entry.downstream_local_address, false),
        Field::DownstreamRemoteAddress => opt_addr(entry.downstream_remote_address, true),
        Field::DownstreamRemoteAddressWithoutPort => {
            opt_addr(entry.downstream_remote_address, false)
        }
        Field::RequestedServerName => opt_str(entry.requested_server_name.as_deref()),
        Field::RouteName => opt_str(entry.route_name.as_deref()),
        Field::DownstreamPeerUriSan => opt_str(entry.downstream_peer_uri_san.as_deref()),
        Field::UpstreamPeerUriSan => opt_str(entry.upstream_peer_uri_san.as_deref()),
    };
    match value {
        Rendered::Str(s) => Rendered::Str(truncate(s, op.max_len)),
        other => other,
    }
}

fn write_text(
    out: &mut String,
    op: &Operator,
    entry: &AccessLogEntry,
    req: HeaderLookup<'_>,
    resp: HeaderLookup<'_>,
) {
    match evaluate(op, entry, req, resp) {
        Rendered::Str(s) => out.push_str(&s),
        Rendered::Num(n) => {
            let _ = write!(out, "{n}");
        }
        Rendered::Missing => out.push('-'),
    }
}

fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[derive(Clone, Debug)]
enum JsonValue {
    Template(CompiledFormat),
    Object(Vec<(String, JsonValue)>),
}

/// A compiled JSON access-log format (`accessLogEncoding: JSON`): an object whose values are
/// format strings or nested objects. A value that is exactly one operator is typed (numbers
/// stay numbers, missing is `null`); other values are strings with `-` for missing parts.
/// Keys are emitted sorted.
#[derive(Clone, Debug)]
pub struct CompiledJsonFormat {
    root: Vec<(String, JsonValue)>,
}

fn compile_object(
    map: &serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<(String, JsonValue)>, TelemetryError> {
    let mut fields = Vec::with_capacity(map.len());
    for (key, value) in map {
        let compiled = match value {
            serde_json::Value::String(s) => JsonValue::Template(CompiledFormat::compile(s)?),
            serde_json::Value::Object(o) => JsonValue::Object(compile_object(o)?),
            other => {
                return Err(TelemetryError::AccessLogJsonFormat(format!(
                    "value of {key:?} is {other}, expected a format string or an object"
                )));
            }
        };
        fields.push((key.clone(), compiled));
    }
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(fields)
}

impl CompiledJsonFormat {
    /// Compiles a JSON object format given as text.
    pub fn parse(json: &str) -> Result<Self, TelemetryError> {
        let value: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| TelemetryError::AccessLogJsonFormat(e.to_string()))?;
        match value {
            serde_json::Value::Object(map) => Ok(CompiledJsonFormat {
                root: compile_object(&map)?,
            }),
            other => Err(TelemetryError::AccessLogJsonFormat(format!(
                "expected a JSON object, got {other}"
            ))),
        }
    }

    /// Compiles a flat key → format-string list.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, TelemetryError> {
        let mut root = pairs
            .into_iter()
            .map(|(k, v)| {
                Ok((
                    k.to_owned(),
                    JsonValue::Template(CompiledFormat::compile(v)?),
                ))
            })
            .collect::<Result<Vec<_>, TelemetryError>>()?;
        root.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(CompiledJsonFormat { root })
    }

    /// Compiles `meshConfig.accessLogFormat` for JSON encoding: empty means Istio's default
    /// JSON format.
    pub fn from_mesh_config(format: &str) -> Result<Self, TelemetryError> {
        if format.trim().is_empty() {
            Self::from_pairs(super::ENVOY_JSON_LOG_FORMAT_ISTIO)
        } else {
            Self::parse(format)
        }
    }

    /// True when the object has no keys.
    pub fn is_empty(&self) -> bool {
        self.root.is_empty()
    }

    /// Appends the rendered JSON line (with trailing `\n`) to `out`.
    pub fn render_into(
        &self,
        entry: &AccessLogEntry,
        req: HeaderLookup<'_>,
        resp: HeaderLookup<'_>,
        out: &mut String,
    ) {
        render_object(&self.root, entry, req, resp, out);
        out.push('\n');
    }

    /// Renders one JSON line (with trailing `\n`).
    pub fn render(
        &self,
        entry: &AccessLogEntry,
        req: HeaderLookup<'_>,
        resp: HeaderLookup<'_>,
    ) -> String {
        let mut out = String::with_capacity(512);
        self.render_into(entry, req, resp, &mut out);
        out
    }
}

fn render_object(
    fields: &[(String, JsonValue)],
    entry: &AccessLogEntry,
    req: HeaderLookup<'_>,
    resp: HeaderLookup<'_>,
    out: &mut String,
) {
    out.push('{');
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_string(out, key);
        out.push(':');
        match value {
            JsonValue::Object(inner) => render_object(inner, entry, req, resp, out),
            JsonValue::Template(format) => match format.single_operator() {
                Some(op) => match evaluate(op, entry, req, resp) {
                    Rendered::Str(s) => write_json_string(out, &s),
                    Rendered::Num(n) => {
                        let _ = write!(out, "{n}");
                    }
                    Rendered::Missing => out.push_str("null"),
                },
                None => {
                    let mut s = String::new();
                    format.render_into(entry, req, resp, &mut s);
                    write_json_string(out, &s);
                }
            },
        }
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn none(_: &str) -> Option<String> {
        None
    }

    fn entry() -> AccessLogEntry {
        AccessLogEntry {
            method: Some("POST".into()),
            response_code: 200,
            duration_ms: 42,
            downstream_remote_address: "[fe80::1]:5555".parse().ok(),
            ..AccessLogEntry::new(UNIX_EPOCH + Duration::from_nanos(1_527_590_590_528_123_456))
        }
    }

    fn render(format: &str) -> String {
        let f = CompiledFormat::compile(format).unwrap();
        let mut out = String::new();
        f.render_into(&entry(), &none, &none, &mut out);
        out
    }

    #[test]
    fn operators_and_literals() {
        assert_eq!(
            render("%REQ(:METHOD)% %RESPONSE_CODE% %DURATION%"),
            "POST 200 42"
        );
        assert_eq!(render("100%% done %PROTOCOL%"), "100% done -");
        assert_eq!(
            render("%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
            "[fe80::1]:5555 fe80::1"
        );
        assert_eq!(render("%REQ(:method):2%"), "PO");
        assert_eq!(render(""), "");
        assert_eq!(render("plain"), "plain");
    }

    #[test]
    fn start_time_formats() {
        assert_eq!(render("%START_TIME%"), "2018-05-29T10:43:10.528Z");
        assert_eq!(render("%START_TIME(%s.%3f)%"), "1527590590.528");
        assert_eq!(
            render("%START_TIME(%Y/%m/%dT%H:%M:%S)%"),
            "2018/05/29T10:43:10"
        );
        assert_eq!(render("%START_TIME(%H:%M:%E3S)%"), "10:43:10.528");
        assert_eq!(render("%START_TIME(%f)%"), "528123456");
    }

    #[test]
    fn compile_errors() {
        for bad in [
            "%UNKNOWN_OP%",
            "%REQ%",
            "%REQ()%",
            "%REQ(A?B?C)%",
            "%DURATION",
            "50% off",
            "%REQ(X",
            "%DURATION(x)%",
            "%REQ(X):abc%",
        ] {
            let err = CompiledFormat::compile(bad).err();
            assert!(
                matches!(err, Some(TelemetryError::AccessLogFormat { .. })),
                "{bad:?} should fail: {err:?}"
            );
        }
        let msg = CompiledFormat::compile("%NOPE%")
            .err()
            .map(|e| e.to_string());
        assert!(msg.is_some_and(|m| m.contains("unsupported operator %NOPE%")));
    }

    #[test]
    fn mesh_config_adds_newline() {
        let f = CompiledFormat::from_mesh_config("%RESPONSE_CODE%").unwrap();
        let mut out = String::new();
        f.render_into(&entry(), &none, &none, &mut out);
        assert_eq!(out, "200\n");
        let default = CompiledFormat::from_mesh_config("").unwrap();
        out.clear();
        default.render_into(&entry(), &none, &none, &mut out);
        assert!(out.starts_with("[2018-05-29T10:43:10.528Z] \"POST - -\" 200 "));
    }

    #[test]
    fn custom_json_format() {
        let f = CompiledJsonFormat::parse(
            r#"{"code":"%RESPONSE_CODE%","who":{"ua":"%REQ(USER-AGENT)%","m":"%REQ(:METHOD)%"},"line":"%REQ(:METHOD)% took %DURATION%ms via %UPSTREAM_HOST%"}"#,
        )
        .unwrap();
        let req = |n: &str| (n == "user-agent").then(|| "curl".to_owned());
        let line = f.render(&entry(), &req, &none);
        assert_eq!(
            line,
            "{\"code\":200,\"line\":\"POST took 42ms via -\",\"who\":{\"m\":\"POST\",\"ua\":\"curl\"}}\n"
        );
        assert!(matches!(
            CompiledJsonFormat::parse(r#"{"a":1}"#),
            Err(TelemetryError::AccessLogJsonFormat(_))
        ));
        assert!(CompiledJsonFormat::parse("[]").is_err());
        assert!(CompiledJsonFormat::parse(r#"{"a":"%BAD%"}"#).is_err());
        assert!(!CompiledJsonFormat::from_mesh_config("").unwrap().is_empty());
    }
}
