//! `weft validate` on Istio's own YAML (`../shared/istio` beside the repository root, a
//! read-only copy in CI): exit status, the warning/note lines for documents Weft does not
//! apply, and the problem lines for invalid ones. Needs no privileges.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/istio");

fn corpus(sub: &str) -> PathBuf {
    let path = Path::new(CORPUS).join(sub);
    assert!(
        path.exists(),
        "Istio's sample/test YAML is missing: expected {} (../shared/istio beside the repository \
         root, see its README.md); this test does not skip without it",
        path.display()
    );
    path
}

struct Run {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn validate(args: &[PathBuf]) -> Run {
    let out = Command::new(WEFT)
        .arg("validate")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run weft validate");
    Run {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read corpus dir")
        .map(|e| e.expect("corpus dir entry").path())
        .filter(|p| p.extension().and_then(|x| x.to_str()) == Some("yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn current_bookinfo_networking_files_are_valid() {
    let files = yaml_files(&corpus("samples-current/bookinfo/networking"));
    assert_eq!(files.len(), 21);
    // Every document in these files is a networking.istio.io/v1 resource.
    let mut documents = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        let kinds = text.lines().filter(|l| l.starts_with("kind:")).count();
        let v1 = text
            .lines()
            .filter(|l| *l == "apiVersion: networking.istio.io/v1")
            .count();
        assert_eq!(kinds, v1, "{}", f.display());
        documents += kinds;
    }
    let run = validate(&files);
    assert!(run.ok, "exit {:?}\n{}{}", run.code, run.stdout, run.stderr);
    assert_eq!(run.stdout, "", "no problem, warning or note lines");
    assert_eq!(run.stderr, format!("{documents} resources, no problems\n"));
}

#[test]
fn kubernetes_and_unsupported_kinds_are_named_and_do_not_fail() {
    let files = [
        corpus("samples/bookinfo/platform/kube/bookinfo.yaml"),
        corpus("samples/bookinfo/policy/productpage_envoy_ratelimit.yaml"),
        corpus("samples-current/httpbin/gateway-api/httpbin-gateway.yaml"),
        corpus("samples-current/bookinfo/networking/bookinfo-gateway.yaml"),
    ];
    let run = validate(&files);
    assert!(run.ok, "exit {:?}\n{}{}", run.code, run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    let bookinfo = files[0].display().to_string();
    let envoy = files[1].display().to_string();
    let gw_api = files[2].display().to_string();
    assert_eq!(lines.len(), 14 + 2 + 2, "{}", run.stdout);
    assert_eq!(
        lines[0],
        format!("{bookinfo}:33: note: Service details: not an Istio resource (v1); skipped")
    );
    assert_eq!(
        lines[2],
        format!(
            "{bookinfo}:54: note: Deployment details-v1: not an Istio resource (apps/v1); skipped"
        )
    );
    assert!(
        lines[..14]
            .iter()
            .all(|l| l.starts_with(&format!("{bookinfo}:")) && l.contains(": note: ")),
        "{}",
        run.stdout
    );
    assert_eq!(
        lines[14],
        format!(
            "{envoy}:2: warning: EnvoyFilter istio-system/filter-ratelimit: \
             networking.istio.io/v1alpha3 EnvoyFilter is not supported by Weft; skipped, it will \
             not be applied"
        )
    );
    assert_eq!(
        lines[15],
        format!(
            "{envoy}:59: warning: EnvoyFilter istio-system/filter-ratelimit-svc: \
             networking.istio.io/v1alpha3 EnvoyFilter is not supported by Weft; skipped, it will \
             not be applied"
        )
    );
    assert!(
        lines[16].starts_with(&format!(
            "{gw_api}:2: warning: Gateway httpbin-gateway: the Kubernetes Gateway API \
             (gateway.networking.k8s.io/v1) is not supported by Weft"
        )),
        "{}",
        lines[16]
    );
    assert!(
        lines[17].starts_with(&format!("{gw_api}:16: warning: HTTPRoute httpbin:")),
        "{}",
        lines[17]
    );
    assert_eq!(
        run.stderr,
        "2 resources, no problems (4 warning(s): kinds Weft does not apply; 14 note(s): not \
         Istio resources, skipped)\n"
    );
}

#[test]
fn a_config_directory_names_what_it_skips() {
    // Read as `weft control` reads its directory: the Istio Gateway and VirtualService load,
    // the Gateway API files and the Kubernetes kinds are named.
    let dir = corpus("samples-current/httpbin");
    let run = validate(std::slice::from_ref(&dir));
    assert!(run.ok, "exit {:?}\n{}{}", run.code, run.stdout, run.stderr);
    let warnings = run
        .stdout
        .lines()
        .filter(|l| l.contains(": warning: "))
        .count();
    let notes = run
        .stdout
        .lines()
        .filter(|l| l.contains(": note: "))
        .count();
    assert_eq!(warnings, 2, "{}", run.stdout);
    assert_eq!(notes, run.stdout.lines().count() - 2, "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!(
            "{}:2: warning: Gateway httpbin-gateway: the Kubernetes Gateway API",
            dir.join("gateway-api/httpbin-gateway.yaml").display()
        )),
        "{}",
        run.stdout
    );
    assert_eq!(
        run.stderr,
        format!(
            "2 resources, no problems (2 warning(s): kinds Weft does not apply; {notes} note(s): \
             not Istio resources, skipped)\n"
        )
    );
}

#[test]
fn a_removed_field_in_istios_test_config_is_reported() {
    // Istio 1.14 reserves `HTTPRoute.websocketUpgrade`; `istioctl validate` refuses it too.
    let file = corpus("tests-config/rule-websocket-route.yaml");
    let run = validate(std::slice::from_ref(&file));
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    let f = file.display();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    assert!(
        lines[0].starts_with(&format!(
            "{f}:56: VirtualService testns/websocket-route: spec.http[0].websocketUpgrade: \
             unknown field `websocketUpgrade`"
        )),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with(&format!(
            "{f}:79: VirtualService testns/websocket-route2: spec.http[0].websocketUpgrade: \
             unknown field `websocketUpgrade`"
        )),
        "{}",
        lines[1]
    );
    assert_eq!(run.stderr, "2 problem(s)\n");
}
