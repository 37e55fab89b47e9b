//! Lock endpoints: acquire (optionally waiting, woken on apply), release, get.
//! (The `guard` a mutating request may carry is parsed in `input`.)

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::error_code::ErrorCode;
use super::extract::{JsonBody, QueryParams};
use super::input::GuardBody;
use super::wait::{acquire_or_withdraw, standing, Acquire, Acquired, Standing};
use super::{AppState, ReadQuery};
use crate::limits::MAX_LOCK_DELAY_MS;
use crate::sm::locks::{LockCommand, LockMode};
use crate::sm::sessions::SessionId;
use crate::sm::{Command, Outcome};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcquireBody {
    session_id: SessionId,
    #[serde(default = "default_mode")]
    mode: String,
    #[serde(default)]
    wait_ms: u64,
    /// Lock-delay for a lock this request creates (see docs/locks.md).
    #[serde(default)]
    lock_delay_ms: u64,
    /// The token of a hold lost to session expiry, to take the lock back during its
    /// lock-delay.
    previous_token: Option<u64>,
    request_id: Option<String>,
}

fn default_mode() -> String {
    "exclusive".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseBody {
    session_id: SessionId,
    fencing_token: u64,
    guard: Option<GuardBody>,
    request_id: Option<String>,
}

pub async fn acquire(
    State(app): State<AppState>,
    super::input::ResourceName(name): super::input::ResourceName,
    JsonBody(body): JsonBody<AcquireBody>,
) -> Result<Response, ApiError> {
    let mode = match body.mode.as_str() {
        "exclusive" => LockMode::Exclusive,
        "shared" => LockMode::Shared,
        other => {
            return Err(ApiError::invalid(
                ErrorCode::InvalidMode,
                format!("mode {other:?} is not exclusive or shared"),
            ))
        }
    };
    let deadline = tokio::time::Instant::now() + super::input::wait(&app.limits, body.wait_ms)?;
    if body.lock_delay_ms > MAX_LOCK_DELAY_MS {
        return Err(ApiError::invalid(
            ErrorCode::InvalidDuration,
            format!("lock_delay_ms is at most {MAX_LOCK_DELAY_MS}"),
        ));
    }
    let command = Command::Lock(LockCommand::Acquire {
        name: name.clone(),
        session_id: body.session_id,
        mode,
        wait: body.wait_ms > 0,
        lock_delay_ms: body.lock_delay_ms,
        previous_token: body.previous_token,
    });
    let how = Acquire {
        session_id: body.session_id,
        deadline,
        queued: |outcome| match outcome {
            Outcome::LockQueued { waiter_id } => Some(*waiter_id),
            _ => None,
        },
        withdraw: {
            let name = name.clone();
            move |waiter_id| {
                Command::Lock(LockCommand::Withdraw {
                    name: name.clone(),
                    waiter_id,
                })
            }
        },
        granted: |outcome| match outcome {
            Outcome::LockGranted { fencing_token } => Some(*fencing_token),
            _ => None,
        },
    };
    // Woken by the apply loop: granted, or the waiter vanished (its session ended).
    let acquired = acquire_or_withdraw(&app, body.request_id, command, how, |state, waiter_id| {
        let Some(lock) = state.locks.get(&name) else {
            return Standing::Gone;
        };
        standing(
            &lock.holders,
            lock.waiters.iter().map(|w| w.waiter_id),
            waiter_id,
        )
    })
    .await?;
    let fencing_token = match acquired {
        Acquired::Answered(applied) => return super::outcome::respond(&applied),
        Acquired::Granted(token) => token,
        // The waiter is gone (a retried request: an earlier wait already ended and
        // withdrew it), or the wait timed out.
        Acquired::NotGranted { timed_out } => {
            let why = if timed_out {
                "was not granted within wait_ms; the waiter was withdrawn"
            } else {
                "was not granted; this request's waiter was withdrawn"
            };
            return Err(ApiError::Conflict {
                code: ErrorCode::LockHeld,
                message: format!("{name:?} {why}"),
            });
        }
    };
    let index = app.replica.state().last_command_index;
    Ok(Json(json!({ "fencing_token": fencing_token, "index": index })).into_response())
}

pub async fn release(
    State(app): State<AppState>,
    super::input::ResourceName(name): super::input::ResourceName,
    JsonBody(body): JsonBody<ReleaseBody>,
) -> Result<Response, ApiError> {
    let command = Command::Lock(LockCommand::Release {
        name,
        session_id: body.session_id,
        fencing_token: body.fencing_token,
    });
    app.propose_and_respond(body.request_id, body.guard, command)
        .await
}

/// Holders with their tokens and waiters in order; a lock nobody holds or awaits
/// is shown empty.
pub async fn get(
    State(app): State<AppState>,
    super::input::ResourceName(name): super::input::ResourceName,
    QueryParams(query): QueryParams<ReadQuery>,
) -> Result<Response, ApiError> {
    app.read_barrier(query.consistency).await?;
    let applied = app.replica.state();
    let lock = applied.locks.get(&name).cloned().unwrap_or_default();
    let holders: Vec<_> = lock
        .holders
        .iter()
        .map(|h| json!({ "session_id": h.session_id, "mode": h.mode.name(), "fencing_token": h.fencing_token, "acquired_at_ms": h.acquired_at_ms }))
        .collect();
    let waiters: Vec<_> = lock
        .waiters
        .iter()
        .map(|w| json!({ "session_id": w.session_id, "mode": w.mode.name(), "waiter_id": w.waiter_id, "since_ms": w.since_ms }))
        .collect();
    Ok(Json(json!({ "name": name, "holders": holders, "waiters": waiters })).into_response())
}
