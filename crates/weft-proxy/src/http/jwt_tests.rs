use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3 as xjwt;
use envoy_types::pb::google::protobuf;
use serde_json::json;
use weft_identity::jwt::{base64url, hs256_token};
use xjwt::jwt_requirement::RequiresType as R;

use super::*;

const ISTIO: &str = "testing@secure.istio.io";
const OTHER: &str = "other@example.com";
const SECRET: &[u8] = b"a shared secret for the tests....";
const NOW: u64 = 1_700_000_000;

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

fn oct_jwks() -> String {
    json!({"keys": [{"kty": "oct", "k": base64url(SECRET)}]}).to_string()
}

fn other_token(claims: serde_json::Value) -> String {
    hs256_token(SECRET, &json!({"alg": "HS256"}), &claims)
}

/// A token whose checks before the signature are what a test wants (the signature is junk).
fn unsigned(claims: serde_json::Value) -> String {
    let h = base64url(json!({"alg": "RS256", "kid": "x"}).to_string().as_bytes());
    let p = base64url(claims.to_string().as_bytes());
    format!("{h}.{p}.c2ln")
}

#[derive(Default, Clone)]
struct Rule {
    issuer: &'static str,
    jwks: String,
    audiences: Vec<&'static str>,
    headers: Vec<(&'static str, &'static str)>,
    params: Vec<&'static str>,
    forward: bool,
    payload_header: &'static str,
}

fn istio_rule() -> Rule {
    Rule {
        issuer: ISTIO,
        jwks: shared("jwks.json"),
        ..Default::default()
    }
}

fn other_rule() -> Rule {
    Rule {
        issuer: OTHER,
        jwks: oct_jwks(),
        ..Default::default()
    }
}

fn req(t: R) -> xjwt::JwtRequirement {
    xjwt::JwtRequirement {
        requires_type: Some(t),
    }
}

/// The JwtAuthentication istiod builds for `rules` (issuer-sorted by the caller).
fn istio_filter(rules: &[Rule]) -> JwtAuthn {
    let mut providers = std::collections::HashMap::new();
    let mut inner = Vec::new();
    let mut outer = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let name = format!("origins-{i}");
        providers.insert(
            name.clone(),
            xjwt::JwtProvider {
                issuer: r.issuer.into(),
                audiences: r.audiences.iter().map(|a| a.to_string()).collect(),
                forward: r.forward,
                forward_payload_header: r.payload_header.into(),
                payload_in_metadata: r.issuer.into(),
                from_headers: r
                    .headers
                    .iter()
                    .map(|(n, p)| xjwt::JwtHeader {
                        name: n.to_string(),
                        value_prefix: p.to_string(),
                    })
                    .collect(),
                from_params: r.params.iter().map(|p| p.to_string()).collect(),
                jwks_source_specifier: Some(xjwt::jwt_provider::JwksSourceSpecifier::LocalJwks(
                    core::DataSource {
                        specifier: Some(core::data_source::Specifier::InlineString(r.jwks.clone())),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            },
        );
        inner.push(req(R::RequiresAny(xjwt::JwtRequirementOrList {
            requirements: vec![
                req(R::ProviderName(name.clone())),
                req(R::AllowMissing(protobuf::Empty {})),
            ],
        })));
        outer.push(req(R::ProviderName(name)));
    }
    let requires = if inner.len() == 1 {
        inner.remove(0)
    } else {
        outer.push(req(R::RequiresAll(xjwt::JwtRequirementAndList {
            requirements: inner,
        })));
        req(R::RequiresAny(xjwt::JwtRequirementOrList {
            requirements: outer,
        }))
    };
    let cfg = xjwt::JwtAuthentication {
        providers,
        rules: vec![xjwt::RequirementRule {
            r#match: Some(route::RouteMatch {
                path_specifier: Some(route::route_match::PathSpecifier::Prefix("/".into())),
                ..Default::default()
            }),
            requirement_type: Some(xjwt::requirement_rule::RequirementType::Requires(requires)),
        }],
        bypass_cors_preflight: true,
        ..Default::default()
    };
    crate::snapshot::jwt::compile(&cfg, "test").expect("compiles")
}

fn request(uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut b = http::Request::builder()
        .uri(uri)
        .header("host", "httpbin.foo:8000")
        .header("x-forwarded-proto", "http");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).expect("request").into_parts().0
}

fn run(f: &JwtAuthn, parts: &mut Parts) -> (Result<(), JwtDenied>, SecurityCtx) {
    let mut ctx = SecurityCtx::default();
    let r = authenticate_at(f, parts, &mut ctx, NOW);
    (r, ctx)
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

/// The status of a denied request (panics when allowed).
fn status_of(f: &JwtAuthn, headers: &[(&str, &str)]) -> (u16, String) {
    let mut parts = request("/headers", headers);
    let d = run(f, &mut parts).0.expect_err("denied");
    (d.status.as_u16(), d.body)
}

#[test]
fn one_provider_as_the_istio_jwt_task() {
    let f = istio_filter(&[istio_rule()]);
    // No token: passes, no metadata.
    let mut parts = request("/headers", &[]);
    let (r, ctx) = run(&f, &mut parts);
    assert!(r.is_ok());
    assert!(ctx.jwt_payloads.is_empty());

    // Istio's demo token: passes; the Authorization header is not forwarded.
    let demo = bearer(&shared("demo.jwt"));
    let mut parts = request("/headers", &[("authorization", &demo)]);
    let (r, ctx) = run(&f, &mut parts);
    assert!(r.is_ok(), "{r:?}");
    assert!(parts.headers.get("authorization").is_none());
    assert_eq!(ctx.jwt_payloads.len(), 1);
    assert_eq!(&*ctx.jwt_payloads[0].0, ISTIO);
    assert_eq!(ctx.jwt_payloads[0].1["foo"], "bar");

    // `Bearer invalidToken`: 401 with Envoy's body, header and details.
    let mut parts = request("/headers?x=1", &[("authorization", "Bearer invalidToken")]);
    let d = run(&f, &mut parts).0.expect_err("denied");
    assert_eq!(d.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        d.body,
        "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
    );
    assert_eq!(
        d.www_authenticate,
        r#"Bearer realm="http://httpbin.foo:8000/headers?x=1", error="invalid_token""#
    );
    assert_eq!(
        d.details,
        "jwt_authn_access_denied{Jwt_is_not_in_the_form_of_Header.Payload.Signature_with_two_dots_and_3_sections}"
    );
    assert_eq!(d.headers()[0].0, WWW_AUTHENTICATE);

    // A flipped signature byte.
    let demo_raw = shared("demo.jwt");
    let (signed, sig) = demo_raw.rsplit_once('.').expect("3 parts");
    let mut bytes = sig.as_bytes().to_vec();
    bytes[5] = if bytes[5] == b'A' { b'B' } else { b'A' };
    let tampered = bearer(&format!("{signed}.{}", String::from_utf8_lossy(&bytes)));
    assert_eq!(
        status_of(&f, &[("authorization", &tampered)]),
        (401, "Jwt verification fails".into())
    );
    // Another issuer's token.
    let other = bearer(&other_token(json!({"iss": OTHER, "sub": "x"})));
    assert_eq!(
        status_of(&f, &[("authorization", &other)]),
        (401, "Jwt issuer is not configured".into())
    );
    // Expired and not yet valid (checked before the signature).
    let expired = bearer(&unsigned(json!({"iss": ISTIO, "exp": NOW - 61})));
    assert_eq!(
        status_of(&f, &[("authorization", &expired)]),
        (401, "Jwt is expired".into())
    );
    let early = bearer(&unsigned(json!({"iss": ISTIO, "nbf": NOW + 61})));
    assert_eq!(
        status_of(&f, &[("authorization", &early)]),
        (401, "Jwt not yet valid".into())
    );
    // The token in `?access_token=` is verified too; the query is left alone.
    let mut parts = request(&format!("/headers?access_token={demo_raw}"), &[]);
    assert!(run(&f, &mut parts).0.is_ok());
    let bad = format!("/headers?access_token={}", unsigned(json!({"iss": ISTIO})));
    let mut parts = request(&bad, &[]);
    assert_eq!(
        run(&f, &mut parts).0.expect_err("denied").body,
        "Jwks doesn't have key to match kid or alg from Jwt"
    );
}

#[test]
fn audience_mismatch_is_403() {
    let f = istio_filter(&[Rule {
        audiences: vec!["bookinfo.com"],
        ..other_rule()
    }]);
    let t = bearer(&other_token(
        json!({"iss": OTHER, "aud": "https://bookinfo.com/"}),
    ));
    let mut parts = request("/", &[("authorization", &t)]);
    assert!(run(&f, &mut parts).0.is_ok());
    let t = bearer(&other_token(json!({"iss": OTHER, "aud": ["x", "y"]})));
    let mut parts = request("/", &[("authorization", &t)]);
    let d = run(&f, &mut parts).0.expect_err("denied");
    assert_eq!(d.status, StatusCode::FORBIDDEN);
    assert_eq!(d.body, "Audiences in Jwt are not allowed");
    assert_eq!(
        d.details,
        "jwt_authn_access_denied{Audiences_in_Jwt_are_not_allowed}"
    );
}

#[test]
fn two_providers_on_their_own_headers() {
    let f = istio_filter(&[
        Rule {
            headers: vec![("x-jwt-b", "")],
            ..other_rule()
        },
        istio_rule(),
    ]);
    let demo = bearer(&shared("demo.jwt"));
    let other = other_token(json!({"iss": OTHER, "sub": "b"}));
    // Either token alone passes, both pass (both payloads recorded).
    for headers in [
        vec![("authorization", demo.as_str())],
        vec![("x-jwt-b", other.as_str())],
    ] {
        let mut parts = request("/", &headers);
        assert!(run(&f, &mut parts).0.is_ok(), "{headers:?}");
    }
    let mut parts = request("/", &[("authorization", &demo), ("x-jwt-b", &other)]);
    let (r, ctx) = run(&f, &mut parts);
    assert!(r.is_ok());
    // requires_any stops at the first provider that passes (origins-0, the other issuer).
    assert_eq!(ctx.jwt_payloads.len(), 1);
    assert_eq!(&*ctx.jwt_payloads[0].0, OTHER);
    assert!(parts.headers.get("x-jwt-b").is_none());

    // A bad token alone fails with its own status (the oct key has no kid: a candidate).
    let bad = unsigned(json!({"iss": OTHER}));
    assert_eq!(
        status_of(&f, &[("x-jwt-b", &bad)]),
        (401, "Jwt verification fails".into())
    );
    assert_eq!(
        status_of(&f, &[("authorization", "Bearer a.b")]),
        (
            401,
            "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
                .into()
        )
    );
    // Envoy's outer OR: a good token for one provider passes even with a bad one at the
    // other provider's location (the bad header stays, unverified).
    let mut parts = request("/", &[("authorization", &demo), ("x-jwt-b", &bad)]);
    assert!(run(&f, &mut parts).0.is_ok());
    assert!(parts.headers.get("x-jwt-b").is_some());
    // A token of a third issuer at a known location.
    let third = bearer(&other_token(json!({"iss": "third"})));
    assert_eq!(
        status_of(&f, &[("authorization", &third)]),
        (401, "Jwt issuer is not configured".into())
    );
}

#[test]
fn two_providers_sharing_the_default_location() {
    let f = istio_filter(&[other_rule(), istio_rule()]);
    let other = bearer(&other_token(json!({"iss": OTHER})));
    let mut parts = request("/", &[("authorization", &other)]);
    let (r, ctx) = run(&f, &mut parts);
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(&*ctx.jwt_payloads[0].0, OTHER);
    let demo = bearer(&shared("demo.jwt"));
    let mut parts = request("/", &[("authorization", &demo)]);
    let (r, ctx) = run(&f, &mut parts);
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(&*ctx.jwt_payloads[0].0, ISTIO);
    let third = bearer(&other_token(json!({"iss": "third"})));
    assert_eq!(
        status_of(&f, &[("authorization", &third)]),
        (401, "Jwt issuer is not configured".into())
    );
    let expired = bearer(&unsigned(json!({"iss": ISTIO, "exp": 1})));
    assert_eq!(
        status_of(&f, &[("authorization", &expired)]),
        (401, "Jwt is expired".into())
    );
}

#[test]
fn headers_forward_payload_and_prefixes() {
    let f = istio_filter(&[Rule {
        headers: vec![("x-token", "Token ")],
        forward: true,
        payload_header: "x-jwt-payload",
        ..istio_rule()
    }]);
    let demo = shared("demo.jwt");
    let payload_b64 = demo.split('.').nth(1).expect("payload").to_string();
    // A client-sent payload header never reaches the app, token or not.
    let mut parts = request("/", &[("x-jwt-payload", "forged")]);
    assert!(run(&f, &mut parts).0.is_ok());
    assert!(parts.headers.get("x-jwt-payload").is_none());
    // The prefix is found anywhere in the value; the token ends at the first non-JWT char.
    let value = format!("scheme=x; Token   {demo}, other");
    let mut parts = request("/", &[("x-token", &value), ("x-jwt-payload", "forged")]);
    assert!(run(&f, &mut parts).0.is_ok());
    assert_eq!(parts.headers["x-token"], value.as_str(), "forwarded");
    assert_eq!(parts.headers["x-jwt-payload"], payload_b64.as_str());
    // Without the prefix the header is not a location; Authorization is not one either.
    let mut parts = request(
        "/",
        &[("x-token", "junk"), ("authorization", "Bearer junk")],
    );
    assert!(run(&f, &mut parts).0.is_ok());
    // A CORS preflight bypasses verification.
    let mut parts = request("/", &[("x-token", "Token junk")]);
    parts.method = Method::OPTIONS;
    parts
        .headers
        .insert("origin", HeaderValue::from_static("http://a"));
    parts.headers.insert(
        "access-control-request-method",
        HeaderValue::from_static("GET"),
    );
    assert!(run(&f, &mut parts).0.is_ok());
    parts.headers.remove("origin");
    assert!(
        run(&f, &mut parts).0.is_err(),
        "not a preflight without origin"
    );
}

#[test]
fn extraction_details() {
    assert_eq!(extract_jwt("Bearer   a.b-c_d.e, x", 7), "a.b-c_d.e");
    assert_eq!(extract_jwt("Bearer ", 7), "Bearer ");
    assert_eq!(percent_decode("a%2Eb%zz%4"), "a.b%zz%4");
    let f = istio_filter(&[istio_rule()]);
    // Two Authorization values are read joined with ",": the first token wins.
    let mut parts = request("/", &[]);
    let demo = bearer(&shared("demo.jwt"));
    parts.headers.append(
        "authorization",
        HeaderValue::from_str(&demo).expect("value"),
    );
    parts
        .headers
        .append("authorization", HeaderValue::from_static("Bearer junk"));
    assert!(run(&f, &mut parts).0.is_ok());
}

#[test]
fn istio_authn_processes_claims() {
    let f = istio_filter(&[istio_rule()]);
    let groups = bearer(&shared("groups-scope.jwt"));
    let mut parts = request("/", &[("authorization", &groups)]);
    let (r, mut ctx) = run(&f, &mut parts);
    assert!(r.is_ok());
    istio_authn(
        &IstioAuthn {
            issuers: vec!["nobody".into(), ISTIO.into()],
        },
        &mut ctx,
    );
    let auth = ctx.auth.clone().expect("request auth");
    assert_eq!(
        auth.principal.as_deref(),
        Some("testing@secure.istio.io/testing@secure.istio.io")
    );
    assert_eq!(
        auth.claim(&["groups".into()]),
        Some(vec!["group1", "group2"])
    );
    assert_eq!(
        auth.claim(&["scope".into()]),
        Some(vec!["scope1", "scope2"])
    );
    assert!(!auth.claims.contains_key("exp"), "numbers are dropped");
    let raw: serde_json::Value = serde_json::from_str(&auth.raw_claims).expect("json");
    assert_eq!(raw["exp"], 3_537_391_104u64);

    let payload = json!({
        "iss": "i", "sub": "s", "aud": ["a1", "a2"], "azp": "p",
        "scope": "read  write", "n": 1, "b": true, "mixed": ["x", 1], "none": null,
        "nested": {"key": "v w", "deep": {"l": ["x"]}, "num": 2},
    });
    let auth = request_auth(&payload).expect("object");
    assert_eq!(auth.principal.as_deref(), Some("i/s"));
    assert_eq!(auth.audiences.as_deref(), Some("a1"));
    assert_eq!(auth.presenter.as_deref(), Some("p"));
    assert_eq!(
        serde_json::Value::Object(auth.claims.clone()),
        json!({
            "iss": ["i"], "sub": ["s"], "aud": ["a1", "a2"], "azp": ["p"],
            "scope": ["read", "write"],
            "nested": {"key": ["v", "w"], "deep": {"l": ["x"]}},
        })
    );
    assert_eq!(
        auth.claim(&["nested".into(), "deep".into(), "l".into()]),
        Some(vec!["x"])
    );
    // Without sub there is no principal.
    assert_eq!(
        request_auth(&json!({"iss": "i"})).and_then(|a| a.principal),
        None
    );

    // No verified payload: nothing set.
    let mut ctx = SecurityCtx::default();
    istio_authn(
        &IstioAuthn {
            issuers: vec![ISTIO.into()],
        },
        &mut ctx,
    );
    assert!(ctx.auth.is_none());
    // The first origin in order wins.
    let mut ctx = SecurityCtx::default();
    ctx.jwt_payloads
        .push((ISTIO.into(), Arc::new(json!({"iss": ISTIO, "sub": "a"}))));
    ctx.jwt_payloads
        .push((OTHER.into(), Arc::new(json!({"iss": OTHER, "sub": "b"}))));
    istio_authn(
        &IstioAuthn {
            issuers: vec![OTHER.into(), ISTIO.into()],
        },
        &mut ctx,
    );
    assert_eq!(
        ctx.auth.and_then(|a| a.principal).as_deref(),
        Some("other@example.com/b")
    );
}
