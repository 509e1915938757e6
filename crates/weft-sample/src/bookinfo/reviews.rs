//! reviews (bookinfo's LibertyRestEndpoint.java): `/reviews/<id>` answers two reviews; v2 and
//! v3 first ask ratings for their stars (black stars with a 10 s limit for v2, red stars with
//! 2.5 s for v3) and, when ratings fails, put "Ratings service is currently unavailable" in
//! place of the stars. `/health` says it is healthy.

use std::time::Duration;

use bytes::Bytes;
use http::header::ACCEPT;
use http::request::Parts;
use http::{HeaderValue, Method, Response, StatusCode};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use super::{BookinfoArgs, ServiceUrl, fetch};
use crate::chain::{client, forward_headers};
use crate::error::SampleError;
use crate::server::{Body, resolve_pod, text};

/// What reviews shows in place of stars when ratings fails.
pub(crate) const RATINGS_UNAVAILABLE: &str = "Ratings service is currently unavailable";

const REVIEWS: [(&str, &str); 2] = [
    (
        "Reviewer1",
        "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!",
    ),
    (
        "Reviewer2",
        "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare.",
    ),
];

/// How v2 and v3 call ratings.
struct RatingsCall {
    url: ServiceUrl,
    color: &'static str,
    timeout: Duration,
    client: Client<HttpConnector, Empty<Bytes>>,
}

pub(super) struct Reviews {
    ratings: Option<RatingsCall>,
    pod: String,
    cluster: String,
}

impl Reviews {
    pub(super) fn new(args: &BookinfoArgs) -> Result<Reviews, SampleError> {
        // As bookinfo's images: v1 without ratings, v2 black stars, v3 red; the ratings
        // client's limit is 10 s for black stars and 2.5 s otherwise.
        let color = match args.version.as_str() {
            "v1" => None,
            "v2" => Some("black"),
            "v3" => Some("red"),
            other => return Err(SampleError::ReviewsVersion(other.to_string())),
        };
        let ratings = match color {
            None => None,
            Some(color) => {
                let timeout = args.ratings_timeout.unwrap_or(if color == "black" {
                    Duration::from_secs(10)
                } else {
                    Duration::from_millis(2500)
                });
                Some(RatingsCall {
                    url: ServiceUrl::new("--ratings-url", &args.ratings_url)?,
                    color,
                    timeout,
                    client: client(timeout, false),
                })
            }
        };
        Ok(Reviews {
            ratings,
            pod: resolve_pod(args.pod.as_deref()),
            cluster: args
                .cluster_name
                .clone()
                .unwrap_or_else(|| "null".to_string()),
        })
    }

    /// Answers one request.
    pub(super) async fn handle(&self, parts: &Parts) -> Response<Body> {
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
        }
        let path = parts.uri.path();
        if path == "/health" {
            return super::json(StatusCode::OK, &json!({"status": "Reviews is healthy"}));
        }
        // JAX-RS `/reviews/{productId}` with an int parameter: anything else is not found.
        let Some(id) = path
            .strip_prefix("/reviews/")
            .and_then(|id| id.parse::<i32>().ok())
        else {
            return text(StatusCode::NOT_FOUND, "Not Found");
        };
        let stars = match &self.ratings {
            Some(r) => Some((r.color, self.stars(r, id, parts).await)),
            None => None,
        };
        let reviews: Vec<Value> = REVIEWS
            .iter()
            .enumerate()
            .map(|(i, (reviewer, review))| {
                let mut v = json!({"reviewer": reviewer, "text": review});
                if let Some((color, stars)) = &stars {
                    v["rating"] = match stars[i] {
                        Some(n) => json!({"stars": n, "color": color}),
                        None => json!({"error": RATINGS_UNAVAILABLE}),
                    };
                }
                v
            })
            .collect();
        super::json(
            StatusCode::OK,
            &json!({
                "id": id.to_string(),
                "podname": self.pod,
                "clustername": self.cluster,
                "reviews": reviews,
            }),
        )
    }

    /// Reviewer1's and Reviewer2's stars from ratings; `None` where ratings gave none.
    async fn stars(&self, r: &RatingsCall, id: i32, parts: &Parts) -> [Option<i64>; 2] {
        let mut headers = forward_headers(&parts.headers);
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let answer = fetch(
            &r.client,
            &r.url,
            "ratings",
            &id.to_string(),
            &headers,
            r.timeout,
        )
        .await;
        let Ok(answer) = answer else {
            return [None, None];
        };
        let star = |name: &str| answer["ratings"][name].as_i64();
        [star(REVIEWS[0].0), star(REVIEWS[1].0)]
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::testing::{args, nothing_there, silent, start};
    use super::super::{BookinfoApp, BookinfoArgs};
    use super::RATINGS_UNAVAILABLE;
    use crate::echo::testing::get_json;
    use http::StatusCode;

    async fn reviews(version: &str, ratings_url: String) -> super::super::testing::Started {
        start(BookinfoArgs {
            version: version.to_string(),
            ratings_url,
            ratings_timeout: Some(Duration::from_millis(300)),
            ..args(BookinfoApp::Reviews)
        })
        .await
    }

    #[tokio::test]
    async fn v1_has_no_ratings_and_health() {
        // v1 never calls ratings: a ratings URL where nothing listens changes nothing.
        let s = reviews("v1", nothing_there().await).await;
        let addr = s.server.addr();
        let (status, v) = get_json(addr, "/reviews/0", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["id"], "0");
        assert_eq!(v["podname"], "reviews-test");
        assert_eq!(v["clustername"], "null");
        let list = v["reviews"].as_array().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["reviewer"], "Reviewer1");
        assert!(list[0]["text"].as_str().unwrap().contains("slapstick"));
        assert_eq!(list[1]["reviewer"], "Reviewer2");
        assert!(list.iter().all(|r| r.get("rating").is_none()), "{v}");
        let (status, v) = get_json(addr, "/health", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["status"], "Reviews is healthy");
        let (status, _) = crate::echo::testing::get(false, addr, "/reviews/x", &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn v2_black_and_v3_red_stars_from_ratings() {
        let ratings = start(args(BookinfoApp::Ratings)).await;
        for (version, color) in [("v2", "black"), ("v3", "red")] {
            let s = reviews(version, ratings.url()).await;
            let (status, v) = get_json(s.server.addr(), "/reviews/0", &[]).await;
            assert_eq!(status, StatusCode::OK);
            let r = &v["reviews"];
            assert_eq!(r[0]["rating"]["stars"], 5, "{v}");
            assert_eq!(r[0]["rating"]["color"], color, "{v}");
            assert_eq!(r[1]["rating"]["stars"], 4, "{v}");
            assert_eq!(r[1]["rating"]["color"], color, "{v}");
        }
        // Each reviews asked ratings once, for product 0.
        let lines = ratings.lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines.iter().all(|l| l.contains(" GET /ratings/0 ")),
            "{lines:?}"
        );
    }

    #[tokio::test]
    async fn ratings_down_or_slow_shows_unavailable() {
        let down = reviews("v3", nothing_there().await).await;
        let (status, v) = get_json(down.server.addr(), "/reviews/0", &[]).await;
        assert_eq!(status, StatusCode::OK);
        for r in v["reviews"].as_array().unwrap() {
            assert_eq!(r["rating"]["error"], RATINGS_UNAVAILABLE, "{v}");
            assert!(r["rating"].get("stars").is_none());
        }
        // A ratings that never answers: reviews gives up after its ratings timeout.
        let (url, _) = silent().await;
        let slow = reviews("v2", url).await;
        let start = Instant::now();
        let (status, v) = get_json(slow.server.addr(), "/reviews/0", &[]).await;
        let took = start.elapsed();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["reviews"][0]["rating"]["error"], RATINGS_UNAVAILABLE);
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(3),
            "{took:?}"
        );
    }

    #[test]
    fn ratings_timeouts_follow_bookinfo() {
        let r = |version: &str| {
            super::Reviews::new(&BookinfoArgs {
                version: version.into(),
                ..BookinfoArgs::new(BookinfoApp::Reviews)
            })
            .unwrap()
        };
        assert!(r("v1").ratings.is_none());
        let v2 = r("v2").ratings.unwrap();
        assert_eq!((v2.color, v2.timeout), ("black", Duration::from_secs(10)));
        let v3 = r("v3").ratings.unwrap();
        assert_eq!((v3.color, v3.timeout), ("red", Duration::from_millis(2500)));
    }

    #[tokio::test]
    async fn propagated_headers_reach_ratings() {
        let ratings = start(args(BookinfoApp::Ratings)).await;
        let s = reviews("v2", ratings.url()).await;
        get_json(
            s.server.addr(),
            "/reviews/0",
            &[("end-user", "jason"), ("x-request-id", "r-1")],
        )
        .await;
        let lines = ratings.lines();
        assert!(
            lines[0].contains(" end-user=jason x-request-id=r-1 "),
            "{lines:?}"
        );
    }
}
