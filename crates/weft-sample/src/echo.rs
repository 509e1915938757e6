//! The echo server: HTTP/1.1 + h2c, gRPC and TCP echo in one process, with optional call
//! chains to upstream services (like Istio's echo and httpbin sample apps).

mod grpc;
mod http;
mod tcp;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ::http::HeaderMap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::chain::Chain;
use crate::error::SampleError;
use crate::server::{AccessLog, bind_all, flatten, resolve_pod, shutdown_signal};

/// Arguments of `weft sample echo`.
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct EchoArgs {
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub address: IpAddr,
    /// HTTP/1.1 + h2c port (repeatable or comma-separated; 0 picks a free port).
    #[arg(long = "http-port", value_delimiter = ',', default_values_t = [8080u16])]
    pub http_ports: Vec<u16>,
    /// gRPC port serving weft.sample.v1.Echo and grpc.health.v1.Health (repeatable).
    #[arg(long = "grpc-port", value_delimiter = ',')]
    pub grpc_ports: Vec<u16>,
    /// TCP echo port (repeatable).
    #[arg(long = "tcp-port", value_delimiter = ',')]
    pub tcp_ports: Vec<u16>,
    /// Answer each TCP line as "<prefix> <line>" instead of echoing bytes (Istio's tcp-echo).
    #[arg(long)]
    pub tcp_prefix: Option<String>,
    /// Upstream URL called (in order, HTTP/1.1 GET) for each chained request (repeatable).
    #[arg(long = "upstream")]
    pub upstreams: Vec<String>,
    /// Path prefix whose requests call the upstreams (repeatable); default: every path
    /// except /status, /delay, /headers and /healthz.
    #[arg(long = "chain-path")]
    pub chain_paths: Vec<String>,
    /// Time limit for each upstream call.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub upstream_timeout: Duration,
    /// Answer 503 when an upstream call fails (no answer or a 5xx) instead of 200.
    #[arg(long)]
    pub fail_on_upstream_error: bool,
    /// Version label reported in every answer.
    #[arg(long = "version", default_value = "v1")]
    pub version: String,
    /// Service label reported in every answer.
    #[arg(long, default_value = "echo")]
    pub service: String,
    /// Pod name reported in every answer (default: $HOSTNAME, then the host name).
    #[arg(long)]
    pub pod: Option<String>,
    /// Time allowed for in-flight requests to finish on shutdown.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// Print one line per HTTP request to stdout: `<service> <METHOD> <path> <HTTP/x> <status>
    /// host=<host> end-user=<v> x-request-id=<v> <ms>ms` (e.g. to see mirrored requests, whose
    /// host ends in `-shadow`).
    #[arg(long)]
    pub log_requests: bool,
}

impl Default for EchoArgs {
    /// The same values as the command-line defaults.
    fn default() -> Self {
        EchoArgs {
            address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            http_ports: vec![8080],
            grpc_ports: Vec::new(),
            tcp_ports: Vec::new(),
            tcp_prefix: None,
            upstreams: Vec::new(),
            chain_paths: Vec::new(),
            upstream_timeout: Duration::from_secs(3),
            fail_on_upstream_error: false,
            version: "v1".to_string(),
            service: "echo".to_string(),
            pod: None,
            drain_timeout: Duration::from_secs(5),
            log_requests: false,
        }
    }
}

/// The labels reported in every answer.
#[derive(Debug, Clone)]
pub(crate) struct Labels {
    pub(crate) pod: String,
    pub(crate) service: String,
    pub(crate) version: String,
}

/// What every HTTP connection shares.
pub(crate) struct EchoState {
    pub(crate) labels: Labels,
    pub(crate) chain: Chain,
}

/// A running echo server; dropping it stops every listener at once, [`EchoServer::shutdown`]
/// stops gracefully.
pub struct EchoServer {
    http: Vec<SocketAddr>,
    grpc: Vec<SocketAddr>,
    tcp: Vec<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<Result<(), SampleError>>,
    health: tonic_health::server::HealthReporter,
}

impl std::fmt::Debug for EchoServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoServer")
            .field("http", &self.http)
            .field("grpc", &self.grpc)
            .field("tcp", &self.tcp)
            .finish_non_exhaustive()
    }
}

impl EchoServer {
    /// Checks the arguments, binds every listener and starts serving.
    pub async fn bind(args: EchoArgs) -> Result<EchoServer, SampleError> {
        let log = if args.log_requests {
            AccessLog::stdout(&args.service)
        } else {
            AccessLog::off()
        };
        EchoServer::bind_with_log(args, log).await
    }

    /// [`EchoServer::bind`] with HTTP requests logged to `log`.
    pub(crate) async fn bind_with_log(
        args: EchoArgs,
        log: AccessLog,
    ) -> Result<EchoServer, SampleError> {
        let chain = Chain::new(
            &args.upstreams,
            &args.chain_paths,
            args.upstream_timeout,
            args.fail_on_upstream_error,
        )?;
        let labels = Labels {
            pod: resolve_pod(args.pod.as_deref()),
            service: args.service.clone(),
            version: args.version.clone(),
        };
        let http_l = bind_all(args.address, &args.http_ports, "--http-port").await?;
        let grpc_l = bind_all(args.address, &args.grpc_ports, "--grpc-port").await?;
        let tcp_l = bind_all(args.address, &args.tcp_ports, "--tcp-port").await?;

        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let state = Arc::new(EchoState {
            labels: labels.clone(),
            chain,
        });
        let http = local_addrs(&http_l);
        let grpc = local_addrs(&grpc_l);
        let tcp = local_addrs(&tcp_l);
        for l in http_l {
            tasks.spawn(http::serve(
                l,
                state.clone(),
                log.clone(),
                stop_rx.clone(),
                args.drain_timeout,
            ));
        }
        let health = grpc::health_reporter().await;
        for l in grpc_l {
            tasks.spawn(grpc::serve(
                l,
                labels.clone(),
                health.clone(),
                stop_rx.clone(),
                args.drain_timeout,
            ));
        }
        let prefix: Option<Arc<str>> = args.tcp_prefix.as_deref().map(Arc::from);
        for l in tcp_l {
            tasks.spawn(tcp::serve(l, prefix.clone(), stop_rx.clone()));
        }
        info!(
            pod = %labels.pod,
            service = %labels.service,
            version = %labels.version,
            http = ?http,
            grpc = ?grpc,
            tcp = ?tcp,
            upstreams = state.chain.len(),
            "echo server listening"
        );
        Ok(EchoServer {
            http,
            grpc,
            tcp,
            stop,
            tasks,
            health,
        })
    }

    /// The bound HTTP/1.1 + h2c addresses, in `--http-port` order.
    pub fn http_addrs(&self) -> &[SocketAddr] {
        &self.http
    }

    /// The bound gRPC addresses, in `--grpc-port` order.
    pub fn grpc_addrs(&self) -> &[SocketAddr] {
        &self.grpc
    }

    /// The bound TCP echo addresses, in `--tcp-port` order.
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp
    }

    /// Serves until `signal` completes (then shuts down gracefully) or a listener fails.
    pub async fn run_until<F: Future>(mut self, signal: F) -> Result<(), SampleError> {
        tokio::select! {
            _ = signal => {
                info!("shutting down the echo server");
            }
            Some(joined) = self.tasks.join_next() => {
                let early = match flatten(joined, "echo listener") {
                    Ok(()) => Err(SampleError::Task {
                        what: "echo listener",
                        reason: "it returned before shutdown".to_string(),
                    }),
                    Err(e) => Err(e),
                };
                let _ = self.shutdown().await;
                return early;
            }
        }
        self.shutdown().await
    }

    /// Stops accepting, lets in-flight requests finish (up to `--drain-timeout`) and waits
    /// for every listener to close.
    pub async fn shutdown(mut self) -> Result<(), SampleError> {
        grpc::mark_not_serving(&self.health).await;
        let _ = self.stop.send(true);
        let mut result = Ok(());
        while let Some(joined) = self.tasks.join_next().await {
            if let Err(e) = flatten(joined, "echo listener") {
                warn!(error = %e, "echo listener failed");
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        result
    }
}

/// Runs the echo server until SIGTERM or ctrl-c, then shuts down gracefully.
pub async fn run_echo(args: EchoArgs) -> Result<(), SampleError> {
    let signal = shutdown_signal()?;
    EchoServer::bind(args).await?.run_until(signal).await
}

fn local_addrs(ls: &[TcpListener]) -> Vec<SocketAddr> {
    // A bound listener always has a local address; fall back to nothing rather than panic.
    ls.iter().filter_map(|l| l.local_addr().ok()).collect()
}

/// Request headers as a JSON-friendly map: lower-case names, repeated values joined with ", ".
pub(crate) fn header_map(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let v = String::from_utf8_lossy(value.as_bytes());
        out.entry(name.as_str().to_string())
            .and_modify(|e| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert_with(|| v.into_owned());
    }
    out
}

/// Helpers shared by the crate's tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::EchoArgs;
    use ::http::{Request, StatusCode};
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;
    use std::net::SocketAddr;

    pub(crate) fn base() -> EchoArgs {
        EchoArgs {
            address: "127.0.0.1".parse().unwrap(),
            http_ports: vec![0],
            pod: Some("echo-v1-abc".into()),
            ..EchoArgs::default()
        }
    }

    fn client(h2: bool) -> Client<HttpConnector, Empty<Bytes>> {
        Client::builder(TokioExecutor::new())
            .http2_only(h2)
            .build_http()
    }

    pub(crate) async fn get(
        h2: bool,
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Bytes) {
        let mut b = Request::get(format!("http://{addr}{path}"));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = client(h2)
            .request(b.body(Empty::new()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.into_body().collect().await.unwrap().to_bytes())
    }

    pub(crate) async fn get_json(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, serde_json::Value) {
        let (s, b) = get(false, addr, path, headers).await;
        (s, serde_json::from_slice(&b).unwrap())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    #[command(name = "weft", version)]
    struct Cli {
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(clap::Subcommand, Debug)]
    enum Cmd {
        Echo(EchoArgs),
        Load(crate::LoadArgs),
    }

    #[test]
    fn clap_definitions_are_valid_and_defaults_match() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["weft", "echo"]).unwrap();
        let Cmd::Echo(a) = cli.cmd else {
            panic!("not echo")
        };
        assert_eq!(a, EchoArgs::default());
    }

    #[test]
    fn clap_parses_repeated_and_labels() {
        let cli = Cli::try_parse_from([
            "weft",
            "echo",
            "--http-port",
            "9080,9081",
            "--grpc-port",
            "7070",
            "--tcp-port",
            "9000",
            "--tcp-prefix",
            "one",
            "--upstream",
            "http://details:9080/",
            "--upstream",
            "http://reviews:9080/reviews",
            "--version",
            "v2",
            "--service",
            "reviews",
            "--pod",
            "reviews-v2-1",
            "--upstream-timeout",
            "500ms",
            "--fail-on-upstream-error",
            "--log-requests",
        ])
        .unwrap();
        let Cmd::Echo(a) = cli.cmd else {
            panic!("not echo")
        };
        assert_eq!(a.http_ports, vec![9080, 9081]);
        assert_eq!(a.grpc_ports, vec![7070]);
        assert_eq!(a.tcp_ports, vec![9000]);
        assert_eq!(a.tcp_prefix.as_deref(), Some("one"));
        assert_eq!(a.upstreams.len(), 2);
        assert_eq!(a.version, "v2");
        assert_eq!(a.service, "reviews");
        assert_eq!(a.pod.as_deref(), Some("reviews-v2-1"));
        assert_eq!(a.upstream_timeout, Duration::from_millis(500));
        assert!(a.fail_on_upstream_error);
        assert!(a.log_requests);
    }

    #[test]
    fn pod_flag_wins() {
        assert_eq!(resolve_pod(Some("p-1")), "p-1");
        assert!(!resolve_pod(None).is_empty());
    }

    #[test]
    fn repeated_headers_are_joined() {
        let mut h = HeaderMap::new();
        h.append("x-a", "1".parse().unwrap());
        h.append("x-a", "2".parse().unwrap());
        h.insert("x-b", "3".parse().unwrap());
        let m = header_map(&h);
        assert_eq!(m["x-a"], "1, 2");
        assert_eq!(m["x-b"], "3");
    }

    #[tokio::test]
    async fn bind_conflict_names_the_flag() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = taken.local_addr().unwrap().port();
        let args = EchoArgs {
            address: "127.0.0.1".parse().unwrap(),
            http_ports: vec![port],
            ..EchoArgs::default()
        };
        let err = EchoServer::bind(args).await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("address in use"), "{msg}");
        assert!(msg.ends_with("choose another --http-port"), "{msg}");
    }

    #[tokio::test]
    async fn shutdown_closes_listeners() {
        let args = EchoArgs {
            address: "127.0.0.1".parse().unwrap(),
            http_ports: vec![0],
            grpc_ports: vec![0],
            tcp_ports: vec![0],
            ..EchoArgs::default()
        };
        let server = EchoServer::bind(args).await.unwrap();
        let addrs: Vec<SocketAddr> =
            [server.http_addrs(), server.grpc_addrs(), server.tcp_addrs()].concat();
        assert_eq!(addrs.len(), 3);
        assert!(addrs.iter().all(|a| a.port() != 0));
        server
            .run_until(tokio::time::sleep(Duration::from_millis(50)))
            .await
            .unwrap();
        for a in addrs {
            assert!(
                tokio::net::TcpStream::connect(a).await.is_err(),
                "{a} still open"
            );
        }
    }
}
