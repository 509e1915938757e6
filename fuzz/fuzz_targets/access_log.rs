//! Envoy's access-log format strings (text and JSON) and CEL filters as a Telemetry resource
//! or MeshConfig may carry them: compiled or refused with a reason, and a compiled one renders
//! or evaluates an entry without a panic.
#![no_main]

use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use weft_telemetry::{AccessLogEntry, CelFilter, CelInput, CompiledFormat, CompiledJsonFormat};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let mut entry = AccessLogEntry::new(SystemTime::UNIX_EPOCH);
    entry.method = Some("GET".into());
    entry.path = Some("/a?b=c".into());
    entry.response_code = 503;
    entry.authority = Some("svc.ns:80".into());
    entry.downstream_remote_address = "10.0.0.1:40000".parse().ok();
    let mut headers = http::HeaderMap::new();
    headers.insert("x-user", http::HeaderValue::from_static("jason"));
    let lookup = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    match kind % 3 {
        0 => {
            if let Ok(f) = CompiledFormat::compile(&text) {
                let mut out = String::new();
                f.render_into(&entry, &lookup, &lookup, &mut out);
            }
        }
        1 => {
            if let Ok(f) = CompiledJsonFormat::parse(&text) {
                let line = f.render(&entry, &lookup, &lookup);
                // What it renders is one line of JSON.
                assert!(
                    serde_json::from_str::<serde_json::Value>(line.trim_end()).is_ok(),
                    "{line}"
                );
            }
        }
        _ => {
            if let Ok(filter) = CelFilter::compile(&text) {
                let input = CelInput {
                    request_headers: Some(&headers),
                    response_headers: None,
                    mtls: true,
                    grpc_status: None,
                };
                let _ = filter.matches(&entry, &input);
            }
        }
    }
});
