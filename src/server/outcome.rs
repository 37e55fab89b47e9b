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
use crate::sm::{Applied, Outcome};

/// The JSON body of a successful outcome, or the refusal it stands for.
pub fn describe(applied: &Applied) -> Result<Value, ApiError> {
    let index = applied.index;
    Ok(match &applied.outcome {
        Outcome::KvWritten { version } => json!({ "version": version, "index": index }),
        Outcome::KvDeleted { existed } => json!({ "deleted": existed, "index": index }),
        Outcome::SessionCreated {
            session_id,
            expires_at_ms,
        } => {
            json!({ "session_id": session_id, "expires_at_ms": expires_at_ms, "index": index })
        }
        Outcome::SessionRenewed { expires_at_ms } => {
            json!({ "expires_at_ms": expires_at_ms, "index": index })
        }
        Outcome::SessionEnded => json!({ "ended": true, "index": index }),
        Outcome::Ticked { renewed } => json!({ "renewed": renewed, "index": index }),
        Outcome::TaskSubmitted {
            task_id,
            state,
            existing,
        } => {
            json!({ "task_id": task_id, "state": state.name(), "existing": existing, "index": index })
        }
        Outcome::TaskClaimed {
            task_id,
            fencing_token,
            lease_expires_at_ms,
        } => json!({
            "task_id": task_id, "fencing_token": fencing_token,
            "lease_expires_at_ms": lease_expires_at_ms, "index": index,
        }),
        Outcome::NoTaskAssigned => json!({ "task": null, "index": index }),
        Outcome::TaskLeaseExtended {
            lease_expires_at_ms,
            cancel_requested,
        } => json!({
            "lease_expires_at_ms": lease_expires_at_ms, "cancel_requested": cancel_requested, "index": index,
        }),
        Outcome::TaskUpdated { task_id, state } => {
            json!({ "task_id": task_id, "state": state.name(), "index": index })
        }
        Outcome::LockGranted { fencing_token } => {
            json!({ "fencing_token": fencing_token, "index": index })
        }
        Outcome::LockQueued { waiter_id } => json!({ "waiter_id": waiter_id, "index": index }),
        Outcome::LockReleased => json!({ "released": true, "index": index }),
        Outcome::LockHeld => {
            return Err(ApiError::conflict(
                ErrorCode::LockHeld,
                "the lock is held by another session",
            ))
        }
        Outcome::Deadlock { cycle } => {
            return Err(ApiError::Deadlock {
                cycle: cycle.clone(),
            })
        }
        Outcome::PermitsGranted { fencing_token } => {
            json!({ "fencing_token": fencing_token, "index": index })
        }
        Outcome::PermitsQueued { waiter_id } => json!({ "waiter_id": waiter_id, "index": index }),
        Outcome::PermitsReleased | Outcome::Resigned => json!({ "released": true, "index": index }),
        Outcome::BarrierReleased { generation } => {
            json!({ "generation": generation, "released": true, "broken": false, "index": index })
        }
        Outcome::BarrierWaiting { generation } => {
            json!({ "generation": generation, "released": false, "broken": false, "index": index })
        }
        Outcome::BarrierBroken { generation } => {
            json!({ "generation": generation, "released": false, "broken": true, "index": index })
        }
        Outcome::Elected { term } => json!({ "leader": true, "term": term, "index": index }),
        Outcome::CampaignQueued { waiter_id } => {
            json!({ "leader": false, "waiter_id": waiter_id, "index": index })
        }
        Outcome::NotElected {
            leader_session_id,
            term,
        } => {
            json!({ "leader": false, "leader_session_id": leader_session_id, "term": term, "index": index })
        }
        Outcome::Withdrawn => json!({ "withdrawn": true, "index": index }),
        Outcome::PermitsUnavailable => {
            return Err(ApiError::conflict(
                ErrorCode::PermitsUnavailable,
                "not enough free permits",
            ))
        }
        Outcome::LimitMismatch { limit } => {
            return Err(ApiError::conflict(
                ErrorCode::LimitMismatch,
                format!("this semaphore's limit is {limit}, fixed by its first acquirer"),
            ))
        }
        Outcome::CasMismatch { current_version } => {
            return Err(ApiError::CasMismatch {
                current_version: *current_version,
            })
        }
        Outcome::RequestIdConflict => {
            return Err(ApiError::Conflict {
                code: ErrorCode::RequestIdConflict,
                message: format!(
                    "this request_id was already used for a different request (index {index})"
                ),
            })
        }
        Outcome::SessionNotFound { session_id } => {
            return Err(ApiError::NotFound {
                code: ErrorCode::SessionNotFound,
                message: format!("no live session {session_id}"),
            })
        }
        Outcome::TaskNotFound { task_id } => {
            return Err(ApiError::NotFound {
                code: ErrorCode::TaskNotFound,
                message: format!("no task {task_id}"),
            })
        }
        Outcome::WrongState { message } => {
            return Err(ApiError::conflict(ErrorCode::WrongState, message.clone()))
        }
        Outcome::StaleFencingToken { current } => {
            return Err(ApiError::StaleToken { current: *current })
        }
        Outcome::LimitReached { message } => return Err(ApiError::Overloaded(message.clone())),
        Outcome::InvalidCommand { message } => {
            return Err(ApiError::invalid(
                ErrorCode::InvalidRequest,
                message.clone(),
            ))
        }
    })
}

/// The HTTP response for an applied write: its body plus `X-Conclave-Index`.
pub fn respond(applied: &Applied) -> Result<Response, ApiError> {
    let mut response = Json(describe(applied)?).into_response();
    response
        .headers_mut()
        .insert(INDEX_HEADER, HeaderValue::from(applied.index));
    Ok(response)
}
