//! `GET /v1/requests/{request_id}`: was a request applied, and with what result.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::error::ApiError;
use super::extract::{PathParam, QueryParams};
use super::{AppState, ReadQuery};
use crate::limits::Replicated;

pub async fn get(
    State(app): State<AppState>,
    PathParam(request_id): PathParam<String>,
    QueryParams(query): QueryParams<ReadQuery>,
) -> Result<Response, ApiError> {
    super::input::request_id(&app.limits, &request_id)?;
    let applied = app.read(query.consistency).await?;
    let body = match applied.requests.get(&request_id) {
        Some(record) => json!({
            "request_id": request_id,
            "applied": true,
            "index": record.applied.index,
            "applied_at_ms": record.applied_at_ms,
            "result": lookup_result(&record.applied),
        }),
        None => json!({
            "request_id": request_id,
            "applied": false,
            "retention_ms": Replicated::REQUEST_ID_RETENTION_MS,
        }),
    };
    Ok(Json(body).into_response())
}

/// What the original request was answered: its status, and its body or error.
fn lookup_result(applied: &crate::sm::Applied) -> serde_json::Value {
    match super::outcome::describe(applied) {
        Ok(body) => json!({ "status": 200, "body": body }),
        Err(error) => json!({ "status": error.status().as_u16(), "error": error.body() }),
    }
}
