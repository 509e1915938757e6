//! details (bookinfo's details.rb): `/details/<id>` answers the book's details as JSON,
//! `/health` says it is healthy.

use http::StatusCode;
use http::request::Parts;
use http::{Method, Response};
use serde_json::json;

use super::segments_after;
use crate::server::{Body, text};

/// Answers one request.
pub(super) fn handle(parts: &Parts) -> Response<Body> {
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    }
    let path = parts.uri.path();
    if path == "/health" {
        return super::json(StatusCode::OK, &json!({"status": "Details is healthy"}));
    }
    // Like the WEBrick mount: /details and everything under it; the id is the last segment.
    if path != "/details" && !path.starts_with("/details/") {
        return text(StatusCode::NOT_FOUND, "Not Found");
    }
    let last = segments_after(parts, "/details")
        .and_then(|s| s.last().copied())
        .unwrap_or_default();
    match last.parse::<i64>() {
        Ok(id) => super::json(StatusCode::OK, &book_details(id)),
        Err(_) => super::json(
            StatusCode::BAD_REQUEST,
            &json!({"error": "please provide numeric product id"}),
        ),
    }
}

/// details.rb's answer for every book.
fn book_details(id: i64) -> serde_json::Value {
    json!({
        "id": id,
        "author": "William Shakespeare",
        "year": 1595,
        "type": "paperback",
        "pages": 200,
        "publisher": "PublisherA",
        "language": "English",
        "ISBN-10": "1234567890",
        "ISBN-13": "123-1234567890",
    })
}

#[cfg(test)]
mod tests {
    use super::super::BookinfoApp;
    use super::super::testing::{args, start};
    use crate::echo::testing::{get, get_json};
    use http::StatusCode;

    #[tokio::test]
    async fn details_answer_like_details_rb() {
        let s = start(args(BookinfoApp::Details)).await;
        let addr = s.server.addr();
        let (status, v) = get_json(addr, "/details/7", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["id"], 7);
        assert_eq!(v["author"], "William Shakespeare");
        assert_eq!(v["year"], 1595);
        assert_eq!(v["type"], "paperback");
        assert_eq!(v["pages"], 200);
        assert_eq!(v["publisher"], "PublisherA");
        assert_eq!(v["language"], "English");
        assert_eq!(v["ISBN-10"], "1234567890");
        assert_eq!(v["ISBN-13"], "123-1234567890");

        let (status, v) = get_json(addr, "/details/abc", &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(v["error"], "please provide numeric product id");
        let (status, _) = get_json(addr, "/details", &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        let (status, v) = get_json(addr, "/health", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["status"], "Details is healthy");
        assert_eq!(
            get(false, addr, "/detailsx", &[]).await.0,
            StatusCode::NOT_FOUND
        );
    }
}
