//! Istio's own YAML, as users and Istio's tests write it, must load in Weft: every valid Istio
//! resource validates (per file, as `weft validate FILE…` checks them); Kubernetes kinds are
//! skipped with a note; kinds Istio applies and Weft does not (EnvoyFilter, the Gateway API, …)
//! are named in a warning. The corpus is `../shared/istio` beside the repository root (a
//! read-only copy in CI; see its README.md).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use weft_api::{Kind, Note, Parsed, Problem, Resource, Skip};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/istio");
const DIRS: [&str; 3] = ["samples", "samples-current", "tests-config"];

fn corpus(sub: &str) -> PathBuf {
    let dir = Path::new(CORPUS).join(sub);
    assert!(
        dir.is_dir(),
        "Istio's sample/test YAML is missing: expected the directory {} (../shared/istio beside \
         the repository root, see its README.md); this test does not skip without it",
        dir.display()
    );
    dir
}

fn rel(p: &Path) -> String {
    let root = Path::new(CORPUS);
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

fn load(sub: &str) -> Parsed {
    weft_api::load_paths_with_notes(&[corpus(sub)])
}

/// Istio 1.14 removed `HTTPRoute.websocketUpgrade` (the proto reserves field 5 and the name), so
/// `istioctl validate` (strict JSON) and Kubernetes' CRD schema refuse it; Istio's pilot tests
/// load this file leniently, ignoring the field. Weft reports it, as `istioctl validate` does.
const EXPECTED_PROBLEMS: &[(&str, usize, &str, &str)] = &[
    (
        "tests-config/rule-websocket-route.yaml",
        56,
        "testns/websocket-route",
        "spec.http[0].websocketUpgrade",
    ),
    (
        "tests-config/rule-websocket-route.yaml",
        79,
        "testns/websocket-route2",
        "spec.http[0].websocketUpgrade",
    ),
];

/// Every warning in the corpus: (file, kind, name, why).
const EXPECTED_WARNINGS: &[(&str, &str, &str, Skip)] = &[
    (
        "samples/bookinfo/platform/kube/bookinfo-ingress.yaml",
        "Ingress",
        "gateway",
        Skip::Ingress,
    ),
    (
        "samples/bookinfo/policy/productpage_envoy_ratelimit.yaml",
        "EnvoyFilter",
        "filter-ratelimit",
        Skip::UnsupportedIstio,
    ),
    (
        "samples/bookinfo/policy/productpage_envoy_ratelimit.yaml",
        "EnvoyFilter",
        "filter-ratelimit-svc",
        Skip::UnsupportedIstio,
    ),
    (
        "samples/security/spire/istio-spire-config.yaml",
        "IstioOperator",
        "",
        Skip::IstioOperator,
    ),
    (
        "samples-current/httpbin/gateway-api/httpbin-gateway.yaml",
        "Gateway",
        "httpbin-gateway",
        Skip::GatewayApi,
    ),
    (
        "samples-current/httpbin/gateway-api/httpbin-gateway.yaml",
        "HTTPRoute",
        "httpbin",
        Skip::GatewayApi,
    ),
    (
        "samples-current/tcp-echo/gateway-api/tcp-echo-20-v2.yaml",
        "TCPRoute",
        "tcp-echo",
        Skip::GatewayApi,
    ),
    (
        "samples-current/tcp-echo/gateway-api/tcp-echo-all-v1.yaml",
        "Gateway",
        "tcp-echo-gateway",
        Skip::GatewayApi,
    ),
    (
        "samples-current/tcp-echo/gateway-api/tcp-echo-all-v1.yaml",
        "TCPRoute",
        "tcp-echo",
        Skip::GatewayApi,
    ),
];

/// The Kubernetes and other non-Istio kinds in the corpus.
const NOT_ISTIO: &[&str] = &[
    "Certificate",
    "ClusterIssuer",
    "ClusterRole",
    "ClusterRoleBinding",
    "ConfigMap",
    "CSIDriver",
    "CustomResourceDefinition",
    "DaemonSet",
    "Deployment",
    "Namespace",
    "PodSecurityPolicy",
    "Secret",
    "Service",
    "ServiceAccount",
    "StatefulSet",
];

struct Corpus {
    resources: Vec<Resource>,
    problems: Vec<Problem>,
    notes: Vec<Note>,
}

fn load_all() -> Corpus {
    let mut all = Corpus {
        resources: Vec::new(),
        problems: Vec::new(),
        notes: Vec::new(),
    };
    for sub in DIRS {
        let p = load(sub);
        all.resources.extend(p.resources);
        all.problems.extend(p.problems);
        all.notes.extend(p.notes);
    }
    all
}

#[test]
fn every_istio_resource_validates() {
    let c = load_all();
    let got: Vec<(String, usize, String, String)> = c
        .problems
        .iter()
        .map(|p| {
            (
                rel(&p.file),
                p.line,
                format!(
                    "{}/{}",
                    p.namespace.as_deref().unwrap_or("?"),
                    p.name.as_deref().unwrap_or("?")
                ),
                p.field.clone(),
            )
        })
        .collect();
    let want: Vec<(String, usize, String, String)> = EXPECTED_PROBLEMS
        .iter()
        .map(|(f, l, n, field)| (f.to_string(), *l, n.to_string(), field.to_string()))
        .collect();
    let text: Vec<String> = c.problems.iter().map(ToString::to_string).collect();
    assert_eq!(got, want, "problems:\n{}", text.join("\n"));
    for p in &c.problems {
        assert_eq!(p.kind.as_deref(), Some("VirtualService"), "{p}");
        assert!(
            p.message.starts_with("unknown field `websocketUpgrade`"),
            "{p}"
        );
    }

    // Cross-resource checks, per file as `weft validate FILE…` runs them (the bookinfo
    // networking files are alternatives to one another, not one configuration).
    let mut by_file: BTreeMap<&Path, Vec<Resource>> = BTreeMap::new();
    for r in &c.resources {
        by_file
            .entry(r.source.file.as_path())
            .or_default()
            .push(r.clone());
    }
    for (file, rs) in &by_file {
        let ps: Vec<String> = weft_api::validate(rs)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(ps.is_empty(), "{}:\n{}", file.display(), ps.join("\n"));
    }
}

#[test]
fn every_document_is_a_resource_a_problem_or_a_note() {
    let c = load_all();
    // Documents per file, counted independently of the loader: top-level `kind:` lines.
    let mut files = BTreeSet::new();
    for sub in DIRS {
        collect(&corpus(sub), &mut files);
    }
    assert!(files.len() > 100, "{} YAML files", files.len());
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read corpus file");
        let kinds = text.lines().filter(|l| l.starts_with("kind:")).count();
        let resources = c
            .resources
            .iter()
            .filter(|r| &r.source.file == file)
            .count();
        let notes = c
            .notes
            .iter()
            .filter(|n| &n.file == file && n.skip != Skip::NotAResource)
            .count();
        let failed: BTreeSet<(usize, &str)> = EXPECTED_PROBLEMS
            .iter()
            .filter(|(f, ..)| Path::new(CORPUS).join(f) == *file)
            .map(|(_, l, n, _)| (*l, *n))
            .collect();
        assert_eq!(
            kinds,
            resources + notes + failed.len(),
            "{}: {kinds} documents with a kind, {resources} resources, {notes} notes, {} rejected",
            rel(file),
            failed.len()
        );
    }
    // The one YAML file that is not Kubernetes at all.
    let not_resources: Vec<String> = c
        .notes
        .iter()
        .filter(|n| n.skip == Skip::NotAResource)
        .map(|n| n.to_string())
        .collect();
    assert_eq!(not_resources.len(), 1, "{not_resources:#?}");
    assert!(
        not_resources[0].ends_with(
            "samples/bookinfo/swagger.yaml:1: note: not a Kubernetes resource (no apiVersion or kind); skipped"
        ),
        "{}",
        not_resources[0]
    );
}

fn collect(dir: &Path, out: &mut BTreeSet<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read corpus dir") {
        let path = e.expect("corpus dir entry").path();
        if path.is_dir() {
            collect(&path, out);
        } else if matches!(
            path.extension().and_then(|x| x.to_str()),
            Some("yaml" | "yml")
        ) {
            out.insert(path);
        }
    }
}

#[test]
fn kubernetes_kinds_are_skipped_with_a_note() {
    let c = load_all();
    let skipped: Vec<&Note> = c
        .notes
        .iter()
        .filter(|n| n.skip == Skip::NotIstio)
        .collect();
    let kinds: BTreeSet<&str> = skipped.iter().map(|n| n.kind.as_str()).collect();
    let want: BTreeSet<&str> = NOT_ISTIO.iter().copied().collect();
    assert_eq!(kinds, want);
    for n in &skipped {
        assert!(!n.is_warning(), "{n}");
        assert!(!n.api_version.contains("istio.io"), "{n}");
        let text = n.to_string();
        assert!(
            text.contains(&format!(": note: {} ", n.kind))
                && text.ends_with(&format!(
                    "not an Istio resource ({}); skipped",
                    n.api_version
                )),
            "{text}"
        );
    }
    // Bookinfo's platform file: 4 Services, 4 ServiceAccounts, 6 Deployments.
    let bookinfo: Vec<&str> = skipped
        .iter()
        .filter(|n| {
            n.file
                .ends_with("samples/bookinfo/platform/kube/bookinfo.yaml")
        })
        .map(|n| n.kind.as_str())
        .collect();
    for (kind, count) in [("Service", 4), ("ServiceAccount", 4), ("Deployment", 6)] {
        assert_eq!(
            bookinfo.iter().filter(|k| **k == kind).count(),
            count,
            "{kind} in bookinfo.yaml: {bookinfo:?}"
        );
    }
}

#[test]
fn kinds_weft_does_not_apply_are_named_in_warnings() {
    let c = load_all();
    let got: Vec<(String, &str, &str, Skip)> = c
        .notes
        .iter()
        .filter(|n| n.is_warning())
        .map(|n| {
            (
                rel(&n.file),
                n.kind.as_str(),
                n.name.as_deref().unwrap_or(""),
                n.skip,
            )
        })
        .collect();
    let want: Vec<(String, &str, &str, Skip)> = EXPECTED_WARNINGS
        .iter()
        .map(|(f, k, n, s)| (f.to_string(), *k, *n, *s))
        .collect();
    assert_eq!(got, want);
    let envoy_filter = c
        .notes
        .iter()
        .find(|n| n.kind == "EnvoyFilter")
        .expect("an EnvoyFilter note");
    assert_eq!(
        envoy_filter.to_string(),
        format!(
            "{}:2: warning: EnvoyFilter istio-system/filter-ratelimit: networking.istio.io/v1alpha3 \
             EnvoyFilter is not supported by Weft; skipped, it will not be applied",
            Path::new(CORPUS)
                .join("samples/bookinfo/policy/productpage_envoy_ratelimit.yaml")
                .display()
        )
    );
}

#[test]
fn current_samples_are_networking_v1_and_load_as_the_1_14_ones() {
    let current = load("samples-current");
    assert!(current.problems.is_empty(), "{:#?}", current.problems);
    assert_eq!(current.resources.len(), 46);
    for r in &current.resources {
        assert_eq!(r.api_version, "networking.istio.io/v1", "{}", r.key());
    }
    let old = load("samples");
    assert!(old.problems.is_empty(), "{:#?}", old.problems);
    assert_eq!(old.resources.len(), 48);
    // The bookinfo networking files exist in both: apart from the apiVersion and the hosts
    // and names the newer samples changed, the specs must load alike. Compare kinds per file.
    let kinds = |rs: &[Resource], dir: &str| -> BTreeMap<String, Vec<Kind>> {
        let mut m: BTreeMap<String, Vec<Kind>> = BTreeMap::new();
        for r in rs {
            let f = rel(&r.source.file);
            if let Some(name) = f.strip_prefix(dir) {
                m.entry(name.to_owned()).or_default().push(r.kind());
            }
        }
        m
    };
    let a = kinds(&old.resources, "samples/bookinfo/networking/");
    let b = kinds(&current.resources, "samples-current/bookinfo/networking/");
    assert_eq!(a.len(), 21);
    assert_eq!(a, b);
    let tests = load("tests-config");
    assert_eq!(tests.resources.len(), 72);
    let all_kinds: BTreeSet<Kind> = old
        .resources
        .iter()
        .chain(&current.resources)
        .chain(&tests.resources)
        .map(Resource::kind)
        .collect();
    for k in [
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::Gateway,
        Kind::ServiceEntry,
        Kind::Sidecar,
        Kind::PeerAuthentication,
    ] {
        assert!(all_kinds.contains(&k), "{k} not in the corpus");
    }
}
