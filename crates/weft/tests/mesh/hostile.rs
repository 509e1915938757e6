//! Hostile input against a sidecar (issue 14's table, `docs/reliability.md`): each row is sent
//! by `hostile.py` from a pod without a sidecar to the server's sidecar (plaintext while
//! PERMISSIVE, then mTLS-only), while a client with a sidecar keeps requesting the same server;
//! every row checks what the hostile client saw, and at the end the client's requests must all
//! have succeeded and the proxy must still be running.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

use super::{CLIENT, LEGACY, SERVER, URL, hosts, server_config, sidecar};
use crate::netns::{Mesh, next_id, ns_exec, wait_for};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mesh/hostile.py");

/// Runs a hostile client in the legacy pod; its JSON report.
fn hostile(mesh: &Mesh, args: &[&str]) -> Value {
    let mut argv = vec!["python3", SCRIPT];
    argv.extend_from_slice(args);
    let out = mesh.exec("legacy", &argv);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "hostile.py {args:?}: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().last().unwrap_or_default();
    // The figures of docs/reliability.md's table.
    println!(
        "hostile {}: {}",
        args[0],
        line.chars().take(300).collect::<String>()
    );
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
}

/// Sends `bytes` raw to the server's sidecar; the report.
fn raw(mesh: &Mesh, name: &str, bytes: &[u8]) -> Value {
    let path = mesh.dir.path().join(format!("{name}.bin"));
    std::fs::write(&path, bytes).expect("payload");
    let ip = mesh.ip(SERVER);
    hostile(mesh, &["raw", &ip, "8080", &path.to_string_lossy(), "3"])
}

fn statuses(v: &Value) -> Vec<u64> {
    v["statuses"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

fn ms(v: &Value) -> u64 {
    v["ms"].as_u64().unwrap_or(u64::MAX)
}

/// The server sidecar's counter `name` (Envoy's `/stats` form).
fn counter(mesh: &Mesh, name: &str) -> u64 {
    mesh.stats("server")
        .lines()
        .filter(|l| l.starts_with("http.") && l.contains(name))
        .filter_map(|l| {
            l.rsplit_once(": ")
                .and_then(|(_, v)| v.trim().parse::<u64>().ok())
        })
        .sum()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A client with a sidecar requesting the server every 100 ms until stopped; its status codes.
struct Witness {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl Witness {
    fn start(ns: &str) -> Witness {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, ns) = (stop.clone(), ns.to_string());
        let thread = std::thread::spawn(move || {
            let mut codes = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let out = ns_exec(
                    &ns,
                    &[
                        "curl",
                        "-s",
                        "-o",
                        "/dev/null",
                        "-m",
                        "5",
                        "-w",
                        "%{http_code}",
                        URL,
                    ],
                );
                codes.push(String::from_utf8_lossy(&out.stdout).into_owned());
                std::thread::sleep(Duration::from_millis(100));
            }
            codes
        });
        Witness { stop, thread }
    }

    fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("witness")
    }
}

#[test]
fn hostile_input_is_refused_and_other_traffic_is_unaffected() {
    crate::netns::require_root();
    let id = next_id();
    let mut mesh = Mesh::new(id, &server_config(id, true), "", &hosts(id));
    let mut server = sidecar("server-v1", "server", "server");
    // Envoy's stream idle timeout is 5 minutes; 2 s here, so that the rows that wait on it
    // (slowloris, a body that never ends, a peer that never reads) finish quickly.
    server.extra_args = vec!["--stream-idle-timeout".into(), "2s".into()];
    mesh.add_pod("server", SERVER, Some(server));
    mesh.start_app("server");
    mesh.add_pod(
        "client",
        CLIENT,
        Some(sidecar("client", "client", "client")),
    );
    mesh.add_pod("legacy", LEGACY, None);
    let (code, body) = mesh.curl("client", URL);
    assert_eq!(code, 200, "{body}");
    let proxy_pid = mesh.pid("server", "proxy");
    let witness = Witness::start(mesh.ns("client"));
    let ip = mesh.ip(SERVER);

    // Request smuggling: both framings, two lengths, a folded header.
    let v = raw(
        &mesh,
        "cl-te",
        b"POST /upload HTTP/1.1\r\nHost: server\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: server\r\n\r\n",
    );
    // RFC 9112: Transfer-Encoding wins and Content-Length is removed before forwarding, so
    // the app reads the framing the proxy read (Envoy refuses such a request instead).
    let text = v["text"].as_str().unwrap_or_default();
    assert_eq!(statuses(&v).first(), Some(&200), "CL+TE: {v}");
    assert!(
        text.contains("\"transfer-encoding\": \"chunked\"") && !text.contains("\"content-length\""),
        "the app sees one framing: {v}"
    );
    let v = raw(
        &mesh,
        "cl-cl",
        b"POST /upload HTTP/1.1\r\nHost: server\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
    );
    assert_eq!(statuses(&v), vec![400], "two lengths: {v}");
    let v = raw(
        &mesh,
        "obs-fold",
        b"GET /hello HTTP/1.1\r\nHost: server\r\nX-Folded: a\r\n b\r\n\r\n",
    );
    assert_eq!(statuses(&v), vec![400], "obs-fold: {v}");

    // Header limits: Envoy's 60 KiB and 100 headers.
    let head = |extra: &str| {
        format!("GET /hello HTTP/1.1\r\nHost: server\r\n{extra}Connection: close\r\n\r\n")
    };
    let big = |kib: usize| format!("X-Big: {}\r\n", "a".repeat(kib * 1024));
    let v = raw(&mesh, "50k", head(&big(50)).as_bytes());
    assert_eq!(statuses(&v), vec![200], "50 KiB of headers pass: {v}");
    let v = raw(&mesh, "61k", head(&big(61)).as_bytes());
    assert_eq!(statuses(&v), vec![431], "61 KiB of headers: {v}");
    let many = |n: usize| (0..n).map(|i| format!("X-H{i}: v\r\n")).collect::<String>();
    let v = raw(&mesh, "80h", head(&many(80)).as_bytes());
    assert_eq!(statuses(&v), vec![200], "80 headers pass: {v}");
    let v = raw(&mesh, "101h", head(&many(101)).as_bytes());
    assert_eq!(statuses(&v), vec![431], "101 headers: {v}");
    assert!(
        counter(&mesh, "downstream_cx_protocol_error") >= 3,
        "{}",
        mesh.stats("server")
    );

    // Slowloris: a head trickled in is cut at the headers timeout (the stream idle timeout).
    let v = hostile(&mesh, &["slowloris", &ip, "8080", "0.2", "10"]);
    assert!(v["closed"].as_bool().unwrap_or(false), "slowloris: {v}");
    assert!(
        (1900..4500).contains(&ms(&v)),
        "slowloris cut after ~2 s: {v}"
    );
    assert!(counter(&mesh, "downstream_rq_header_timeout") >= 1);

    // A body that never ends: 408 at the stream idle timeout, flag SI.
    let v = hostile(&mesh, &["endless-body", &ip, "8080", "8"]);
    assert_eq!(statuses(&v), vec![408], "endless body: {v}");
    assert!(
        v["text"].as_str().unwrap_or("").contains("stream timeout"),
        "{v}"
    );
    let answered = v["answered_ms"].as_u64().unwrap_or(u64::MAX);
    assert!((1900..3500).contains(&answered), "408 after ~2 s: {v}");
    assert!(counter(&mesh, "downstream_rq_idle_timeout") >= 1);

    // A ClientHello that never completes: closed by the inspector's and handshake timeouts.
    let v = hostile(&mesh, &["tls-partial", &ip, "8080", "20"]);
    assert!(
        v["closed"].as_bool().unwrap_or(false),
        "partial ClientHello: {v}"
    );
    assert!(ms(&v) < 16_500, "{v}");

    // HTTP/2 rapid reset, as CVE-2023-44487 sends it: h2 refuses streams reset before they
    // are accepted (GOAWAY ENHANCE_YOUR_CALM) and the connection ends.
    let v = hostile(&mesh, &["h2-rapid-reset", &ip, "8080", "5000"]);
    assert!(
        v["goaway"].as_u64() == Some(11) || v["closed"].as_bool() == Some(true),
        "rapid reset: {v}"
    );
    // Streams reset a moment after they start (each already forwarded upstream): the
    // premature-reset guard closes the connection after 500 streams.
    let v = hostile(&mesh, &["h2-slow-reset", &ip, "8080", "1500", "/delay/1"]);
    assert!(v["closed"].as_bool().unwrap_or(false), "slow reset: {v}");
    let sent = v["sent"].as_u64().unwrap_or(u64::MAX);
    assert!((500..700).contains(&sent), "closed after ~500 streams: {v}");
    assert!(
        counter(&mesh, "downstream_rq_too_many_premature_resets") >= 1,
        "{}",
        mesh.stats("server")
    );
    // SETTINGS flood, never reading the ACKs: the proxy stops reading that connection and
    // closes it once its writes have been blocked for the stream idle timeout.
    let rss_before_flood = rss_kib(proxy_pid);
    let v = hostile(&mesh, &["h2-settings-flood", &ip, "8080", "2000000", "20"]);
    assert!(
        v["closed"].as_bool().unwrap_or(false),
        "SETTINGS flood: {v}"
    );
    let rss_after_flood = rss_kib(proxy_pid);
    println!("SETTINGS flood: proxy RSS {rss_before_flood} KiB → {rss_after_flood} KiB");
    assert!(
        rss_after_flood < rss_before_flood + 20 * 1024,
        "the flood is bounded: {rss_before_flood} KiB → {rss_after_flood} KiB"
    );

    // 10,000 idle connections: memory per connection, and other traffic still served.
    let mark = mesh.dir.path().join("idle.mark");
    let rss_before = rss_kib(proxy_pid);
    let idle = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            mesh.ns("legacy"),
            "python3",
            SCRIPT,
            "idle",
            &ip,
            "8080",
        ])
        .args(["10000", "6", &mark.to_string_lossy()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("idle client");
    wait_for(
        Duration::from_secs(60),
        "10,000 connections to open",
        || mark.exists(),
    );
    std::thread::sleep(Duration::from_secs(1));
    let rss_idle = rss_kib(proxy_pid);
    let (code, body) = mesh.curl("client", URL);
    assert_eq!(code, 200, "served beside 10,000 idle connections: {body}");
    let out = idle.wait_with_output().expect("idle client");
    let v: Value = serde_json::from_slice(&out.stdout).expect("idle report");
    assert_eq!(v["opened"].as_u64(), Some(10_000), "{v}");
    let per_conn = (rss_idle.saturating_sub(rss_before)) * 1024 / 10_000;
    println!(
        "idle connections: RSS {rss_before} KiB → {rss_idle} KiB with 10,000 open: {per_conn} bytes each; {v}"
    );
    assert!(per_conn < 16 * 1024, "{per_conn} bytes per idle connection");

    // mTLS only: plaintext is refused, and so are certificates the mesh did not issue or that
    // expired; one the mesh's CA issued passes.
    mesh.write_config(
        "strict.yaml",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: default}\nspec: {mtls: {mode: STRICT}}\n",
    );
    mesh.wait_applied("PeerAuthentication", "default");
    let direct = format!("http://{ip}:8080/hello");
    wait_for(Duration::from_secs(10), "plaintext to be refused", || {
        mesh.curl("legacy", &direct).0 == 0
    });
    let pki = mesh.dir.path().join("pki");
    std::fs::create_dir_all(&pki).expect("pki dir");
    let state = mesh.state_dir();
    // The mesh's own CA, as `mesh.pem` / `mesh.key`.
    for (from, to) in [("root-cert.pem", "mesh.pem"), ("ca-key.pem", "mesh.key")] {
        std::fs::copy(state.join(from), pki.join(to)).expect("mesh CA files");
    }
    super::pki::ca(&pki, "stranger");
    let san = "subjectAltName=URI:spiffe://cluster.local/ns/default/sa/legacy\n";
    super::pki::leaf(&pki, "stranger", "legacy", san);
    super::pki::leaf_signed_by(&pki, "valid", "legacy", san, "mesh", "1");
    super::pki::leaf_signed_by(&pki, "expired", "legacy", san, "mesh", "-1");
    let tls = |stem: &str| -> String {
        let cmd = format!(
            "printf 'GET /hello HTTP/1.1\\r\\nHost: server\\r\\nConnection: close\\r\\n\\r\\n' | timeout 10 openssl s_client -connect {ip}:8080 -alpn istio-http/1.1 -cert {d}/{stem}.pem -key {d}/{stem}.key -quiet 2>&1",
            d = pki.display()
        );
        String::from_utf8_lossy(&mesh.exec("legacy", &["sh", "-c", &cmd]).stdout).into_owned()
    };
    let ok = tls("valid");
    assert!(
        ok.contains("HTTP/1.1 200"),
        "the mesh CA's certificate passes: {ok}"
    );
    for stem in ["stranger", "expired"] {
        let out = tls(stem);
        assert!(
            !out.contains("HTTP/1.1"),
            "{stem} certificate refused: {out}"
        );
    }
    assert!(
        mesh.log("proxy-server.log")
            .contains("inbound mTLS handshake refused"),
        "the refusal is logged"
    );

    let codes = witness.finish();
    let failed: Vec<&String> = codes.iter().filter(|c| c.as_str() != "200").collect();
    assert!(
        failed.is_empty() && codes.len() > 50,
        "the witness's {} requests all succeed: {failed:?}",
        codes.len()
    );
    assert!(
        !mesh.exited("server", "proxy"),
        "the proxy is still running"
    );
    let log = mesh.log("proxy-server.log");
    assert!(!log.contains("panicked"), "no panic: {log}");
}

/// A control plane that answers ADS with bytes that are no DiscoveryResponse, then one that
/// sends a 100 MB response (over the proxy's 64 MiB limit, refused from the message's length
/// prefix before it is read): each time the proxies say why, keep their last configuration and
/// keep serving; when the real control plane returns they take config from it again.
#[test]
fn a_control_plane_that_sends_garbage_or_too_much_leaves_the_proxies_serving() {
    crate::netns::require_root();
    let mut mesh = super::client_server("");
    let (code, body) = mesh.curl("client", URL);
    assert_eq!(code, 200, "{body}");
    mesh.stop_control();
    for (mode, needle) in [
        ("garbage", "cannot decode the response"),
        ("huge", "over the limit of 67108864"),
    ] {
        let log = std::fs::File::create(mesh.dir.path().join(format!("fake-{mode}.log")))
            .expect("log file");
        let mut fake = std::process::Command::new("ip")
            .args(["netns", "exec", &mesh.cp.ns, "python3", SCRIPT, "fake-xds"])
            .args([mesh.control_addr().as_str(), mode])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("fake control plane");
        wait_for(
            Duration::from_secs(40),
            &format!("the proxy to refuse the {mode} answer"),
            || mesh.log("proxy-client.log").contains(needle),
        );
        let said = mesh.log("proxy-client.log");
        if let Some(line) = said.lines().find(|l| l.contains(needle)) {
            println!("{mode}: {line}");
        }
        let (code, body) = mesh.curl("client", URL);
        assert_eq!(
            code, 200,
            "served on the last good config beside a {mode} control plane: {body}"
        );
        let _ = fake.kill();
        let _ = fake.wait();
    }
    let log = mesh.log("proxy-client.log");
    assert!(
        log.contains("keeping the last configuration and reconnecting"),
        "{log}"
    );
    let established = |m: &Mesh| {
        m.log("proxy-client.log")
            .matches("ADS stream to the control plane established")
            .count()
    };
    let before = established(&mesh);
    mesh.start_control();
    wait_for(
        Duration::from_secs(40),
        "the proxy to reconnect to the real control plane",
        || established(&mesh) > before,
    );
    let (code, body) = mesh.curl("client", URL);
    assert_eq!(code, 200, "{body}");
    assert!(!mesh.exited("client", "proxy") && !mesh.exited("server", "proxy"));
}
