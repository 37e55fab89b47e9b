//! The dashboard: `GET /ui` (the page) and `GET /ui/app.js` (its script), static
//! files from `ui/` embedded in the binary, served by every node without a token.
//! The page holds no data: it reads the cluster through the API with the token the
//! user gives, and follows the node's watch stream (docs/ui.md). A strict Content
//! Security Policy allows only this node's own script and API.
//!
//! Must not depend on anything but axum: it serves bytes.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("../../ui/index.html");
const SCRIPT: &str = include_str!("../../ui/app.js");

/// Scripts only from this node, no inline script, API calls only to this node,
/// never framed.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /ui`.
pub async fn page() -> Response {
    file("text/html; charset=utf-8", PAGE)
}

/// `GET /ui/app.js`.
pub async fn script() -> Response {
    file("text/javascript; charset=utf-8", SCRIPT)
}
