//! The peer-metadata exchange header (`x-envoy-peer-metadata`, base64 of a protobuf Struct)
//! as a peer may send it: decoded or refused, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = std::str::from_utf8(data) {
        let _ = weft_telemetry::peer::decode_peer_header(value);
    }
});
