//! Istio's bookinfo sample (samples/bookinfo/src), one app per process: productpage (the
//! HTML page, login and the JSON API), details, reviews v1/v2/v3 and ratings, answering and
//! calling each other as Istio's apps do — the same paths, JSON, client timeouts, productpage's
//! retry of reviews, error messages and propagated headers — so the istio.io traffic-management
//! tasks read the same on Weft.

mod details;
mod page;
mod productpage;
mod ratings;
mod reviews;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::chain::parse_http_url;
use crate::error::SampleError;
use crate::server::{self, AccessLog, Body, bind_all, flatten, shutdown_signal, text};

/// Largest request body read (login forms, ratings posted as JSON).
const MAX_REQUEST_BODY: usize = 1 << 20;

/// Which bookinfo app to run.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookinfoApp {
    /// The HTML page, login/logout and the /api/v1/products API; calls details and reviews.
    Productpage,
    /// Book details (/details/<id>).
    Details,
    /// Book reviews (/reviews/<id>); v2 and v3 call ratings.
    Reviews,
    /// Book ratings (/ratings/<id>).
    Ratings,
}

impl BookinfoApp {
    fn name(self) -> &'static str {
        match self {
            BookinfoApp::Productpage => "productpage",
            BookinfoApp::Details => "details",
            BookinfoApp::Reviews => "reviews",
            BookinfoApp::Ratings => "ratings",
        }
    }
}

/// Arguments of `weft sample bookinfo`.
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct BookinfoArgs {
    /// The app: productpage, details, reviews or ratings.
    #[arg(value_enum)]
    pub app: BookinfoApp,
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub address: IpAddr,
    /// Port to listen on (HTTP/1.1 and h2c).
    #[arg(long, default_value_t = 9080)]
    pub port: u16,
    /// The version. For reviews: v1 (no ratings), v2 (calls ratings, black stars) or v3
    /// (calls ratings, red stars); for the other apps only a label in the log.
    #[arg(long = "version", default_value = "v1")]
    pub version: String,
    /// Base URL of details (productpage calls <URL>/details/<id>).
    #[arg(long, env = "DETAILS_URL", default_value = "http://details:9080")]
    pub details_url: String,
    /// Base URL of reviews (productpage calls <URL>/reviews/<id>).
    #[arg(long, env = "REVIEWS_URL", default_value = "http://reviews:9080")]
    pub reviews_url: String,
    /// Base URL of ratings (reviews v2/v3 and productpage's ratings API call <URL>/ratings/<id>).
    #[arg(long, env = "RATINGS_URL", default_value = "http://ratings:9080")]
    pub ratings_url: String,
    /// productpage: time limit of each call to details, reviews and ratings (bookinfo's 3s;
    /// reviews is tried twice).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// reviews: time limit of the call to ratings (default as bookinfo: 10s for v2, 2.5s for
    /// v3).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ratings_timeout: Option<Duration>,
    /// reviews: the pod name in its answers (default: $HOSTNAME, then the host name).
    #[arg(long)]
    pub pod: Option<String>,
    /// reviews: the cluster name in its answers.
    #[arg(long, env = "CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// Time allowed for in-flight requests to finish on shutdown.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
}

impl BookinfoArgs {
    /// Arguments for `app` with the command-line defaults (environment variables not read).
    pub fn new(app: BookinfoApp) -> BookinfoArgs {
        BookinfoArgs {
            app,
            address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 9080,
            version: "v1".to_string(),
            details_url: "http://details:9080".to_string(),
            reviews_url: "http://reviews:9080".to_string(),
            ratings_url: "http://ratings:9080".to_string(),
            timeout: Duration::from_secs(3),
            ratings_timeout: None,
            pod: None,
            cluster_name: None,
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// One app's request handling.
enum App {
    Productpage(productpage::Productpage),
    Details,
    Reviews(reviews::Reviews),
    Ratings(ratings::Ratings),
}

impl App {
    fn new(args: &BookinfoArgs) -> Result<App, SampleError> {
        Ok(match args.app {
            BookinfoApp::Productpage => App::Productpage(productpage::Productpage::new(args)?),
            BookinfoApp::Details => App::Details,
            BookinfoApp::Reviews => App::Reviews(reviews::Reviews::new(args)?),
            BookinfoApp::Ratings => App::Ratings(ratings::Ratings::default()),
        })
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    &format!("cannot read the request body (at most 1 MiB): {e}"),
                );
            }
        };
        match self {
            App::Productpage(p) => p.handle(&parts, &body).await,
            App::Details => details::handle(&parts),
            App::Reviews(r) => r.handle(&parts).await,
            App::Ratings(r) => r.handle(&parts, &body),
        }
    }
}

/// A running bookinfo app; dropping it stops its listener at once, [`BookinfoServer::shutdown`]
/// stops gracefully.
#[derive(Debug)]
pub struct BookinfoServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: JoinSet<Result<(), SampleError>>,
}

impl BookinfoServer {
    /// Checks the arguments, binds the port and starts serving, logging each request to stdout.
    pub async fn bind(args: BookinfoArgs) -> Result<BookinfoServer, SampleError> {
        let log = AccessLog::stdout(args.app.name());
        BookinfoServer::bind_with_log(args, log).await
    }

    pub(crate) async fn bind_with_log(
        args: BookinfoArgs,
        log: AccessLog,
    ) -> Result<BookinfoServer, SampleError> {
        let app = Arc::new(App::new(&args)?);
        let mut listeners = bind_all(args.address, &[args.port], "--port").await?;
        let listener = listeners.pop().ok_or_else(|| SampleError::Task {
            what: "bookinfo listener",
            reason: "no listener was bound".to_string(),
        })?;
        let addr = listener.local_addr().map_err(|source| SampleError::Bind {
            addr: SocketAddr::new(args.address, args.port),
            flag: "--port",
            source,
        })?;
        let (stop, stop_rx) = watch::channel(false);
        let handler = move |req| {
            let app = app.clone();
            async move { app.handle(req).await }
        };
        let mut tasks = JoinSet::new();
        tasks.spawn(server::serve(
            listener,
            handler,
            log,
            stop_rx,
            args.drain_timeout,
        ));
        info!(app = args.app.name(), version = %args.version, %addr, "bookinfo app listening");
        Ok(BookinfoServer { addr, stop, tasks })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `signal` completes (then shuts down gracefully) or the listener fails.
    pub async fn run_until<F: Future>(mut self, signal: F) -> Result<(), SampleError> {
        tokio::select! {
            _ = signal => {
                info!("shutting down the bookinfo app");
            }
            Some(joined) = self.tasks.join_next() => {
                flatten(joined, "bookinfo listener")?;
                return Err(SampleError::Task {
                    what: "bookinfo listener",
                    reason: "it returned before shutdown".to_string(),
                });
            }
        }
        self.shutdown().await
    }

    /// Stops accepting, lets in-flight requests finish (up to `--drain-timeout`) and waits
    /// for the listener to close.
    pub async fn shutdown(mut self) -> Result<(), SampleError> {
        let _ = self.stop.send(true);
        let mut result = Ok(());
        while let Some(joined) = self.tasks.join_next().await {
            if let Err(e) = flatten(joined, "bookinfo listener") {
                warn!(error = %e, "bookinfo listener failed");
                result = result.and(Err(e));
            }
        }
        result
    }
}

/// Runs a bookinfo app until SIGTERM or ctrl-c, then shuts down gracefully.
pub async fn run_bookinfo(args: BookinfoArgs) -> Result<(), SampleError> {
    let signal = shutdown_signal()?;
    BookinfoServer::bind(args).await?.run_until(signal).await
}

/// A checked service base URL, e.g. `http://details:9080`, that paths are appended to.
#[derive(Debug, Clone)]
struct ServiceUrl(String);

impl ServiceUrl {
    fn new(flag: &'static str, url: &str) -> Result<ServiceUrl, SampleError> {
        let bad = |reason: String| SampleError::ServiceUrl {
            flag,
            url: url.to_string(),
            reason,
        };
        let uri = parse_http_url(url).map_err(bad)?;
        if uri.query().is_some() {
            return Err(bad("a base URL takes no query".to_string()));
        }
        Ok(ServiceUrl(url.trim_end_matches('/').to_string()))
    }

    /// `<base>/<endpoint>/<id>`.
    fn join(&self, endpoint: &str, id: &str) -> Result<Uri, String> {
        let url = format!("{}/{endpoint}/{id}", self.0);
        url.parse().map_err(|_| format!("{url:?} is not a URL"))
    }
}

/// What a call to another bookinfo app gave: its JSON on a 200, else the status (`None`
/// when no answer came) — the two cases bookinfo's apps tell apart.
type Fetched = Result<Value, Option<StatusCode>>;

/// GETs `<base>/<endpoint>/<id>` with `headers` within `timeout`.
async fn fetch(
    client: &Client<HttpConnector, Empty<Bytes>>,
    base: &ServiceUrl,
    endpoint: &str,
    id: &str,
    headers: &HeaderMap,
    timeout: Duration,
) -> Fetched {
    let uri = base.join(endpoint, id).map_err(|e| {
        warn!(error = %e, "cannot call {endpoint}");
        None
    })?;
    match crate::chain::get(client, uri.clone(), headers, timeout).await {
        Ok((StatusCode::OK, body)) => serde_json::from_slice(&body).map_err(|e| {
            warn!(%uri, error = %e, "the answer is not JSON");
            Some(StatusCode::INTERNAL_SERVER_ERROR)
        }),
        Ok((status, _)) => {
            warn!(%uri, %status, "unable to contact {endpoint}");
            Err(Some(status))
        }
        Err(e) => {
            warn!(%uri, error = %e, "unable to contact {endpoint}");
            Err(None)
        }
    }
}

/// A compact JSON answer, as bookinfo's apps write theirs.
fn json(status: StatusCode, value: &Value) -> Response<Body> {
    server::respond(status, "application/json", Bytes::from(value.to_string()))
}

/// The request's path segments after `prefix`, if its path starts with it.
fn segments_after<'a>(parts: &'a Parts, prefix: &str) -> Option<Vec<&'a str>> {
    parts
        .uri
        .path()
        .strip_prefix(prefix)
        .map(|rest| rest.split('/').collect())
}

#[cfg(test)]
pub(crate) mod testing {
    //! Bookinfo apps on loopback ports, wired together, for the tests.

    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::{BookinfoApp, BookinfoArgs, BookinfoServer};
    use crate::server::AccessLog;

    /// A started app and its access log lines.
    pub(crate) struct Started {
        pub(crate) server: BookinfoServer,
        pub(crate) log: Arc<Mutex<Vec<String>>>,
    }

    impl Started {
        pub(crate) fn url(&self) -> String {
            format!("http://{}", self.server.addr())
        }

        pub(crate) fn lines(&self) -> Vec<String> {
            self.log.lock().map(|l| l.clone()).unwrap_or_default()
        }
    }

    pub(crate) fn args(app: BookinfoApp) -> BookinfoArgs {
        BookinfoArgs {
            address: "127.0.0.1".parse().unwrap(),
            port: 0,
            pod: Some(format!("{app:?}-test").to_lowercase()),
            ..BookinfoArgs::new(app)
        }
    }

    pub(crate) async fn start(args: BookinfoArgs) -> Started {
        let (log, lines) = AccessLog::memory(&format!("{:?}", args.app).to_lowercase());
        let server = BookinfoServer::bind_with_log(args, log).await.unwrap();
        Started { server, log: lines }
    }

    /// A URL where nothing listens.
    pub(crate) async fn nothing_there() -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        format!("http://{addr}")
    }

    /// A server that accepts connections and never answers (like a delay fault); the number
    /// of connections it accepted.
    pub(crate) async fn silent() -> (String, Arc<Mutex<u32>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = l.local_addr().unwrap();
        let count = Arc::new(Mutex::new(0u32));
        let c = count.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                if let Ok(mut n) = c.lock() {
                    *n += 1;
                }
                held.push(s);
            }
        });
        (format!("http://{addr}"), count)
    }

    /// ratings, reviews (of `version`), details and productpage wired together.
    pub(crate) struct Mesh {
        pub(crate) ratings: Option<Started>,
        pub(crate) reviews: Started,
        pub(crate) details: Started,
        pub(crate) productpage: Started,
    }

    pub(crate) async fn mesh(version: &str) -> Mesh {
        let ratings = start(args(BookinfoApp::Ratings)).await;
        let reviews = start(BookinfoArgs {
            version: version.to_string(),
            ratings_url: ratings.url(),
            ..args(BookinfoApp::Reviews)
        })
        .await;
        let details = start(args(BookinfoApp::Details)).await;
        let productpage = start(BookinfoArgs {
            details_url: details.url(),
            reviews_url: reviews.url(),
            ratings_url: ratings.url(),
            timeout: Duration::from_secs(3),
            ..args(BookinfoApp::Productpage)
        })
        .await;
        Mesh {
            ratings: Some(ratings),
            reviews,
            details,
            productpage,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{args, start};
    use super::*;
    use crate::echo::testing::get;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(clap::Subcommand, Debug)]
    enum Cmd {
        Bookinfo(BookinfoArgs),
    }

    #[test]
    fn clap_defaults_match_new() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let Cmd::Bookinfo(a) = Cli::try_parse_from(["weft", "bookinfo", "details"])
            .unwrap()
            .cmd;
        assert_eq!(a, BookinfoArgs::new(BookinfoApp::Details));
        let Cmd::Bookinfo(a) = Cli::try_parse_from([
            "weft",
            "bookinfo",
            "reviews",
            "--version",
            "v3",
            "--port",
            "9081",
            "--ratings-url",
            "http://127.0.0.1:9082",
            "--ratings-timeout",
            "500ms",
        ])
        .unwrap()
        .cmd;
        assert_eq!(a.app, BookinfoApp::Reviews);
        assert_eq!(a.version, "v3");
        assert_eq!(a.port, 9081);
        assert_eq!(a.ratings_url, "http://127.0.0.1:9082");
        assert_eq!(a.ratings_timeout, Some(Duration::from_millis(500)));
        assert!(Cli::try_parse_from(["weft", "bookinfo", "frontend"]).is_err());
    }

    #[tokio::test]
    async fn bad_arguments_are_errors() {
        let e = BookinfoServer::bind(BookinfoArgs {
            version: "v4".into(),
            ..args(BookinfoApp::Reviews)
        })
        .await
        .unwrap_err();
        assert!(
            matches!(e, SampleError::ReviewsVersion(ref v) if v == "v4"),
            "{e}"
        );
        let e = BookinfoServer::bind(BookinfoArgs {
            details_url: "details:9080".into(),
            ..args(BookinfoApp::Productpage)
        })
        .await
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid --details-url \"details:9080\""),
            "{e}"
        );
        let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let e = BookinfoServer::bind(BookinfoArgs {
            port: taken.local_addr().unwrap().port(),
            ..args(BookinfoApp::Ratings)
        })
        .await
        .unwrap_err();
        assert!(e.to_string().ends_with("choose another --port"), "{e}");
    }

    #[test]
    fn service_urls_join_paths() {
        let u = ServiceUrl::new("--details-url", "http://details:9080/").unwrap();
        assert_eq!(
            u.join("details", "0").unwrap().to_string(),
            "http://details:9080/details/0"
        );
        assert!(ServiceUrl::new("--details-url", "http://details:9080/?a=1").is_err());
        assert!(ServiceUrl::new("--details-url", "https://details").is_err());
    }

    #[tokio::test]
    async fn requests_are_logged_one_line_each() {
        let s = start(args(BookinfoApp::Details)).await;
        let addr = s.server.addr();
        get(false, addr, "/details/0", &[("end-user", "jason")]).await;
        get(false, addr, "/nothing", &[]).await;
        let lines = s.lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        let host = addr.to_string();
        assert!(
            lines[0].starts_with(&format!(
                "details GET /details/0 HTTP/1.1 200 host={host} end-user=jason x-request-id=- "
            )),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with("details GET /nothing HTTP/1.1 404 "),
            "{lines:?}"
        );
    }

    #[tokio::test]
    async fn shutdown_closes_the_port() {
        let s = start(args(BookinfoApp::Ratings)).await;
        let addr = s.server.addr();
        s.server
            .run_until(tokio::time::sleep(Duration::from_millis(20)))
            .await
            .unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
