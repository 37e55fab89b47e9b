//! `GET`/`POST /v1/debug/clock`: the test-only offset added to this node's wall
//! clock reading, so a test or the chaos harness can make one node's clock jump.
//!
//! Present only with `[debug] clock_offset_endpoint = true`; otherwise it answers
//! 404 `not_found` like any unknown path, so production nodes do not have it. It
//! acts on the node it is sent to (never forwarded) and owns no state: the offset
//! lives in [`crate::replica::clock::LeaderClock`].

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::error::{ApiError, ErrorCode};
use super::extract::JsonBody;
use super::AppState;
use crate::replica::clock::{OffsetError, MAX_DEBUG_OFFSET_MS};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetOffset {
    offset_ms: i64,
}

fn disabled() -> ApiError {
    ApiError::NotFound {
        code: ErrorCode::NotFound,
        message: "no such endpoint".into(),
    }
}

/// This node's offset and the wall clock it reads with it.
pub async fn get(State(app): State<AppState>) -> Result<Response, ApiError> {
    if !app.replica.clock().offset_settable() {
        return Err(disabled());
    }
    Ok(view(&app))
}

/// Sets this node's offset (`{"offset_ms": 3600000}`; 0 clears it).
pub async fn set(
    State(app): State<AppState>,
    JsonBody(body): JsonBody<SetOffset>,
) -> Result<Response, ApiError> {
    match app.replica.clock().set_offset_ms(body.offset_ms) {
        Ok(()) => {
            tracing::warn!(offset_ms = body.offset_ms, "debug: wall clock offset set");
            Ok(view(&app))
        }
        Err(OffsetError::Disabled) => Err(disabled()),
        Err(OffsetError::TooLarge) => Err(ApiError::invalid(
            ErrorCode::InvalidOffset,
            format!("offset_ms is at most {MAX_DEBUG_OFFSET_MS} either way"),
        )),
    }
}

fn view(app: &AppState) -> Response {
    let clock = app.replica.clock();
    Json(json!({
        "node_id": app.node_id,
        "offset_ms": clock.offset_ms(),
        "wall_ms": clock.wall_ms(),
        "cluster_time_ms": app.replica.state().cluster_time_ms,
    }))
    .into_response()
}
