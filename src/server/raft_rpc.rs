//! Node-to-node Raft RPCs under `/raft/*`: bincode bodies, authenticated by the
//! cluster secret, addressed to one node id, and refused across format versions.
//!
//! The whole `Result` of the local Raft call is encoded in a 200 response; the
//! caller (`network`) turns an `Err` into openraft's `RemoteError`. Refusals before
//! Raft sees the request (secret, target, format, body) are JSON errors with 4xx.

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::ApiError;
use super::AppState;
use crate::codec;
use crate::network::{FORMAT_HEADER, SECRET_HEADER, TARGET_HEADER};

/// Compares secrets in time independent of where they differ.
fn secrets_match(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Checks the headers, then reads and decodes the body.
async fn admit<T: DeserializeOwned>(app: &AppState, request: Request) -> Result<T, ApiError> {
    let headers = request.headers();
    let secret = headers
        .get(SECRET_HEADER)
        .map(|value| value.as_bytes())
        .unwrap_or_default();
    if !secrets_match(secret, app.cluster_secret.as_bytes()) {
        return Err(ApiError::Unauthorized);
    }
    let target = headers
        .get(TARGET_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if target.parse::<u64>().ok() != Some(app.node_id) {
        return Err(ApiError::WrongNode {
            this: app.node_id,
            target: target.to_owned(),
        });
    }
    let format = headers
        .get(FORMAT_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if format != codec::FORMAT_VERSION.to_string() {
        return Err(ApiError::invalid(
            "format_mismatch",
            format!(
                "sender format {format:?}, this node speaks {}",
                codec::FORMAT_VERSION
            ),
        ));
    }
    let body = super::extract::body_bytes(request, app.max_raft_body_bytes).await?;
    codec::decode(&body).map_err(|e| ApiError::invalid("invalid_body", e.to_string()))
}

fn reply<T: Serialize>(result: &T) -> Response {
    match codec::encode(result) {
        Ok(bytes) => ([("content-type", "application/octet-stream")], bytes).into_response(),
        Err(e) => ApiError::Unavailable(format!("encoding the reply: {e}")).into_response(),
    }
}

pub async fn append(State(app): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let request = admit(&app, request).await?;
    Ok(reply(&app.raft.append_entries(request).await))
}

pub async fn vote(State(app): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let request = admit(&app, request).await?;
    Ok(reply(&app.raft.vote(request).await))
}

pub async fn snapshot(State(app): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let request = admit(&app, request).await?;
    Ok(reply(&app.raft.install_snapshot(request).await))
}
