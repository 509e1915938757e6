//! productpage (bookinfo's productpage.py): the index page, the product page (details and
//! reviews of the book), sign in and out, and the `/api/v1/products` API.
//!
//! Like productpage.py it calls details once and reviews up to twice (the retry kept in
//! bookinfo for the fault-injection task), each call limited to 3 s, one after the other, and
//! shows bookinfo's messages when they fail. A signed-in user (the `session` cookie, here
//! carrying the user name) is sent to details and reviews as `end-user`, the header the
//! request-routing task matches on; the other propagated headers are copied from the request.

use std::time::Duration;

use bytes::Bytes;
use http::header::{COOKIE, LOCATION, REFERER, SET_COOKIE};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use super::page::{self, Outcome};
use super::{BookinfoArgs, Fetched, ServiceUrl, fetch};
use crate::chain::{client, forward_headers};
use crate::error::SampleError;
use crate::server::{Body, html, text};

/// The page's message when details fails.
pub(crate) const DETAILS_UNAVAILABLE: &str =
    "Sorry, product details are currently unavailable for this book.";
/// The page's message when reviews fails twice.
pub(crate) const REVIEWS_UNAVAILABLE: &str =
    "Sorry, product reviews are currently unavailable for this book.";
/// The ratings API's message when ratings fails.
const RATINGS_UNAVAILABLE: &str = "Sorry, product ratings are currently unavailable for this book.";
/// The cookie that keeps the signed-in user.
const SESSION: &str = "session";
/// Calls to reviews per request: productpage.py tries twice.
const REVIEWS_ATTEMPTS: usize = 2;

pub(super) struct Productpage {
    details: ServiceUrl,
    reviews: ServiceUrl,
    ratings: ServiceUrl,
    timeout: Duration,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Productpage {
    pub(super) fn new(args: &BookinfoArgs) -> Result<Productpage, SampleError> {
        Ok(Productpage {
            details: ServiceUrl::new("--details-url", &args.details_url)?,
            reviews: ServiceUrl::new("--reviews-url", &args.reviews_url)?,
            ratings: ServiceUrl::new("--ratings-url", &args.ratings_url)?,
            timeout: args.timeout,
            // productpage.py does not pool connections, so calls spread over the backends.
            client: client(args.timeout, false),
        })
    }

    /// Answers one request.
    pub(super) async fn handle(&self, parts: &Parts, body: &Bytes) -> Response<Body> {
        let path = parts.uri.path();
        if path == "/login" {
            return if parts.method == Method::POST {
                login(parts, body)
            } else {
                text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
            };
        }
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
        }
        match path {
            "/" | "/index.html" => html(StatusCode::OK, page::index(&self.graph())),
            "/health" => text(StatusCode::OK, "Product page is healthy"),
            "/logout" => redirect(parts, format!("{SESSION}=; Max-Age=0; Path=/")),
            "/productpage" => self.front(parts).await,
            "/api/v1/products" => super::json(StatusCode::OK, &products()),
            _ => match path.strip_prefix("/api/v1/products/") {
                Some(rest) => self.api(rest, parts).await,
                None => text(StatusCode::NOT_FOUND, "Not Found"),
            },
        }
    }

    /// The product page.
    async fn front(&self, parts: &Parts) -> Response<Body> {
        let headers = self.outgoing(parts);
        let user = session_user(&parts.headers);
        let details = self.details("0", &headers).await;
        let reviews = self.reviews("0", &headers).await;
        let product = &products()[0];
        html(
            StatusCode::OK,
            page::product(product, &details, &reviews, user.as_deref()),
        )
    }

    /// `/api/v1/products/<id>[/reviews|/ratings]`: the other app's JSON, or the error.
    async fn api(&self, rest: &str, parts: &Parts) -> Response<Body> {
        let headers = self.outgoing(parts);
        let outcome = match rest.split('/').collect::<Vec<_>>()[..] {
            [id] if !id.is_empty() => self.details(id, &headers).await,
            [id, "reviews"] if !id.is_empty() => self.reviews(id, &headers).await,
            [id, "ratings"] if !id.is_empty() => outcome(
                fetch(
                    &self.client,
                    &self.ratings,
                    "ratings",
                    id,
                    &headers,
                    self.timeout,
                )
                .await,
                RATINGS_UNAVAILABLE,
            ),
            _ => return text(StatusCode::NOT_FOUND, "Not Found"),
        };
        let status =
            StatusCode::from_u16(outcome.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        super::json(status, &outcome.body)
    }

    async fn details(&self, id: &str, headers: &HeaderMap) -> Outcome {
        let f = fetch(
            &self.client,
            &self.details,
            "details",
            id,
            headers,
            self.timeout,
        )
        .await;
        outcome(f, DETAILS_UNAVAILABLE)
    }

    async fn reviews(&self, id: &str, headers: &HeaderMap) -> Outcome {
        let mut last = None;
        for _ in 0..REVIEWS_ATTEMPTS {
            match fetch(
                &self.client,
                &self.reviews,
                "reviews",
                id,
                headers,
                self.timeout,
            )
            .await
            {
                Ok(body) => return Outcome { status: 200, body },
                Err(status) => last = status,
            }
        }
        outcome(Err(last), REVIEWS_UNAVAILABLE)
    }

    /// The headers of calls made for `parts`: the propagated ones, with `end-user` only
    /// from the session (as productpage.py).
    fn outgoing(&self, parts: &Parts) -> HeaderMap {
        let mut headers = forward_headers(&parts.headers);
        let end_user = HeaderName::from_static("end-user");
        headers.remove(&end_user);
        if let Some(v) =
            session_user(&parts.headers).and_then(|u| HeaderValue::from_bytes(u.as_bytes()).ok())
        {
            headers.insert(end_user, v);
        }
        headers
    }

    /// The service graph shown on the index page (productpage.py's dictionaries).
    fn graph(&self) -> Value {
        let node = |url: &ServiceUrl, endpoint: &str, children: Value| json!({"name": url.0, "endpoint": endpoint, "children": children});
        let ratings = node(&self.ratings, "ratings", json!([]));
        node(
            &self.details,
            "details",
            json!([
                node(&self.details, "details", json!([])),
                node(&self.reviews, "reviews", json!([ratings])),
            ]),
        )
    }
}

/// A call's outcome for the page: the JSON on success, else the status (500 when no answer
/// came) and bookinfo's message.
fn outcome(f: Fetched, message: &str) -> Outcome {
    match f {
        Ok(body) => Outcome { status: 200, body },
        Err(status) => Outcome {
            status: status.map_or(500, |s| s.as_u16()),
            body: json!({ "error": message }),
        },
    }
}

/// productpage.py's one product.
fn products() -> Value {
    json!([{
        "id": 0,
        "title": "The Comedy of Errors",
        "descriptionHtml": "<a href=\"https://en.wikipedia.org/wiki/The_Comedy_of_Errors\">Wikipedia Summary</a>: The Comedy of Errors is one of <b>William Shakespeare's</b> early plays. It is his shortest and one of his most farcical comedies, with a major part of the humour coming from slapstick and mistaken identity, in addition to puns and word play.",
    }])
}

/// `POST /login` with `username` (query or form): signs the user in and goes back.
fn login(parts: &Parts, body: &Bytes) -> Response<Body> {
    let user = parts
        .uri
        .query()
        .and_then(|q| form_value(q, "username"))
        .or_else(|| form_value(&String::from_utf8_lossy(body), "username"))
        .filter(|u| !u.is_empty());
    let cookie = match user {
        Some(u) => format!("{SESSION}={}; Path=/; HttpOnly", percent_encode(&u)),
        None => format!("{SESSION}=; Max-Age=0; Path=/"),
    };
    redirect(parts, cookie)
}

/// A 302 back to the referring page (the product page when there is none), setting `cookie`.
fn redirect(parts: &Parts, cookie: String) -> Response<Body> {
    let location = parts
        .headers
        .get(REFERER)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("/productpage"));
    let mut r = text(StatusCode::FOUND, "Redirecting...");
    r.headers_mut().insert(LOCATION, location);
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(SET_COOKIE, v);
    }
    r
}

/// The signed-in user: the `session` cookie's value.
fn session_user(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(SESSION)?.strip_prefix('='))
        .filter_map(|v| percent_decode(v, false))
        .find(|u| !u.is_empty())
}

/// The value of `key` in an `application/x-www-form-urlencoded` string.
fn form_value(form: &str, key: &str) -> Option<String> {
    form.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k, true)? == key)
            .then(|| percent_decode(v, true))
            .flatten()
    })
}

/// `%XX`-decodes `s` (and `+` as a space in forms); `None` when it is not UTF-8 after.
fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let hex = |c: u8| (c as char).to_digit(16);
        if b == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|&c| hex(c)),
                bytes.get(i + 2).and_then(|&c| hex(c)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(if plus_is_space && b == b'+' { b' ' } else { b });
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// `%XX`-encodes everything but unreserved characters (so any user name fits in a cookie).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use http::{HeaderMap, Method, Request, StatusCode};
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    use super::super::reviews::RATINGS_UNAVAILABLE;
    use super::super::testing::{args, mesh, nothing_there, silent, start};
    use super::super::{BookinfoApp, BookinfoArgs};
    use super::*;

    async fn call(
        method: Method,
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        body: &'static str,
    ) -> (StatusCode, HeaderMap, String) {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        let resp = Client::builder(TokioExecutor::new())
            .build_http()
            .request(req)
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    async fn page(addr: SocketAddr, headers: &[(&str, &str)]) -> String {
        let (status, _, body) = call(Method::GET, addr, "/productpage", headers, "").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    const RED: &str = "<font color=\"red\">";
    const BLACK: &str = "<font color=\"black\">";
    const FULL_STAR: &str = "<span class=\"glyphicon glyphicon-star\"></span>";
    const EMPTY_STAR: &str = "<span class=\"glyphicon glyphicon-star-empty\"></span>";

    #[tokio::test]
    async fn product_page_shows_details_and_stars_of_each_version() {
        for (version, color) in [("v1", None), ("v2", Some(BLACK)), ("v3", Some(RED))] {
            let m = mesh(version).await;
            let body = page(m.productpage.server.addr(), &[]).await;
            assert!(
                body.contains("<title>Simple Bookstore App</title>"),
                "{body}"
            );
            assert!(body.contains(">The Comedy of Errors</h3>"), "{body}");
            assert!(body.contains("Book Details"), "{body}");
            assert!(body.contains("<dt>Type:</dt>paperback"), "{body}");
            assert!(body.contains("<dt>Pages:</dt>200"), "{body}");
            assert!(body.contains("<dt>ISBN-13:</dt>123-1234567890"), "{body}");
            assert!(body.contains("Book Reviews"), "{body}");
            assert!(body.contains("<small>Reviewer1</small>"), "{body}");
            assert!(body.contains("<small>Reviewer2</small>"), "{body}");
            assert!(!body.contains("unavailable"), "{body}");
            assert!(body.contains("name=\"login_form\""), "{body}");
            match color {
                None => {
                    assert!(!body.contains("glyphicon-star"), "{version}: {body}");
                    assert!(!body.contains("<font"), "{version}: {body}");
                    assert!(m.ratings.as_ref().unwrap().lines().is_empty());
                }
                Some(color) => {
                    // Reviewer1 5 stars, Reviewer2 4: two ratings blocks in the version's color.
                    assert_eq!(body.matches(color).count(), 2, "{version}: {body}");
                    assert_eq!(body.matches("<font").count(), 2, "{version}: {body}");
                    assert_eq!(body.matches(FULL_STAR).count(), 9, "{version}: {body}");
                    assert_eq!(body.matches(EMPTY_STAR).count(), 1, "{version}: {body}");
                    assert_eq!(body.matches("glyphicon-star").count(), 10, "{version}");
                    assert_eq!(m.ratings.as_ref().unwrap().lines().len(), 1);
                }
            }
            // One call each to details and reviews, logged by each app.
            let d = m.details.lines();
            assert_eq!(d.len(), 1, "{d:?}");
            assert!(
                d[0].starts_with("details GET /details/0 HTTP/1.1 200 "),
                "{d:?}"
            );
            let r = m.reviews.lines();
            assert_eq!(r.len(), 1, "{r:?}");
            assert!(
                r[0].starts_with("reviews GET /reviews/0 HTTP/1.1 200 "),
                "{r:?}"
            );
            let p = m.productpage.lines();
            assert!(
                p[0].starts_with("productpage GET /productpage HTTP/1.1 200 "),
                "{p:?}"
            );
        }
    }

    #[tokio::test]
    async fn ratings_down_shows_ratings_unavailable() {
        let mut m = mesh("v3").await;
        assert!(page(m.productpage.server.addr(), &[]).await.contains(RED));
        // Stop ratings: reviews v3 answers without stars, with the ratings error instead.
        drop(m.ratings.take());
        let body = page(m.productpage.server.addr(), &[]).await;
        assert!(body.contains("Book Reviews"), "{body}");
        assert_eq!(
            body.matches(&format!("<p><i>{RATINGS_UNAVAILABLE}</i></p>"))
                .count(),
            2,
            "{body}"
        );
        assert!(!body.contains("glyphicon-star"), "{body}");
        assert!(body.contains("<dt>Type:</dt>paperback"), "{body}");
    }

    #[tokio::test]
    async fn login_sends_end_user_to_details_and_reviews() {
        let m = mesh("v2").await;
        let addr = m.productpage.server.addr();
        let (status, headers, _) = call(
            Method::POST,
            addr,
            "/login",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("referer", "http://productpage:9080/productpage"),
            ],
            "username=jason&passwd=",
        )
        .await;
        assert_eq!(status, StatusCode::FOUND);
        assert_eq!(headers[LOCATION], "http://productpage:9080/productpage");
        let cookie = headers[SET_COOKIE].to_str().unwrap();
        assert!(cookie.starts_with("session=jason;"), "{cookie}");

        let body = page(addr, &[("cookie", "theme=dark; session=jason")]).await;
        assert!(
            body.contains("jason ( <a href=\"logout\">sign out</a> )"),
            "{body}"
        );
        assert!(!body.contains("login_form"), "{body}");
        let r = m.reviews.lines();
        assert!(r[0].contains(" end-user=jason "), "{r:?}");
        assert!(m.details.lines()[0].contains(" end-user=jason "));
        // reviews forwards it to ratings in turn.
        assert!(m.ratings.as_ref().unwrap().lines()[0].contains(" end-user=jason "));

        // Not signed in: an end-user header sent to productpage is not passed on (only the
        // session sets it, as in productpage.py).
        page(addr, &[("end-user", "mallory")]).await;
        assert!(
            m.reviews.lines()[1].contains(" end-user=- "),
            "{:?}",
            m.reviews.lines()
        );

        let (status, headers, _) = call(Method::GET, addr, "/logout", &[], "").await;
        assert_eq!(status, StatusCode::FOUND);
        assert_eq!(headers[LOCATION], "/productpage");
        assert!(headers[SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
        let (status, _, _) = call(Method::GET, addr, "/login", &[], "").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn propagated_headers_reach_every_app() {
        let m = mesh("v3").await;
        page(
            m.productpage.server.addr(),
            &[("x-request-id", "req-7"), ("x-b3-traceid", "abc")],
        )
        .await;
        for lines in [
            m.details.lines(),
            m.reviews.lines(),
            m.ratings.as_ref().unwrap().lines(),
        ] {
            assert!(lines[0].contains(" x-request-id=req-7 "), "{lines:?}");
        }
    }

    #[tokio::test]
    async fn details_down_shows_the_details_error() {
        let reviews = start(args(BookinfoApp::Reviews)).await;
        let p = start(BookinfoArgs {
            details_url: nothing_there().await,
            reviews_url: reviews.url(),
            ..args(BookinfoApp::Productpage)
        })
        .await;
        let body = page(p.server.addr(), &[]).await;
        assert!(body.contains("Error fetching product details!"), "{body}");
        assert!(
            body.contains(&format!("<p>{DETAILS_UNAVAILABLE}</p>")),
            "{body}"
        );
        assert!(body.contains("Book Reviews"), "{body}");
        let (status, _, json) =
            call(Method::GET, p.server.addr(), "/api/v1/products/0", &[], "").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(json.contains(DETAILS_UNAVAILABLE), "{json}");
    }

    #[tokio::test]
    async fn slow_reviews_are_tried_twice_then_reported() {
        // reviews never answers (like a delay fault): productpage waits its timeout, tries
        // once more, then shows bookinfo's message.
        let (url, connections) = silent().await;
        let details = start(args(BookinfoApp::Details)).await;
        let p = start(BookinfoArgs {
            details_url: details.url(),
            reviews_url: url,
            timeout: Duration::from_millis(300),
            ..args(BookinfoApp::Productpage)
        })
        .await;
        let started = Instant::now();
        let body = page(p.server.addr(), &[]).await;
        let took = started.elapsed();
        assert!(body.contains("Error fetching product reviews!"), "{body}");
        assert!(
            body.contains(&format!("<p>{REVIEWS_UNAVAILABLE}</p>")),
            "{body}"
        );
        assert!(body.contains("<dt>Type:</dt>paperback"), "{body}");
        assert!(took >= Duration::from_millis(600), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        assert_eq!(*connections.lock().unwrap(), 2);
    }

    #[tokio::test]
    async fn api_index_and_health() {
        let m = mesh("v2").await;
        let addr = m.productpage.server.addr();
        let get = |path: &'static str| call(Method::GET, addr, path, &[], "");
        let (status, _, body) = get("/api/v1/products").await;
        assert_eq!(status, StatusCode::OK);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v[0]["id"], 0);
        assert_eq!(v[0]["title"], "The Comedy of Errors");
        let (status, _, body) = get("/api/v1/products/0").await;
        assert_eq!(status, StatusCode::OK);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["publisher"], "PublisherA");
        let (status, _, body) = get("/api/v1/products/0/reviews").await;
        assert_eq!(status, StatusCode::OK);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["reviews"][0]["rating"]["color"], "black");
        let (status, _, body) = get("/api/v1/products/0/ratings").await;
        assert_eq!(status, StatusCode::OK);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["ratings"]["Reviewer2"], 4);
        // details' 400 for a non-numeric id comes back with productpage's message.
        let (status, _, body) = get("/api/v1/products/abc").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains(DETAILS_UNAVAILABLE), "{body}");
        assert_eq!(
            get("/api/v1/products/0/other").await.0,
            StatusCode::NOT_FOUND
        );

        let (status, _, body) = get("/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("Hello! This is a simple bookstore application"),
            "{body}"
        );
        assert!(body.contains(&m.reviews.url()), "{body}");
        assert!(body.contains("href=\"/productpage?u=normal\""), "{body}");
        let (status, _, body) = get("/health").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "Product page is healthy")
        );
        assert_eq!(get("/nothing").await.0, StatusCode::NOT_FOUND);
    }

    #[test]
    fn sessions_and_forms_decode() {
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_static("a=1; session=J%C3%A9r%C3%B4me+x"),
        );
        assert_eq!(session_user(&h).as_deref(), Some("Jérôme+x"));
        h.clear();
        h.append(COOKIE, HeaderValue::from_static("sessionx=1; session="));
        assert_eq!(session_user(&h), None);
        assert_eq!(
            form_value("a=1&username=a+b%21", "username").as_deref(),
            Some("a b!")
        );
        assert_eq!(form_value("username", "username").as_deref(), Some(""));
        assert_eq!(form_value("a=1", "username"), None);
        assert_eq!(percent_encode("Jérôme x"), "J%C3%A9r%C3%B4me%20x");
        assert_eq!(percent_decode("%zz%4", false).as_deref(), Some("%zz%4"));
        assert_eq!(percent_decode("%FF", false), None);
    }
}
