//! The inbound protocol detection on a connection's first bytes (TLS ClientHello with SNI and
//! ALPN, HTTP/1.x, HTTP/2 prior knowledge): a verdict or "wait for more", never a panic; and a
//! verdict, once given, does not change when more bytes arrive (the sniffer stops looking).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, head)) = data.split_first() else {
        return;
    };
    let (tls, http) = (flags & 1 != 0, flags & 2 != 0);
    let Some(verdict) = weft_proxy::classify(head, tls, http) else {
        // Only an unfinished ClientHello waits, and only with the TLS inspector on.
        assert!(tls && head.first() == Some(&0x16));
        return;
    };
    if verdict.tls {
        assert!(tls && head.first() == Some(&0x16));
    } else {
        assert!(verdict.sni.is_none());
        // Plaintext detection reads only the first line: more bytes do not change it.
        let mut longer = head.to_vec();
        longer.extend_from_slice(b"\r\nmore");
        if head.windows(2).any(|w| w == b"\r\n") || head.starts_with(b"PRI * HTTP/2.0") {
            assert_eq!(weft_proxy::classify(&longer, tls, http), Some(verdict));
        }
    }
});
