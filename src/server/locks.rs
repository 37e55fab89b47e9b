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
use super::input::{guard, GuardBody};
use super::wait::{propose_queueing, wait_or_withdraw, Waited};
use super::{AppState, ReadQuery};
use crate::limits::MAX_LOCK_DELAY_MS;
use crate::sm::locks::{LockCommand, LockMode};
use crate::sm::sessions::SessionId;
use crate::sm::{Command, Outcome, Submission};

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
    let queued_on = name.clone();
    let applied = propose_queueing(&app, body.request_id, command, move |outcome| {
        let Outcome::LockQueued { waiter_id } = outcome else {
            return None;
        };
        Some(Command::Lock(LockCommand::Withdraw {
            name: queued_on,
            waiter_id: *waiter_id,
        }))
    })
    .await?;
    let Outcome::LockQueued { waiter_id } = applied.outcome else {
        return super::outcome::respond(&applied);
    };
    // Woken by the apply loop: granted, or the waiter vanished (its session ended).
    let withdraw = Command::Lock(LockCommand::Withdraw {
        name: name.clone(),
        waiter_id,
    });
    let waited = wait_or_withdraw(&app, deadline, withdraw, |state| {
        let lock = state.locks.get(&name);
        if let Some(hold) = lock.and_then(|l| l.holders.iter().find(|h| h.waiter_id == waiter_id)) {
            return Some(Some(hold.fencing_token));
        }
        let waiting = lock.is_some_and(|l| l.waiters.iter().any(|w| w.waiter_id == waiter_id));
        (!waiting).then_some(None)
    })
    .await?;
    let fencing_token = match waited {
        Waited::Found(Some(token))
        | Waited::Withdrawn(Outcome::LockGranted {
            fencing_token: token,
        }) => token,
        // The waiter is gone: its session ended, or (a retried request) an earlier
        // wait already ended and withdrew it.
        Waited::Found(None) if !app.session_alive(body.session_id) => {
            return Err(ApiError::NotFound {
                code: ErrorCode::SessionNotFound,
                message: format!("session {} ended while waiting", body.session_id),
            })
        }
        Waited::Found(None) => {
            return Err(ApiError::Conflict {
                code: ErrorCode::LockHeld,
                message: format!("{name:?} was not granted; this request's waiter was withdrawn"),
            })
        }
        Waited::Withdrawn(_) => {
            return Err(ApiError::Conflict {
                code: ErrorCode::LockHeld,
                message: format!(
                    "{name:?} was not granted within wait_ms; the waiter was withdrawn"
                ),
            })
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
    let applied = app
        .propose(Submission {
            request_id: body.request_id,
            guard: guard(body.guard)?,
            command,
        })
        .await?;
    super::outcome::respond(&applied)
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
