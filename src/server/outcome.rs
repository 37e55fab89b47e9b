//! How a replicated [`Outcome`] reads over HTTP: the one mapping used by every
//! write handler and by `GET /v1/requests/{id}`, so a retried or looked-up request
//! answers exactly as the first one did.

use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use super::error_code::ErrorCode;
use super::forward::INDEX_HEADER;
use crate::sm::{Applied, Outcome, Refusal};

/// The JSON body of a successful outcome (its room's fields plus `index`, the
/// command index), or the refusal it stands for. Each room words its own outcomes
/// in its handler file.
pub fn describe(applied: &Applied) -> Result<Value, ApiError> {
    let index = applied.index;
    let mut body = match &applied.outcome {
        Outcome::Kv(outcome) => super::kv::describe(outcome)?,
        Outcome::Session(outcome) => super::sessions::describe(outcome),
        Outcome::Task(outcome) => super::tasks::describe(outcome)?,
        Outcome::Lock(outcome) => super::locks::describe(outcome)?,
        Outcome::Semaphore(outcome) => super::primitives::describe_semaphore(outcome)?,
        Outcome::Barrier(outcome) => super::primitives::describe_barrier(outcome),
        Outcome::Election(outcome) => super::primitives::describe_election(outcome),
        Outcome::Proposal(outcome) => super::proposals::describe(outcome)?,
        Outcome::TwoPhase(outcome) => super::twophase::describe(outcome)?,
        Outcome::Txn(outcome) => super::txn::describe(outcome, index)?,
        Outcome::Refused(refusal) => return Err(refused(refusal, index)),
        Outcome::Upgraded { format } => json!({ "format": format }),
    };
    body["index"] = json!(index);
    Ok(body)
}

/// The error a shared refusal stands for.
fn refused(refusal: &Refusal, index: u64) -> ApiError {
    match refusal {
        Refusal::RequestIdConflict => ApiError::conflict(
            ErrorCode::RequestIdConflict,
            format!("this request_id was already used for a different request (index {index})"),
        ),
        Refusal::SessionNotFound { session_id } => ApiError::NotFound {
            code: ErrorCode::SessionNotFound,
            message: format!("no live session {session_id}"),
        },
        Refusal::WrongState { message } => ApiError::conflict(ErrorCode::WrongState, message),
        Refusal::StaleFencingToken { current } => ApiError::StaleToken { current: *current },
        Refusal::LimitReached { message } => ApiError::Overloaded(message.clone()),
        Refusal::InvalidCommand { message } => {
            ApiError::invalid(ErrorCode::InvalidRequest, message.clone())
        }
        Refusal::NotSessionOwner { session_id } => ApiError::not_session_owner(*session_id),
        Refusal::NotTheParty { party } => ApiError::Denied {
            code: ErrorCode::NotTheParty,
            message: format!(
                "only {party:?} (its token's subject) or an admin may vote or ack as {party:?}"
            ),
        },
    }
}

/// The HTTP response for an applied write: its body plus `X-Conclave-Index`.
pub fn respond(applied: &Applied) -> Result<Response, ApiError> {
    super::observe::record_index(applied.index);
    let mut response = Json(describe(applied)?).into_response();
    response
        .headers_mut()
        .insert(INDEX_HEADER, HeaderValue::from(applied.index));
    Ok(response)
}
