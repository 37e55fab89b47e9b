//! Node-to-node Raft RPCs under `/raft/*`: bincode bodies, authenticated by the
//! cluster secret, addressed to one node id, and refused across format versions.
//!
//! The whole `Result` of the local Raft call is encoded in a 200 response; the
//! caller (`network`) turns an `Err` into openraft's `RemoteError`. Refusals before
//! Raft sees the request (secret, target, format, body) are JSON errors with 4xx.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
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

fn admit<T: DeserializeOwned>(
    app: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, ApiError> {
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
    codec::decode(body).map_err(|e| ApiError::invalid("invalid_body", e.to_string()))
}

fn reply<T: Serialize>(result: &T) -> Response {
    match codec::encode(result) {
        Ok(bytes) => ([("content-type", "application/octet-stream")], bytes).into_response(),
        Err(e) => ApiError::Unavailable(format!("encoding the reply: {e}")).into_response(),
    }
}

pub async fn append(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = admit(&app, &headers, &body)?;
    Ok(reply(&app.raft.append_entries(request).await))
}

pub async fn vote(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = admit(&app, &headers, &body)?;
    Ok(reply(&app.raft.vote(request).await))
}

pub async fn snapshot(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = admit(&app, &headers, &body)?;
    Ok(reply(&app.raft.install_snapshot(request).await))
}
