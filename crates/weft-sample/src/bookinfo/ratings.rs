//! ratings (bookinfo's ratings.js, the in-memory v1): `GET /ratings/<id>` answers
//! `{"id":<id>,"ratings":{"Reviewer1":5,"Reviewer2":4}}`, `POST /ratings/<id>` with a JSON
//! body replaces a product's ratings, `/health` says it is healthy.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::server::{Body, text};

/// The ratings posted so far, by product id.
#[derive(Default)]
pub(super) struct Ratings {
    added: Mutex<HashMap<i64, Value>>,
}

impl Ratings {
    /// Answers one request.
    pub(super) fn handle(&self, parts: &Parts, body: &Bytes) -> Response<Body> {
        let path = parts.uri.path();
        if path == "/health" && parts.method == Method::GET {
            return super::json(StatusCode::OK, &json!({"status": "Ratings is healthy"}));
        }
        let Some(rest) = path.strip_prefix("/ratings/") else {
            return text(StatusCode::NOT_FOUND, "Not Found");
        };
        let last = rest.rsplit('/').next().unwrap_or_default();
        let Some(id) = parse_int(last) else {
            return super::json(
                StatusCode::BAD_REQUEST,
                &json!({"error": "please provide numeric product ID"}),
            );
        };
        match parts.method {
            Method::GET | Method::HEAD => super::json(StatusCode::OK, &self.get(id)),
            Method::POST => match serde_json::from_slice::<Value>(body) {
                Ok(ratings) => {
                    if let Ok(mut added) = self.added.lock() {
                        added.insert(id, json!({"id": id, "ratings": ratings}));
                    }
                    super::json(StatusCode::OK, &self.get(id))
                }
                Err(_) => super::json(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "please provide valid ratings JSON"}),
                ),
            },
            _ => text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed"),
        }
    }

    /// A product's ratings: the posted ones, else Reviewer1 5 stars and Reviewer2 4.
    fn get(&self, id: i64) -> Value {
        if let Ok(added) = self.added.lock()
            && let Some(v) = added.get(&id)
        {
            return v.clone();
        }
        json!({"id": id, "ratings": {"Reviewer1": 5, "Reviewer2": 4}})
    }
}

/// JavaScript's `parseInt(s)`: optional blanks and sign, then the leading digits.
fn parse_int(s: &str) -> Option<i64> {
    let s = s.trim_start();
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    let n: i64 = digits[..end].parse().ok()?;
    Some(if neg { -n } else { n })
}

#[cfg(test)]
mod tests {
    use super::super::BookinfoApp;
    use super::super::testing::{args, start};
    use super::parse_int;
    use crate::echo::testing::{get, get_json};
    use http::StatusCode;
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    #[test]
    fn ids_parse_like_parse_int() {
        assert_eq!(parse_int("0"), Some(0));
        assert_eq!(parse_int("12abc"), Some(12));
        assert_eq!(parse_int("-3"), Some(-3));
        assert_eq!(parse_int("abc"), None);
        assert_eq!(parse_int(""), None);
    }

    #[tokio::test]
    async fn ratings_answer_like_ratings_js() {
        let s = start(args(BookinfoApp::Ratings)).await;
        let addr = s.server.addr();
        let (status, body) = get(false, addr, "/ratings/0", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"id":0,"ratings":{"Reviewer1":5,"Reviewer2":4}}"#
        );
        let (status, v) = get_json(addr, "/ratings/x", &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(v["error"], "please provide numeric product ID");
        let (status, v) = get_json(addr, "/health", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["status"], "Ratings is healthy");
        assert_eq!(get(false, addr, "/", &[]).await.0, StatusCode::NOT_FOUND);

        // A POST replaces the product's ratings (in memory, as ratings v1 does).
        let client = Client::builder(TokioExecutor::new()).build_http();
        let post = |body: &'static str| {
            http::Request::post(format!("http://{addr}/ratings/3"))
                .body(Full::new(bytes::Bytes::from_static(body.as_bytes())))
                .unwrap()
        };
        let resp = client
            .request(post(r#"{"Reviewer1":1,"Reviewer2":2}"#))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let (_, v) = get_json(addr, "/ratings/3", &[]).await;
        assert_eq!(v["ratings"]["Reviewer1"], 1);
        assert_eq!(v["ratings"]["Reviewer2"], 2);
        let (_, v) = get_json(addr, "/ratings/0", &[]).await;
        assert_eq!(v["ratings"]["Reviewer1"], 5);
        let resp = client.request(post("not json")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(
            std::str::from_utf8(&body)
                .unwrap()
                .contains("valid ratings JSON")
        );
    }
}
