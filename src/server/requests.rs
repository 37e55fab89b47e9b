//! `GET /v1/requests/{request_id}`: was a request applied, and with what result.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::error::ApiError;
use super::extract::{PathParam, QueryParams};
use super::kv::ReadQuery;
use super::AppState;
use crate::limits::Replicated;
use crate::sm::Outcome;

fn outcome_json(outcome: &Outcome) -> serde_json::Value {
    match outcome {
        Outcome::KvWritten { version } => json!({ "type": "kv_written", "version": version }),
        Outcome::KvDeleted { existed } => json!({ "type": "kv_deleted", "deleted": existed }),
        Outcome::RequestIdConflict => json!({ "type": "request_id_conflict" }),
        Outcome::CasMismatch { current_version } => {
            json!({ "type": "cas_mismatch", "current_version": current_version })
        }
    }
}

pub async fn get(
    State(app): State<AppState>,
    PathParam(request_id): PathParam<String>,
    QueryParams(query): QueryParams<ReadQuery>,
) -> Result<Response, ApiError> {
    app.check_request_id(&request_id)?;
    app.read_barrier(query.consistency()).await?;
    let applied = app.state_machine.read();
    let body = match applied.state.requests.get(&request_id) {
        Some(record) => json!({
            "request_id": request_id,
            "applied": true,
            "index": record.applied.index,
            "applied_at_ms": record.applied_at_ms,
            "result": outcome_json(&record.applied.outcome),
        }),
        None => json!({
            "request_id": request_id,
            "applied": false,
            "retention_ms": Replicated::REQUEST_ID_RETENTION_MS,
        }),
    };
    Ok(Json(body).into_response())
}
