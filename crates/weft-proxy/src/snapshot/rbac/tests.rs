//! Truth tables for the RBAC engine, with policies shaped as istiod 1.14 builds them
//! (`pilot/pkg/security/authz/{builder,model,matcher}`).

#![allow(deprecated)]

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::r#type::matcher::v3 as m;
use serde_json::json;

use super::*;
use crate::authn::RequestAuth;
use rbac::permission::Rule as R;
use rbac::principal::Identifier as I;

// ---- Istio's matcher generators ----

fn sm(p: m::string_matcher::MatchPattern) -> m::StringMatcher {
    m::StringMatcher {
        match_pattern: Some(p),
        ignore_case: false,
    }
}

fn re(r: &str) -> m::string_matcher::MatchPattern {
    m::string_matcher::MatchPattern::SafeRegex(m::RegexMatcher {
        regex: r.into(),
        ..Default::default()
    })
}

/// `matcher.StringMatcher(v)`.
fn string_matcher(v: &str) -> m::StringMatcher {
    use m::string_matcher::MatchPattern as P;
    if v == "*" {
        sm(re(".+"))
    } else if let Some(x) = v.strip_prefix('*') {
        sm(P::Suffix(x.into()))
    } else if let Some(x) = v.strip_suffix('*') {
        sm(P::Prefix(x.into()))
    } else {
        sm(P::Exact(v.into()))
    }
}

/// `matcher.StringMatcherWithPrefix(v, "spiffe://")`.
fn spiffe_matcher(v: &str) -> m::StringMatcher {
    use m::string_matcher::MatchPattern as P;
    if v == "*" {
        sm(re(".+"))
    } else if let Some(x) = v.strip_prefix('*') {
        sm(re(&format!("spiffe://.*{x}")))
    } else if let Some(x) = v.strip_suffix('*') {
        sm(P::Prefix(format!("spiffe://{x}")))
    } else {
        sm(P::Exact(format!("spiffe://{v}")))
    }
}

fn id(i: I) -> rbac::Principal {
    rbac::Principal {
        identifier: Some(i),
    }
}

fn rule(r: R) -> rbac::Permission {
    rbac::Permission { rule: Some(r) }
}

fn and_ids(ids: Vec<rbac::Principal>) -> rbac::Principal {
    id(I::AndIds(rbac::principal::Set { ids }))
}

fn or_ids(ids: Vec<rbac::Principal>) -> rbac::Principal {
    id(I::OrIds(rbac::principal::Set { ids }))
}

fn and_rules(rules: Vec<rbac::Permission>) -> rbac::Permission {
    rule(R::AndRules(rbac::permission::Set { rules }))
}

fn or_rules(rules: Vec<rbac::Permission>) -> rbac::Permission {
    rule(R::OrRules(rbac::permission::Set { rules }))
}

fn source_principal(v: &str) -> rbac::Principal {
    id(I::Authenticated(rbac::principal::Authenticated {
        principal_name: Some(spiffe_matcher(v)),
    }))
}

fn namespace(v: &str) -> rbac::Principal {
    id(I::Authenticated(rbac::principal::Authenticated {
        principal_name: Some(sm(re(&format!(".*/ns/{}/.*", v.replace('*', ".*"))))),
    }))
}

fn cidr(v: &str) -> core::CidrRange {
    let (ip, len) = match v.split_once('/') {
        Some((ip, len)) => (ip, len.parse().unwrap()),
        None if v.contains(':') => (v, 128),
        None => (v, 32),
    };
    core::CidrRange {
        address_prefix: ip.into(),
        prefix_len: Some(protobuf::UInt32Value { value: len }),
    }
}

#[allow(deprecated)]
fn header(name: &str, v: &str) -> route::HeaderMatcher {
    use route::header_matcher::HeaderMatchSpecifier as S;
    let spec = if v == "*" {
        S::PresentMatch(true)
    } else if let Some(x) = v.strip_prefix('*') {
        S::SuffixMatch(x.into())
    } else if let Some(x) = v.strip_suffix('*') {
        S::PrefixMatch(x.into())
    } else {
        S::ExactMatch(v.into())
    };
    route::HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(spec),
        ..Default::default()
    }
}

fn host(v: &str) -> rbac::Permission {
    use route::header_matcher::HeaderMatchSpecifier as S;
    let mut s = string_matcher(v);
    s.ignore_case = true;
    let spec = if v == "*" {
        S::PresentMatch(true)
    } else {
        S::StringMatch(s)
    };
    rule(R::Header(route::HeaderMatcher {
        name: ":authority".into(),
        header_match_specifier: Some(spec),
        ..Default::default()
    }))
}

fn path(v: &str) -> rbac::Permission {
    rule(R::UrlPath(m::PathMatcher {
        rule: Some(m::path_matcher::Rule::Path(string_matcher(v))),
    }))
}

fn authn_meta(key: &str, v: &str) -> rbac::Principal {
    #[allow(deprecated)]
    id(I::Metadata(m::MetadataMatcher {
        filter: "istio_authn".into(),
        path: vec![seg(key)],
        value: Some(m::ValueMatcher {
            match_pattern: Some(m::value_matcher::MatchPattern::StringMatch(string_matcher(
                v,
            ))),
        }),
        invert: false,
    }))
}

fn seg(k: &str) -> m::metadata_matcher::PathSegment {
    m::metadata_matcher::PathSegment {
        segment: Some(m::metadata_matcher::path_segment::Segment::Key(k.into())),
    }
}

fn claim(path: &[&str], v: &str) -> rbac::Principal {
    use m::value_matcher::MatchPattern as V;
    let mut segs = vec![seg("request.auth.claims")];
    segs.extend(path.iter().map(|k| seg(k)));
    #[allow(deprecated)]
    id(I::Metadata(m::MetadataMatcher {
        filter: "istio_authn".into(),
        path: segs,
        value: Some(m::ValueMatcher {
            match_pattern: Some(V::ListMatch(Box::new(m::ListMatcher {
                match_pattern: Some(m::list_matcher::MatchPattern::OneOf(Box::new(
                    m::ValueMatcher {
                        match_pattern: Some(V::StringMatch(string_matcher(v))),
                    },
                ))),
            }))),
        }),
        invert: false,
    }))
}

fn policy(permissions: Vec<rbac::Permission>, principals: Vec<rbac::Principal>) -> rbac::Policy {
    rbac::Policy {
        permissions,
        principals,
        ..Default::default()
    }
}

/// Istio's `rbacPolicyMatchNever` (a policy without rules).
fn match_never() -> rbac::Policy {
    policy(
        vec![rule(R::NotRule(Box::new(rule(R::Any(true)))))],
        vec![id(I::NotId(Box::new(id(I::Any(true)))))],
    )
}

/// Istio's `rules: [{}]`.
fn match_all() -> rbac::Policy {
    policy(
        vec![and_rules(vec![rule(R::Any(true))])],
        vec![and_ids(vec![id(I::Any(true))])],
    )
}

fn rbac(action: rbac::rbac::Action, policies: Vec<(&str, rbac::Policy)>) -> rbac::Rbac {
    rbac::Rbac {
        action: action as i32,
        policies: policies
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<HashMap<_, _>>(),
        ..Default::default()
    }
}

fn engine(action: rbac::rbac::Action, policies: Vec<(&str, rbac::Policy)>) -> Engine {
    Engine::compile(&rbac(action, policies), "test").unwrap()
}

use rbac::rbac::Action::{Allow as ALLOW, Deny as DENY, Log as LOG};

// ---- Requests ----

struct Req {
    local: SocketAddr,
    peer: SocketAddr,
    principal: Option<&'static str>,
    sni: &'static str,
    method: &'static str,
    authority: &'static str,
    path: &'static str,
    headers: http::HeaderMap,
    sec: SecurityCtx,
    tcp: bool,
}

fn req() -> Req {
    Req {
        local: "10.0.0.2:8080".parse().unwrap(),
        peer: "10.0.0.1:40000".parse().unwrap(),
        principal: Some("spiffe://cluster.local/ns/foo/sa/sleep"),
        sni: "",
        method: "GET",
        authority: "httpbin.foo:8000",
        path: "/get",
        headers: http::HeaderMap::new(),
        sec: SecurityCtx::default(),
        tcp: false,
    }
}

impl Req {
    fn attrs(&self) -> Attrs<'_> {
        let remote_ip = self
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(self.peer.ip());
        Attrs {
            local: self.local,
            peer: self.peer,
            remote_ip,
            principal: self.principal,
            sni: self.sni,
            http: (!self.tcp).then_some(HttpAttrs {
                method: self.method,
                authority: self.authority,
                scheme: "http",
                path: self.path,
                headers: &self.headers,
            }),
            sec: (!self.tcp).then_some(&self.sec),
        }
    }
}

/// (allowed, matched policy) of an engine on a request.
fn eval(e: &Engine, r: &Req) -> (bool, Option<String>) {
    let d = e.evaluate(&r.attrs());
    (d.allowed, d.policy.map(|p| p.to_string()))
}

fn allows(e: &Engine, r: &Req) -> bool {
    eval(e, r).0
}

// ---- Tests ----

#[test]
fn principals_exact_prefix_suffix_and_any() {
    let allow = |v: &str| {
        engine(
            ALLOW,
            vec![(
                "p",
                policy(
                    vec![and_rules(vec![rule(R::Any(true))])],
                    vec![and_ids(vec![or_ids(vec![source_principal(v)])])],
                ),
            )],
        )
    };
    let who = |p: Option<&'static str>| Req {
        principal: p,
        ..req()
    };
    let sleep = Some("spiffe://cluster.local/ns/foo/sa/sleep");
    let other = Some("spiffe://cluster.local/ns/bar/sa/curl");
    // (policy value, sleep, other, plaintext)
    for (v, a, b, c) in [
        ("cluster.local/ns/foo/sa/sleep", true, false, false),
        ("cluster.local/ns/foo/*", true, false, false),
        ("cluster.local/ns/*", true, true, false),
        ("*/sa/sleep", true, false, false),
        ("*", true, true, false),
        ("cluster.local/ns/foo/sa/slee", false, false, false),
    ] {
        let e = allow(v);
        assert_eq!(allows(&e, &who(sleep)), a, "{v} sleep");
        assert_eq!(allows(&e, &who(other)), b, "{v} other");
        assert_eq!(allows(&e, &who(None)), c, "{v} plaintext");
    }
}

#[test]
fn namespaces_match_by_regex_on_the_principal() {
    let e = |v: &str| {
        engine(
            ALLOW,
            vec![("p", policy(vec![rule(R::Any(true))], vec![namespace(v)]))],
        )
    };
    let who = |p: &'static str| Req {
        principal: Some(p),
        ..req()
    };
    let foo = who("spiffe://cluster.local/ns/foo/sa/sleep");
    let foobar = who("spiffe://cluster.local/ns/foobar/sa/sleep");
    let td = who("spiffe://other-td/ns/foo/sa/x");
    assert!(allows(&e("foo"), &foo));
    assert!(!allows(&e("foo"), &foobar), "full match, not a prefix");
    assert!(allows(&e("foo"), &td), "any trust domain");
    assert!(allows(&e("foo*"), &foobar));
    assert!(allows(&e("*"), &foobar));
    let plain = Req {
        principal: None,
        ..req()
    };
    assert!(!allows(&e("*"), &plain));
    // notNamespaces: not_id{or_ids{…}}: a plaintext peer is "not in foo".
    let not_foo = engine(
        DENY,
        vec![(
            "p",
            policy(
                vec![rule(R::Any(true))],
                vec![and_ids(vec![id(I::NotId(Box::new(or_ids(vec![
                    namespace("foo"),
                ]))))])],
            ),
        )],
    );
    assert!(allows(&not_foo, &foo));
    assert!(!allows(&not_foo, &foobar));
    assert!(!allows(&not_foo, &plain));
}

#[test]
fn cidrs_with_ipv4_mapped_peers_and_remote_ip() {
    let e = |i: I| {
        engine(
            ALLOW,
            vec![("p", policy(vec![rule(R::Any(true))], vec![id(i)]))],
        )
    };
    let from = |peer: &str| Req {
        peer: format!("{peer}:1234").parse().unwrap(),
        ..req()
    };
    let direct = e(I::DirectRemoteIp(cidr("10.0.0.0/24")));
    assert!(allows(&direct, &from("10.0.0.7")));
    assert!(allows(&direct, &from("[::ffff:10.0.0.7]")));
    assert!(!allows(&direct, &from("10.0.1.7")));
    assert!(!allows(&direct, &from("[::ffff:10.0.1.7]")));
    assert!(!allows(&direct, &from("[2001:db8::1]")));
    // Written unmasked, as istiod passes the address through.
    let host_bits = e(I::DirectRemoteIp(cidr("10.0.0.77/24")));
    assert!(allows(&host_bits, &from("10.0.0.1")));
    let single = e(I::SourceIp(cidr("10.0.0.7")));
    assert!(allows(&single, &from("10.0.0.7")));
    assert!(!allows(&single, &from("10.0.0.8")));
    let v6 = e(I::DirectRemoteIp(cidr("2001:db8::/32")));
    assert!(allows(&v6, &from("[2001:db8:1::5]")));
    assert!(!allows(&v6, &from("10.0.0.7")));
    // A mapped range written as IPv6 matches IPv4 peers.
    let mapped = e(I::DirectRemoteIp(cidr("::ffff:10.0.0.0/24")));
    assert!(allows(&mapped, &from("10.0.0.3")));
    // remote_ip: the last x-forwarded-for address; direct_remote_ip: the TCP peer.
    let remote = e(I::RemoteIp(cidr("192.168.1.0/24")));
    let mut r = from("10.0.0.7");
    assert!(!allows(&remote, &r));
    r.headers
        .insert("x-forwarded-for", "1.2.3.4, 192.168.1.9".parse().unwrap());
    assert!(allows(&remote, &r));
    assert!(!allows(&e(I::DirectRemoteIp(cidr("192.168.1.0/24"))), &r));
    // Malformed: refused.
    let bad = rbac(
        ALLOW,
        vec![(
            "p",
            policy(
                vec![rule(R::Any(true))],
                vec![id(I::DirectRemoteIp(cidr("10.0.0.0/33")))],
            ),
        )],
    );
    let err = Engine::compile(&bad, "listener x").unwrap_err().to_string();
    assert!(
        err.contains("listener x") && err.contains("policy p"),
        "{err}"
    );
}

#[test]
fn headers_hosts_methods_and_paths() {
    let e = |perm: rbac::Permission| {
        engine(
            ALLOW,
            vec![("p", policy(vec![perm], vec![id(I::Any(true))]))],
        )
    };
    // Multiple values are joined with ",".
    let h = e(rule(R::Header(header("x-token", "a,b"))));
    let mut r = req();
    r.headers.append("x-token", "a".parse().unwrap());
    assert!(!allows(&h, &r));
    r.headers.append("x-token", "b".parse().unwrap());
    assert!(allows(&h, &r));
    let prefix = e(rule(R::Header(header("x-token", "a*"))));
    assert!(allows(&prefix, &r));
    let present = e(rule(R::Header(header("x-absent", "*"))));
    assert!(!allows(&present, &r));
    let present = e(rule(R::Header(header("X-Token", "*"))));
    assert!(allows(&present, &r), "header names are case-insensitive");
    // Methods.
    let get = e(or_rules(vec![rule(R::Header(header(":method", "GET")))]));
    assert!(allows(&get, &req()));
    assert!(!allows(
        &get,
        &Req {
            method: "POST",
            ..req()
        }
    ));
    // Hosts ignore case; the port is part of the value.
    let hosts = e(or_rules(vec![host("httpbin.foo*"), host("*.example.com")]));
    assert!(allows(
        &hosts,
        &Req {
            authority: "HTTPBIN.foo:8000",
            ..req()
        }
    ));
    assert!(allows(
        &hosts,
        &Req {
            authority: "www.EXAMPLE.com",
            ..req()
        }
    ));
    assert!(!allows(
        &hosts,
        &Req {
            authority: "example.com",
            ..req()
        }
    ));
    let exact_host = e(host("httpbin.foo"));
    assert!(
        !allows(&exact_host, &req()),
        "httpbin.foo:8000 ≠ httpbin.foo"
    );
    // Paths: without query and fragment.
    let p = e(or_rules(vec![path("/get"), path("/api/*"), path("*.js")]));
    assert!(allows(
        &p,
        &Req {
            path: "/get?x=/admin",
            ..req()
        }
    ));
    assert!(allows(
        &p,
        &Req {
            path: "/get#frag",
            ..req()
        }
    ));
    assert!(allows(
        &p,
        &Req {
            path: "/api/v1",
            ..req()
        }
    ));
    assert!(allows(
        &p,
        &Req {
            path: "/static/app.js?v=1",
            ..req()
        }
    ));
    assert!(!allows(
        &p,
        &Req {
            path: "/getx",
            ..req()
        }
    ));
    assert!(!allows(
        &p,
        &Req {
            path: "/x?/get",
            ..req()
        }
    ));
    // notPaths.
    let not_admin = e(and_rules(vec![rule(R::NotRule(Box::new(or_rules(vec![
        path("/admin*"),
    ]))))]));
    assert!(allows(&not_admin, &req()));
    assert!(!allows(
        &not_admin,
        &Req {
            path: "/admin/x",
            ..req()
        }
    ));
}

#[test]
fn ports_addresses_and_server_names() {
    let e = |perm: rbac::Permission| {
        engine(
            ALLOW,
            vec![("p", policy(vec![perm], vec![id(I::Any(true))]))],
        )
    };
    let to = |local: &str| Req {
        local: local.parse().unwrap(),
        ..req()
    };
    let ports = e(or_rules(vec![
        rule(R::DestinationPort(9000)),
        rule(R::DestinationPort(9001)),
    ]));
    assert!(allows(&ports, &to("10.0.0.2:9000")));
    assert!(allows(&ports, &to("10.0.0.2:9001")));
    assert!(!allows(&ports, &to("10.0.0.2:9002")));
    let range = e(rule(R::DestinationPortRange(
        envoy_types::pb::envoy::r#type::v3::Int32Range {
            start: 8000,
            end: 8080,
        },
    )));
    assert!(allows(&range, &to("10.0.0.2:8000")));
    assert!(!allows(&range, &to("10.0.0.2:8080")), "end excluded");
    let dst = e(rule(R::DestinationIp(cidr("10.0.0.2"))));
    assert!(allows(&dst, &to("10.0.0.2:1")));
    assert!(!allows(&dst, &to("10.0.0.3:1")));
    let sni = e(rule(R::RequestedServerName(string_matcher("*.local"))));
    assert!(!allows(&sni, &req()), "no SNI is the empty string");
    assert!(allows(
        &sni,
        &Req {
            sni: "outbound_.80_._.x.cluster.local",
            ..req()
        }
    ));
}

#[test]
fn allow_deny_log_engines() {
    let get = policy(
        vec![and_rules(vec![or_rules(vec![rule(R::Header(header(
            ":method", "GET",
        )))])])],
        vec![and_ids(vec![id(I::Any(true))])],
    );
    let post = Req {
        method: "POST",
        ..req()
    };
    // ALLOW with no policies (all dropped) denies everything.
    let empty = engine(ALLOW, vec![]);
    assert_eq!(eval(&empty, &req()), (false, None));
    // allow-nothing: `spec: {}`.
    let nothing = engine(
        ALLOW,
        vec![("ns[foo]-policy[allow-nothing]-rule[0]", match_never())],
    );
    assert_eq!(eval(&nothing, &req()), (false, None));
    // allow-all: `rules: [{}]`.
    let all = engine(
        ALLOW,
        vec![("ns[foo]-policy[allow-all]-rule[0]", match_all())],
    );
    assert_eq!(
        eval(&all, &req()),
        (true, Some("ns[foo]-policy[allow-all]-rule[0]".into()))
    );
    let allow = engine(ALLOW, vec![("ns[foo]-policy[get]-rule[0]", get.clone())]);
    assert!(allows(&allow, &req()));
    assert_eq!(eval(&allow, &post), (false, None));
    let deny = engine(DENY, vec![("ns[foo]-policy[get]-rule[0]", get.clone())]);
    assert_eq!(
        eval(&deny, &req()),
        (false, Some("ns[foo]-policy[get]-rule[0]".into()))
    );
    assert_eq!(eval(&deny, &post), (true, None));
    // LOG never denies; the match is the access-log hint.
    let log = engine(LOG, vec![("ns[foo]-policy[audit]-rule[0]", get)]);
    assert_eq!(
        eval(&log, &req()),
        (true, Some("ns[foo]-policy[audit]-rule[0]".into()))
    );
    assert_eq!(eval(&log, &post), (true, None));
}

#[test]
fn the_first_matching_policy_in_name_order_is_reported() {
    let names = [
        "ns[foo]-policy[b]-rule[1]",
        "ns[foo]-policy[a]-rule[0]",
        "ns[foo]-policy[b]-rule[0]",
        "ns[bar]-policy[z]-rule[0]",
    ];
    for _ in 0..5 {
        // HashMap order varies between runs: the answer must not.
        let e = engine(DENY, names.iter().map(|n| (*n, match_all())).collect());
        assert_eq!(
            eval(&e, &req()),
            (false, Some("ns[bar]-policy[z]-rule[0]".into()))
        );
    }
    let e = engine(
        DENY,
        vec![
            ("ns[foo]-policy[a]-rule[0]", match_never()),
            ("ns[foo]-policy[b]-rule[0]", match_all()),
        ],
    );
    assert_eq!(
        eval(&e, &req()).1.as_deref(),
        Some("ns[foo]-policy[b]-rule[0]")
    );
}

#[test]
fn unsupported_matchers_fail_closed_per_action() {
    let filter_state = policy(
        vec![rule(R::Any(true))],
        vec![id(I::FilterState(m::FilterStateMatcher {
            key: "io.istio.peer_principal".into(),
            ..Default::default()
        }))],
    );
    let range_header = policy(
        vec![rule(R::Header(route::HeaderMatcher {
            name: "x-n".into(),
            header_match_specifier: Some(route::header_matcher::HeaderMatchSpecifier::RangeMatch(
                Default::default(),
            )),
            ..Default::default()
        }))],
        vec![id(I::Any(true))],
    );
    let cel = rbac::Policy {
        condition: Some(Default::default()),
        ..match_all()
    };
    let other_meta = policy(
        vec![rule(R::Any(true))],
        vec![id(I::Metadata(m::MetadataMatcher {
            filter: "some.filter".into(),
            path: vec![seg("k")],
            ..Default::default()
        }))],
    );
    for (what, p) in [
        ("filter_state", filter_state),
        ("range", range_header),
        ("cel", cel),
        ("metadata", other_meta),
    ] {
        // ALLOW: dropped, so it never allows (here: nothing else ⇒ deny all).
        let allow = engine(ALLOW, vec![("bad", p.clone())]);
        assert_eq!(eval(&allow, &req()), (false, None), "{what}");
        assert_eq!(allow.warnings.len(), 1, "{what}");
        // With another policy beside it, that one still works.
        let allow = engine(ALLOW, vec![("bad", p.clone()), ("good", match_all())]);
        assert_eq!(eval(&allow, &req()), (true, Some("good".into())), "{what}");
        // DENY: it matches everything.
        let deny = engine(DENY, vec![("bad", p.clone())]);
        assert_eq!(eval(&deny, &req()), (false, Some("bad".into())), "{what}");
        let tcp = Req { tcp: true, ..req() };
        assert!(!allows(&deny, &tcp), "{what}");
        // LOG: ignored.
        let log = engine(LOG, vec![("bad", p)]);
        assert_eq!(eval(&log, &req()), (true, None), "{what}");
    }
}

#[test]
fn request_authentication_metadata() {
    let e = |princ: rbac::Principal| {
        engine(
            ALLOW,
            vec![("p", policy(vec![rule(R::Any(true))], vec![princ]))],
        )
    };
    let with_auth = |claims: serde_json::Value| {
        let mut r = req();
        r.sec.auth = Some(RequestAuth {
            principal: Some("testing@secure.istio.io/testing@secure.istio.io".into()),
            audiences: Some("aud1".into()),
            presenter: None,
            claims: claims.as_object().cloned().unwrap_or_default(),
            raw_claims: String::new(),
        });
        r
    };
    let r = with_auth(json!({"groups": ["group1", "group2"], "nested": {"key1": ["valueA"]}}));
    let any_token = e(authn_meta("request.auth.principal", "*"));
    assert!(allows(&any_token, &r));
    assert!(!allows(&any_token, &req()), "no token, no principal");
    assert!(allows(
        &e(authn_meta(
            "request.auth.principal",
            "testing@secure.istio.io/testing@secure.istio.io"
        )),
        &r
    ));
    assert!(allows(&e(authn_meta("request.auth.audiences", "aud*")), &r));
    assert!(!allows(&e(authn_meta("request.auth.presenter", "*")), &r));
    assert!(allows(&e(claim(&["groups"], "group1")), &r));
    assert!(!allows(&e(claim(&["groups"], "group3")), &r));
    assert!(allows(&e(claim(&["nested", "key1"], "valueA")), &r));
    assert!(!allows(&e(claim(&["nested"], "valueA")), &r));
    assert!(!allows(&e(claim(&["groups"], "group1")), &req()));
    // The same policies over TCP never see request metadata.
    let tcp = Req { tcp: true, ..r };
    assert!(!allows(&any_token, &tcp));
}

#[test]
fn tcp_connections_have_no_http_attributes() {
    let e = |perm: rbac::Permission| {
        engine(
            ALLOW,
            vec![("p", policy(vec![perm], vec![id(I::Any(true))]))],
        )
    };
    let tcp = Req { tcp: true, ..req() };
    assert!(!allows(&e(rule(R::Header(header(":method", "GET")))), &tcp));
    assert!(!allows(&e(path("*")), &tcp));
    assert!(allows(&e(rule(R::DestinationPort(8080))), &tcp));
    // notMethods over TCP (if a control plane emitted it): an absent header is "not GET".
    assert!(allows(
        &e(rule(R::NotRule(Box::new(rule(R::Header(header(
            ":method", "GET"
        ))))))),
        &tcp
    ));
}

fn http_filter(
    rules: Option<rbac::Rbac>,
    shadow: Option<rbac::Rbac>,
    prefix: &str,
    stat: &str,
) -> RbacFilter {
    let cfg = http_rbac::Rbac {
        rules,
        shadow_rules: shadow,
        shadow_rules_stat_prefix: prefix.into(),
        ..Default::default()
    };
    let any = protobuf::Any {
        type_url: format!("type.googleapis.com/{HTTP_RBAC_TYPE}"),
        value: cfg.encode_to_vec(),
    };
    RbacFilter::http(&any, stat, "test").unwrap()
}

#[test]
fn filters_count_shadow_and_deny_as_envoy() {
    let deny_get = rbac(
        DENY,
        vec![(
            "ns[foo]-policy[deny get]-rule[0]",
            policy(
                vec![rule(R::Header(header(":method", "GET")))],
                vec![id(I::Any(true))],
            ),
        )],
    );
    let f = http_filter(
        Some(deny_get.clone()),
        Some(deny_get.clone()),
        "istio_dry_run_deny_",
        "inbound_0.0.0.0_18080",
    );
    let out = f.check(&req().attrs());
    assert_eq!(
        out.denied.as_deref(),
        Some("rbac_access_denied_matched_policy[ns[foo]-policy[deny_get]-rule[0]]")
    );
    let shadow = out.shadow.unwrap();
    assert_eq!(&*shadow.prefix, "istio_dry_run_deny_");
    assert_eq!(
        shadow.policy.as_deref(),
        Some("ns[foo]-policy[deny get]-rule[0]")
    );
    assert!(!shadow.allowed);
    let out = f.check(
        &Req {
            method: "POST",
            ..req()
        }
        .attrs(),
    );
    assert_eq!(out.denied, None);
    let counters: HashMap<String, u64> = crate::snapshot::counter::all().into_iter().collect();
    let c = |n: &str| {
        counters
            .get(&format!("http.inbound_0.0.0.0_18080.rbac.{n}"))
            .copied()
    };
    assert_eq!(c("denied"), Some(1));
    assert_eq!(c("allowed"), Some(1));
    assert_eq!(c("istio_dry_run_deny_shadow_denied"), Some(1));
    assert_eq!(c("istio_dry_run_deny_shadow_allowed"), Some(1));
    // An ALLOW engine that matched nothing reports [none].
    let f = http_filter(Some(rbac(ALLOW, vec![])), None, "", "inbound_0.0.0.0_18081");
    assert_eq!(
        f.check(&req().attrs()).denied.as_deref(),
        Some("rbac_access_denied_matched_policy[none]")
    );
    // Rules unset: nothing enforced.
    let f = http_filter(
        None,
        Some(deny_get),
        "istio_dry_run_deny_",
        "inbound_0.0.0.0_18082",
    );
    assert_eq!(f.check(&req().attrs()).denied, None);
    // LOG sets the hint and never denies.
    let f = http_filter(
        Some(rbac(LOG, vec![("a", match_all())])),
        None,
        "",
        "inbound_0.0.0.0_18083",
    );
    let out = f.check(&req().attrs());
    assert_eq!((out.denied, out.log_hint), (None, Some(true)));
}

#[test]
fn a_custom_trigger_is_read_back_from_the_shadow_metadata() {
    // The CUSTOM trigger filter, then a policy on its metadata (ext_authz's filter_enabled_metadata).
    let trigger = http_filter(
        None,
        Some(rbac(
            DENY,
            vec![(
                "istio-ext-authz-ns[foo]-policy[ext]-rule[0]",
                policy(vec![path("/headers")], vec![id(I::Any(true))]),
            )],
        )),
        "istio_ext_authz_",
        "inbound_0.0.0.0_18084",
    );
    #[allow(deprecated)]
    let triggered = engine(
        ALLOW,
        vec![(
            "p",
            policy(
                vec![rule(R::Any(true))],
                vec![id(I::Metadata(m::MetadataMatcher {
                    filter: "envoy.filters.http.rbac".into(),
                    path: vec![seg("istio_ext_authz_shadow_effective_policy_id")],
                    value: Some(m::ValueMatcher {
                        match_pattern: Some(m::value_matcher::MatchPattern::StringMatch(sm(
                            m::string_matcher::MatchPattern::Prefix("istio-ext-authz".into()),
                        ))),
                    }),
                    invert: false,
                }))],
            ),
        )],
    );
    for (p, want) in [("/headers", true), ("/ip", false)] {
        let mut r = Req { path: p, ..req() };
        let out = trigger.check(&r.attrs());
        r.sec.shadow.extend(out.shadow);
        assert_eq!(allows(&triggered, &r), want, "{p}");
        assert_eq!(
            r.sec.shadow_policy("istio_ext_authz_").is_some(),
            want,
            "{p}"
        );
    }
}
