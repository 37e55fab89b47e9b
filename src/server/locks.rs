//! Lock endpoints: acquire (optionally waiting, woken on apply); release and get
//! through `resource`'s shared handlers.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::error_code::ErrorCode;
use super::extract::JsonBody;
use super::resource::{Release, View};
use super::wait::{acquire_or_withdraw, Acquire, Acquired, Queue};
use super::AppState;
use crate::limits::MAX_LOCK_DELAY_MS;
use crate::sm::locks::{LockCommand, LockMode};
use crate::sm::sessions::SessionId;
use crate::sm::{Command, LockOutcome};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = LockAcquireBody)]
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

/// How a lock outcome reads over HTTP (see `outcome::describe`).
pub fn describe(outcome: &LockOutcome) -> Result<Value, ApiError> {
    Ok(match outcome {
        LockOutcome::Granted { fencing_token } => json!({ "fencing_token": fencing_token }),
        LockOutcome::Queued { waiter_id } => json!({ "waiter_id": waiter_id }),
        LockOutcome::Released => json!({ "released": true }),
        LockOutcome::Held => {
            let message = "the lock is held by another session";
            return Err(ApiError::conflict(ErrorCode::LockHeld, message));
        }
        LockOutcome::Deadlock { cycle } => {
            let cycle = cycle.clone();
            return Err(ApiError::Deadlock { cycle });
        }
    })
}

pub async fn acquire(
    State(app): State<AppState>,
    acting: super::extract::Acting,
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
        queue: Queue::Lock,
        name: name.clone(),
        session_id: body.session_id,
        deadline,
    };
    // Woken by the apply loop: granted, or the waiter vanished (its session ended).
    let acquired = acquire_or_withdraw(&app, &acting, body.request_id, command, how).await?;
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
            return Err(ApiError::conflict(
                ErrorCode::LockHeld,
                format!("{name:?} {why}"),
            ));
        }
    };
    let index = app.replica.state().last_command_index;
    Ok(Json(json!({ "fencing_token": fencing_token, "index": index })).into_response())
}

/// The lock room's shared endpoints (`resource::get` / `resource::release`).
pub struct Lock;

impl Release for Lock {
    fn release(name: String, session_id: SessionId, fencing_token: u64) -> Command {
        Command::Lock(LockCommand::Release {
            name,
            session_id,
            fencing_token,
        })
    }
}

impl View for Lock {
    /// Holders with their tokens and waiters in order.
    fn view(state: &crate::sm::State, name: &str) -> Value {
        let lock = state.locks.get(name).cloned().unwrap_or_default();
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
        json!({ "name": name, "holders": holders, "waiters": waiters })
    }
}
