//! AuthorizationPolicy evaluation, control plane and proxy together: policies generated from
//! the input are translated by `weft control`'s builder into RBAC filters, compiled by the
//! proxy and run on a generated request. The property (Istio's): the request is denied when a
//! DENY policy matches it, or when ALLOW policies apply and none matches it; otherwise allowed.
//! Whether one policy matches is asked of that policy alone, as a lone ALLOW.
#![no_main]

use std::collections::BTreeMap;
use std::path::Path;

use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use libfuzzer_sys::fuzz_target;
use weft_proxy::snapshot::rbac::{Attrs, HttpAttrs, RbacFilter};

/// Reads choices off the input.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn pick<'v, T>(&mut self, v: &'v [T]) -> &'v T {
        let b = self.0.first().copied().unwrap_or(0);
        self.0 = self.0.get(1..).unwrap_or_default();
        &v[b as usize % v.len()]
    }
    fn flag(&mut self) -> bool {
        *self.pick(&[false, true])
    }
}

const PATHS: &[&str] = &["/a", "/a/*", "*/admin", "/b"];
const METHODS: &[&str] = &["GET", "POST"];
const PRINCIPALS: &[&str] = &["cluster.local/ns/foo/sa/sleep", "*"];
const USERS: &[&str] = &["jason", "*"];

fn list(v: &[&str]) -> String {
    let q: Vec<String> = v.iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", q.join(", "))
}

/// One rule in YAML flow form.
fn rule(b: &mut Bytes) -> String {
    let mut parts = Vec::new();
    if b.flag() {
        let mut op = Vec::new();
        let field = if b.flag() { "paths" } else { "notPaths" };
        op.push(format!("{field}: {}", list(&[*b.pick(PATHS)])));
        if b.flag() {
            op.push(format!("methods: {}", list(&[*b.pick(METHODS)])));
        }
        parts.push(format!("to: [{{operation: {{{}}}}}]", op.join(", ")));
    }
    if b.flag() {
        let field = if b.flag() {
            "principals"
        } else {
            "notPrincipals"
        };
        parts.push(format!(
            "from: [{{source: {{{field}: {}}}}}]",
            list(&[*b.pick(PRINCIPALS)])
        ));
    }
    if b.flag() {
        parts.push(format!(
            "when: [{{key: \"request.headers[x-user]\", values: {}}}]",
            list(&[*b.pick(USERS)])
        ));
    }
    format!("{{{}}}", parts.join(", "))
}

fn policy(name: &str, action: &str, rules: &[String]) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: foo}}\nspec:\n  selector: {{matchLabels: {{app: httpbin}}}}\n  action: {action}\n  rules: [{}]\n---\n",
        rules.join(", ")
    )
}

const WORKLOAD: &str = "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: httpbin, namespace: foo}\nspec: {address: 10.0.0.5, labels: {app: httpbin}}\n";

/// The RBAC filters `weft control` builds for httpbin from `yaml`, compiled by the proxy.
fn filters(yaml: &str) -> Option<Vec<RbacFilter>> {
    let (rs, problems) = weft_api::parse_documents(yaml, Path::new("fuzz.yaml"));
    // Policies Istio's validation refuses are never applied.
    if !problems.is_empty() {
        return None;
    }
    let registry = weft_control::registry::Registry::build(&rs, "cluster.local");
    let index = weft_control::authz::Index::build(&rs, &weft_api::MeshConfig::default(), &registry);
    let labels = BTreeMap::from([("app".to_string(), "httpbin".to_string())]);
    let built = index.build_filters(&index.select("foo", &labels));
    built
        .http
        .iter()
        .filter_map(|f| match &f.config_type {
            Some(hcm::http_filter::ConfigType::TypedConfig(any)) => Some(any),
            _ => None,
        })
        .map(|any| {
            RbacFilter::http(any, "fuzz", "fuzz")
                .expect("the proxy compiles what the control plane builds")
        })
        .collect::<Vec<_>>()
        .into()
}

fn denied(filters: &[RbacFilter], a: &Attrs) -> bool {
    filters.iter().any(|f| f.check(a).denied.is_some())
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let n = 1 + (*b.pick(&[0u8, 1, 2, 3]) as usize);
    let mut policies = Vec::new();
    for i in 0..n {
        let deny = b.flag();
        // A DENY policy needs a rule (Istio's validation); an ALLOW without any allows nothing.
        let count = *b.pick(&[0usize, 1, 1, 2]);
        let count = if deny { count.max(1) } else { count };
        let rules: Vec<String> = (0..count).map(|_| rule(&mut b)).collect();
        policies.push((format!("p{i}"), deny, rules));
    }
    let path = *b.pick(&["/a", "/a/x", "/x/admin", "/b", "/c"]);
    let method = *b.pick(METHODS);
    let principal = *b.pick(&[
        Some("spiffe://cluster.local/ns/foo/sa/sleep"),
        Some("spiffe://cluster.local/ns/bar/sa/other"),
        None,
    ]);
    let mut headers = http::HeaderMap::new();
    if let Some(user) = *b.pick(&[Some("jason"), Some("bob"), None]) {
        headers.insert("x-user", http::HeaderValue::from_static(user));
    }
    let attrs = Attrs {
        local: "10.0.0.5:8000".parse().expect("addr"),
        peer: "10.0.0.9:40000".parse().expect("addr"),
        remote_ip: "10.0.0.9".parse().expect("ip"),
        principal,
        sni: "",
        http: Some(HttpAttrs {
            method,
            authority: "httpbin.foo:8000",
            scheme: "http",
            path,
            headers: &headers,
        }),
        sec: None,
    };

    let mut all = String::new();
    for (name, deny, rules) in &policies {
        all.push_str(&policy(name, if *deny { "DENY" } else { "ALLOW" }, rules));
    }
    all.push_str(WORKLOAD);
    let Some(all_filters) = filters(&all) else {
        return;
    };
    let actual = denied(&all_filters, &attrs);

    let matches = |name: &str, rules: &[String]| {
        let alone = format!("{}{WORKLOAD}", policy(name, "ALLOW", rules));
        !denied(
            &filters(&alone).expect("valid alone as with the others"),
            &attrs,
        )
    };
    let deny_matches = policies.iter().any(|(n, d, r)| *d && matches(n, r));
    let allows: Vec<_> = policies.iter().filter(|(_, d, _)| !*d).collect();
    let expected =
        deny_matches || (!allows.is_empty() && !allows.iter().any(|(n, _, r)| matches(n, r)));
    assert_eq!(
        actual,
        expected,
        "policies:\n{all}\nrequest: {method} {path} principal {principal:?} x-user {:?}",
        headers.get("x-user")
    );
});
