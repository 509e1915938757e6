//! JWT verification (`weft_identity::jwt`, what the proxy's jwt_authn runs): any token against
//! Istio's sample JWKS, and any JWKS document (with a token after a NUL byte). Property beyond
//! "no panic": a token verifies against Istio's JWKS only when its signed part (header and
//! payload, as sent) is one of the tokens Istio signed with that key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_identity::jwt::{Audiences, Jwks, Jwt, verify};

const JWKS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/istio/jwt/jwks.json"
));
const SIGNED: [&str; 2] = [
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/istio/jwt/demo.jwt"
    )),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/istio/jwt/groups-scope.jwt"
    )),
];
/// Inside the sample tokens' validity (they expire in 2118).
const NOW: u64 = 1_700_000_000;

/// The signed part of a compact token, as the verifier reads it (empty segments skipped).
fn signed_part(token: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = token.split('.').filter(|p| !p.is_empty()).collect();
    match parts[..] {
        [h, p, _] => Some((h.to_string(), p.to_string())),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if text.starts_with('{') {
        let (jwks, token) = text.split_once('\0').unwrap_or((&text, SIGNED[0].trim()));
        if let Ok(jwks) = Jwks::parse(jwks)
            && let Ok(jwt) = Jwt::parse(token.trim())
        {
            let _ = verify(&jwt, &jwks, &Audiences::new::<&str>(&[]), NOW, 60);
        }
        return;
    }
    let token = text.trim();
    let Ok(jwt) = Jwt::parse(token) else {
        return;
    };
    let jwks = Jwks::parse(JWKS).expect("Istio's sample JWKS parses");
    if verify(&jwt, &jwks, &Audiences::new::<&str>(&[]), NOW, 60).is_ok() {
        let got = signed_part(token);
        assert!(
            SIGNED.iter().any(|s| signed_part(s.trim()) == got),
            "a token Istio did not sign verified against its JWKS: {token}"
        );
    }
});
