use super::*;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::KeyPair;
use serde_json::json;

fn shared(name: &str) -> String {
    let path = format!(
        "{}/../../../shared/istio/jwt/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .to_string()
}

fn istio_jwks() -> Jwks {
    Jwks::parse(&shared("jwks.json")).expect("Istio's jwks.json parses")
}

const NOW: u64 = 1_700_000_000;

fn check(token: &str, jwks: &Jwks) -> Result<Jwt, JwtStatus> {
    let jwt = Jwt::parse(token)?;
    verify(&jwt, jwks, &Audiences::default(), NOW, CLOCK_SKEW_SECONDS)?;
    Ok(jwt)
}

/// Signs `header.payload` with `sign` and returns the compact token.
fn token(header: Value, payload: Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let h = base64url(header.to_string().as_bytes());
    let p = base64url(payload.to_string().as_bytes());
    let sig = sign(format!("{h}.{p}").as_bytes());
    format!("{h}.{p}.{}", base64url(&sig))
}

fn hs256(secret: &[u8], header: Value, payload: Value) -> String {
    token(header, payload, |m| {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), m)
            .as_ref()
            .to_vec()
    })
}

fn oct_jwks(secret: &[u8]) -> Jwks {
    Jwks::parse(&json!({"keys": [{"kty": "oct", "k": base64url(secret)}]}).to_string())
        .expect("oct JWKS")
}

#[test]
fn istio_demo_tokens_verify() {
    let jwks = istio_jwks();
    assert_eq!(jwks.keys.len(), 1);
    let demo = check(&shared("demo.jwt"), &jwks).expect("demo.jwt verifies");
    assert_eq!(demo.iss, "testing@secure.istio.io");
    assert_eq!(demo.sub, "testing@secure.istio.io");
    assert_eq!(demo.alg, "RS256");
    assert_eq!(demo.exp, 4_685_989_700);
    assert_eq!(demo.payload.get("foo"), Some(&json!("bar")));
    let groups = check(&shared("groups-scope.jwt"), &jwks).expect("groups-scope.jwt verifies");
    assert_eq!(
        groups.payload.get("groups"),
        Some(&json!(["group1", "group2"]))
    );
    assert!(!groups.payload_b64().contains('='));
}

#[test]
fn a_flipped_signature_byte_fails_verification() {
    let jwks = istio_jwks();
    let demo = shared("demo.jwt");
    let (signed, sig) = demo.rsplit_once('.').expect("three parts");
    let mut raw = unbase64url(sig).expect("signature decodes");
    raw[10] ^= 0x01;
    let tampered = format!("{signed}.{}", base64url(&raw));
    let err = check(&tampered, &jwks).expect_err("tampered");
    assert_eq!(err, JwtStatus::JwtVerificationFail);
    assert_eq!(err.to_string(), "Jwt verification fails");
    assert_eq!(err.details(), "Jwt_verification_fails");
}

#[test]
fn an_unknown_kid_matches_no_key() {
    let secret = b"0123456789abcdef0123456789abcdef";
    let jwks = Jwks::parse(
        &json!({"keys": [{"kty": "oct", "kid": "one", "k": base64url(secret)}]}).to_string(),
    )
    .expect("jwks");
    let t = hs256(
        secret,
        json!({"alg": "HS256", "kid": "two"}),
        json!({"iss": "a"}),
    );
    let err = check(&t, &jwks).expect_err("unknown kid");
    assert_eq!(
        err.to_string(),
        "Jwks doesn't have key to match kid or alg from Jwt"
    );
    // The demo token's kid against Istio's fake JWKS (kid "abc").
    let fake = Jwks::parse(&format!(
        r#"{{"keys":[ {{"e":"AQAB","kid":"abc","kty":"RSA","n":"{}"}}]}}"#,
        base64url(b"Error-IstiodFailedToFetchJwksUri-https://x/jwks.json")
    ))
    .expect("istiod's fake JWKS parses");
    assert_eq!(
        check(&shared("demo.jwt"), &fake).expect_err("fake"),
        JwtStatus::JwksKidAlgMismatch
    );
    // A key whose alg differs is no candidate either.
    let rs = Jwks::parse(
        &json!({"keys": [{"kty": "oct", "alg": "HS384", "k": base64url(secret)}]}).to_string(),
    )
    .expect("jwks");
    let t = hs256(secret, json!({"alg": "HS256"}), json!({}));
    assert_eq!(check(&t, &rs).unwrap_err(), JwtStatus::JwksKidAlgMismatch);
}

#[test]
fn malformed_tokens_get_jwt_verify_lib_statuses() {
    let cases: &[(&str, &str)] = &[
        (
            "invalidToken",
            "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
        ),
        (
            "a.b.c.d",
            "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
        ),
        ("!!.e30.e30", "Jwt header is an invalid Base64url encoded"),
        ("bm90anNvbg.e30.e30", "Jwt header is an invalid JSON"),
        (
            "e30.e30.e30",
            "Jwt header [alg] field is required and must be a string",
        ),
    ];
    for (t, want) in cases {
        assert_eq!(Jwt::parse(t).unwrap_err().to_string(), *want, "{t}");
    }
    let enc = |v: Value| base64url(v.to_string().as_bytes());
    let h = enc(json!({"alg": "none"}));
    assert_eq!(
        Jwt::parse(&format!("{h}.e30.e30")).unwrap_err(),
        JwtStatus::JwtHeaderNotImplementedAlg
    );
    let h = enc(json!({"alg": "RS256", "kid": 3}));
    assert_eq!(
        Jwt::parse(&format!("{h}.e30.e30")).unwrap_err(),
        JwtStatus::JwtHeaderBadKid
    );
    let h = enc(json!({"alg": "RS256"}));
    let payload = |p: Value| Jwt::parse(&format!("{h}.{}.e30", enc(p))).map(|_| ());
    assert_eq!(
        payload(json!({"iss": 1})).unwrap_err().to_string(),
        "Jwt payload [iss] field is not a string"
    );
    assert_eq!(
        payload(json!({"exp": "x"})).unwrap_err().to_string(),
        "Jwt payload [exp] field is not an integer"
    );
    assert_eq!(
        payload(json!({"exp": -1})).unwrap_err(),
        JwtStatus::JwtPayloadParseErrorExpOutOfRange
    );
    assert_eq!(
        payload(json!({"aud": ["a", 1]})).unwrap_err().to_string(),
        "Jwt payload [aud] field is not a string or string list"
    );
    assert_eq!(
        Jwt::parse(&format!("{h}.e30.!!")).unwrap_err(),
        JwtStatus::JwtSignatureParseErrorBadBase64
    );
    assert!(payload(json!({"aud": "a", "nbf": 1.5})).is_ok());
}

#[test]
fn time_window_has_sixty_seconds_of_skew_and_no_exp_is_fine() {
    let secret = b"0123456789abcdef0123456789abcdef";
    let jwks = oct_jwks(secret);
    let at = |claims: Value| {
        let t = hs256(secret, json!({"alg": "HS256"}), claims);
        check(&t, &jwks).map(|_| ())
    };
    assert_eq!(at(json!({})), Ok(()));
    assert_eq!(at(json!({"exp": NOW - 60})), Ok(()));
    let expired = at(json!({"exp": NOW - 61})).unwrap_err();
    assert_eq!(expired.to_string(), "Jwt is expired");
    assert_eq!(at(json!({"nbf": NOW + 60})), Ok(()));
    let early = at(json!({"nbf": NOW + 61})).unwrap_err();
    assert_eq!(early.to_string(), "Jwt not yet valid");
}

#[test]
fn audiences_as_check_audience_cc() {
    let secret = b"0123456789abcdef0123456789abcdef";
    let jwks = oct_jwks(secret);
    let t = hs256(
        secret,
        json!({"alg": "HS256"}),
        json!({"aud": ["https://example.com/", "other"]}),
    );
    let jwt = Jwt::parse(&t).expect("parses");
    let with = |a: &[&str]| verify(&jwt, &jwks, &Audiences::new(a), NOW, 60);
    assert_eq!(with(&[]), Ok(()));
    assert_eq!(with(&["example.com"]), Ok(()));
    assert_eq!(with(&["http://example.com"]), Ok(()));
    assert_eq!(with(&["other/"]), Ok(()));
    let err = with(&["bookinfo"]).unwrap_err();
    assert_eq!(err.to_string(), "Audiences in Jwt are not allowed");
    // A token without aud fails when audiences are configured.
    let t = hs256(secret, json!({"alg": "HS256"}), json!({}));
    let jwt = Jwt::parse(&t).expect("parses");
    assert_eq!(
        verify(&jwt, &jwks, &Audiences::new(&["a"]), NOW, 60).unwrap_err(),
        JwtStatus::JwtAudienceNotAllowed
    );
}

#[test]
fn hs256_hs384_hs512() {
    let secret = b"another secret that is long enough";
    let jwks = oct_jwks(secret);
    for (alg, a) in [
        ("HS256", hmac::HMAC_SHA256),
        ("HS384", hmac::HMAC_SHA384),
        ("HS512", hmac::HMAC_SHA512),
    ] {
        let t = token(json!({"alg": alg}), json!({"iss": "x"}), |m| {
            hmac::sign(&hmac::Key::new(a, secret), m).as_ref().to_vec()
        });
        assert!(check(&t, &jwks).is_ok(), "{alg}");
    }
    let wrong = hs256(b"wrong", json!({"alg": "HS256"}), json!({}));
    assert_eq!(
        check(&wrong, &jwks).unwrap_err(),
        JwtStatus::JwtVerificationFail
    );
}

#[test]
fn es256_es384_es512() {
    let rng = SystemRandom::new();
    for (alg, signing, crv, len) in [
        (
            "ES256",
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            "P-256",
            32,
        ),
        (
            "ES384",
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            "P-384",
            48,
        ),
        (
            "ES512",
            &signature::ECDSA_P521_SHA512_FIXED_SIGNING,
            "P-521",
            66,
        ),
    ] {
        let kp = signature::EcdsaKeyPair::generate(signing).expect("keygen");
        let pubkey = kp.public_key().as_ref();
        let (x, y) = pubkey[1..].split_at(len);
        let jwks = Jwks::parse(
            &json!({"keys": [
                {"kty": "RSA", "n": "bad!", "e": "AQAB"},
                {"kty": "EC", "crv": crv, "alg": alg, "kid": "ec", "x": base64url(x), "y": base64url(y)}
            ]})
            .to_string(),
        )
        .expect("jwks");
        assert_eq!(jwks.keys.len(), 1, "the bad RSA key is skipped");
        let t = token(
            json!({"alg": alg, "kid": "ec"}),
            json!({"iss": "ec"}),
            |m| kp.sign(&rng, m).expect("sign").as_ref().to_vec(),
        );
        assert!(check(&t, &jwks).is_ok(), "{alg}");
        let other = signature::EcdsaKeyPair::generate(signing).expect("keygen");
        let t = token(
            json!({"alg": alg, "kid": "ec"}),
            json!({"iss": "ec"}),
            |m| other.sign(&rng, m).expect("sign").as_ref().to_vec(),
        );
        assert_eq!(
            check(&t, &jwks).unwrap_err(),
            JwtStatus::JwtVerificationFail,
            "{alg}"
        );
    }
}

fn rsa_jwks(kp: &signature::RsaKeyPair, alg: &str) -> Jwks {
    let c = signature::RsaPublicKeyComponents::<Vec<u8>>::from(kp.public_key());
    Jwks::parse(
        &json!({"keys": [{"kty": "RSA", "alg": alg, "n": base64url(&c.n), "e": base64url(&c.e)}]})
            .to_string(),
    )
    .expect("rsa jwks")
}

#[test]
fn ps256_and_rs512_with_generated_keys() {
    let rng = SystemRandom::new();
    let kp = signature::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("keygen");
    for (alg, enc) in [
        ("PS256", &signature::RSA_PSS_SHA256),
        ("PS512", &signature::RSA_PSS_SHA512),
        ("RS512", &signature::RSA_PKCS1_SHA512),
    ] {
        let jwks = rsa_jwks(&kp, alg);
        let t = token(json!({"alg": alg}), json!({"sub": "s"}), |m| {
            let mut sig = vec![0; kp.public_modulus_len()];
            kp.sign(enc, &rng, m, &mut sig).expect("sign");
            sig
        });
        assert!(check(&t, &jwks).is_ok(), "{alg}");
    }
    // An RS256 signature does not verify as PS256 with a key without alg.
    let c = signature::RsaPublicKeyComponents::<Vec<u8>>::from(kp.public_key());
    let jwks = Jwks::parse(
        &json!({"keys": [{"kty": "RSA", "n": base64url(&c.n), "e": base64url(&c.e)}]}).to_string(),
    )
    .expect("jwks");
    let signed_rs = |alg: &str| {
        token(json!({"alg": alg}), json!({}), |m| {
            let mut sig = vec![0; kp.public_modulus_len()];
            kp.sign(&signature::RSA_PKCS1_SHA256, &rng, m, &mut sig)
                .expect("sign");
            sig
        })
    };
    assert!(check(&signed_rs("RS256"), &jwks).is_ok());
    assert_eq!(
        check(&signed_rs("PS256"), &jwks).unwrap_err(),
        JwtStatus::JwtVerificationFail
    );
}

#[test]
fn eddsa_and_its_wrong_length_signature() {
    let kp = signature::Ed25519KeyPair::generate().expect("keygen");
    let jwks = Jwks::parse(
        &json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": base64url(kp.public_key().as_ref())}]})
            .to_string(),
    )
    .expect("jwks");
    let t = token(json!({"alg": "EdDSA"}), json!({"iss": "ed"}), |m| {
        kp.sign(m).as_ref().to_vec()
    });
    assert!(check(&t, &jwks).is_ok());
    let short = token(json!({"alg": "EdDSA"}), json!({"iss": "ed"}), |_| {
        vec![1; 10]
    });
    assert_eq!(
        check(&short, &jwks).unwrap_err().to_string(),
        "Jwt ED25519 signature is wrong length"
    );
}

#[test]
fn jwks_errors() {
    let p = |s: &str| Jwks::parse(s).map(|_| ()).unwrap_err().to_string();
    assert_eq!(p("nope"), "Jwks is an invalid JSON");
    assert_eq!(p("{}"), "Jwks does not have [keys] field");
    assert_eq!(p(r#"{"keys": 1}"#), "[keys] in Jwks is not an array");
    assert_eq!(
        p(r#"{"keys": []}"#),
        "Jwks doesn't have any valid public key"
    );
    assert_eq!(
        p(
            r#"{"keys": [{"kty": "XYZ"}, {"e": "AQAB"}, {"kty": "OKP", "crv": "Ed448", "x": "AA"}]}"#
        ),
        "Jwks doesn't have any valid public key"
    );
    let key = |v: Value| {
        parse_jwk(v.as_object().expect("object"))
            .map(|_| ())
            .unwrap_err()
    };
    assert_eq!(
        key(json!({"kty": "RSA", "alg": "ES256", "n": "AQAB", "e": "AQAB"})),
        JwtStatus::JwksRsaKeyBadAlg
    );
    assert_eq!(
        key(json!({"kty": "EC", "alg": "ES384", "crv": "P-256", "x": "AA", "y": "AA"})),
        JwtStatus::JwksEcKeyAlgNotCompatibleWithCrv
    );
    assert_eq!(
        key(json!({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"})),
        JwtStatus::JwksEcCreateKeyFail
    );
    assert_eq!(
        key(json!({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"})),
        JwtStatus::JwksOkpXWrongLength
    );
    assert_eq!(key(json!({"kty": "oct"})), JwtStatus::JwksHmacKeyMissingK);
}
