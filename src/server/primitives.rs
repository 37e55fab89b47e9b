//! Semaphore, barrier and election endpoints. Waits go through `wait`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::error_code::ErrorCode;
use super::extract::JsonBody;
use super::propose::{CommandBody, Proposed};
use super::resource::{Release, View};
use super::sessions::raw;
use super::wait::{
    acquire_or_withdraw, propose_queueing, wait_or_withdraw, Acquire, Acquired, Queue, Waited,
};
use super::AppState;
use crate::limits::Limits;
use crate::sm::barriers::BarrierCommand;
use crate::sm::elections::ElectionCommand;
use crate::sm::semaphores::SemaphoreCommand;
use crate::sm::sessions::SessionId;
use crate::sm::{BarrierOutcome, Command, ElectionOutcome, Outcome, SemaphoreOutcome};

// ----- semaphores ---------------------------------------------------------------

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SemaphoreAcquireBody)]
pub struct AcquireBody {
    session_id: SessionId,
    #[serde(default = "one")]
    permits: u32,
    limit: u32,
    #[serde(default)]
    wait_ms: u64,
    request_id: Option<String>,
}

fn one() -> u32 {
    1
}

/// How a semaphore outcome reads over HTTP (see `outcome::describe`).
pub fn describe_semaphore(outcome: &SemaphoreOutcome) -> Result<Value, ApiError> {
    Ok(match outcome {
        SemaphoreOutcome::Granted { fencing_token } => json!({ "fencing_token": fencing_token }),
        SemaphoreOutcome::Queued { waiter_id } => json!({ "waiter_id": waiter_id }),
        SemaphoreOutcome::Released => json!({ "released": true }),
        SemaphoreOutcome::Unavailable => {
            let message = "not enough free permits";
            return Err(ApiError::conflict(ErrorCode::PermitsUnavailable, message));
        }
        SemaphoreOutcome::LimitMismatch { limit } => {
            let message = format!("this semaphore's limit is {limit}, fixed by its first acquirer");
            return Err(ApiError::conflict(ErrorCode::LimitMismatch, message));
        }
    })
}

pub async fn semaphore_acquire(
    State(app): State<AppState>,
    acting: super::extract::Acting,
    super::input::ResourceName(name): super::input::ResourceName,
    JsonBody(body): JsonBody<AcquireBody>,
) -> Result<Response, ApiError> {
    let max = app.limits.max_semaphore_limit;
    let limit = super::input::count("limit", body.limit, max, ErrorCode::InvalidLimit)?;
    let deadline = tokio::time::Instant::now() + super::input::wait(&app.limits, body.wait_ms)?;
    let command = Command::Semaphore(SemaphoreCommand::Acquire {
        name: name.clone(),
        session_id: body.session_id,
        permits: body.permits,
        limit,
        wait: body.wait_ms > 0,
    });
    let how = Acquire {
        queue: Queue::Semaphore,
        name: name.clone(),
        session_id: body.session_id,
        deadline,
    };
    let acquired = acquire_or_withdraw(&app, &acting, body.request_id, command, how).await?;
    match acquired {
        Acquired::Answered(applied) => super::outcome::respond(&applied),
        Acquired::Granted(token) => Ok(Json(json!({ "fencing_token": token })).into_response()),
        Acquired::NotGranted { timed_out: false } => Err(ApiError::conflict(
            ErrorCode::PermitsUnavailable,
            format!("{name:?}: this request's waiter was withdrawn"),
        )),
        Acquired::NotGranted { timed_out: true } => Err(ApiError::Conflict {
            code: ErrorCode::PermitsUnavailable,
            message: format!(
                "{name:?} had no free permits within wait_ms; the waiter was withdrawn"
            ),
        }),
    }
}

/// The semaphore room's shared endpoints (`resource::get` / `resource::release`).
pub struct Semaphore;

impl Release for Semaphore {
    fn release(name: String, session_id: SessionId, fencing_token: u64) -> Command {
        Command::Semaphore(SemaphoreCommand::Release {
            name,
            session_id,
            fencing_token,
        })
    }
}

impl View for Semaphore {
    fn view(state: &crate::sm::State, name: &str) -> Value {
        let semaphore = state.semaphores.get(name).cloned().unwrap_or_default();
        let holders: Vec<_> = semaphore
            .holders
            .iter()
            .map(|p| json!({ "session_id": p.session_id, "permits": p.permits, "fencing_token": p.fencing_token, "acquired_at_ms": p.acquired_at_ms }))
            .collect();
        let waiters: Vec<_> = semaphore
            .waiters
            .iter()
            .map(|w| json!({ "session_id": w.session_id, "permits": w.permits, "waiter_id": w.waiter_id, "since_ms": w.since_ms }))
            .collect();
        json!({ "name": name, "limit": semaphore.limit, "used": semaphore.used(), "holders": holders, "waiters": waiters })
    }
}

// ----- barriers -----------------------------------------------------------------

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BarrierBody {
    session_id: SessionId,
    parties: u32,
    #[serde(default)]
    wait_ms: u64,
}

/// How a barrier outcome reads over HTTP (see `outcome::describe`).
pub fn describe_barrier(outcome: &BarrierOutcome) -> Value {
    let (generation, released, broken) = match outcome {
        BarrierOutcome::Released { generation } => (generation, true, false),
        BarrierOutcome::Waiting { generation } => (generation, false, false),
        BarrierOutcome::Broken { generation } => (generation, false, true),
        BarrierOutcome::Left => return json!({ "withdrawn": true }),
    };
    json!({ "generation": generation, "released": released, "broken": broken })
}

/// Arrives and waits for the generation to be released (or broken).
pub async fn barrier_wait(
    State(app): State<AppState>,
    acting: super::extract::Acting,
    super::input::ResourceName(name): super::input::ResourceName,
    JsonBody(body): JsonBody<BarrierBody>,
) -> Result<Response, ApiError> {
    let max = app.limits.max_barrier_parties;
    let parties = super::input::count("parties", body.parties, max, ErrorCode::InvalidParties)?;
    let deadline = tokio::time::Instant::now() + super::input::wait(&app.limits, body.wait_ms)?;
    let command = Command::Barrier(BarrierCommand::Wait {
        name: name.clone(),
        session_id: body.session_id,
        parties,
    });
    let (queued_on, session_id) = (name.clone(), body.session_id);
    let applied = propose_queueing(&app, &acting, None, command, move |outcome| {
        let Outcome::Barrier(BarrierOutcome::Waiting { generation }) = outcome else {
            return None;
        };
        Some(Command::Barrier(BarrierCommand::Leave {
            name: queued_on,
            session_id,
            generation: *generation,
        }))
    })
    .await?;
    let Outcome::Barrier(BarrierOutcome::Waiting { generation }) = applied.outcome else {
        return super::outcome::respond(&applied);
    };
    let withdraw = Command::Barrier(BarrierCommand::Leave {
        name: name.clone(),
        session_id: body.session_id,
        generation,
    });
    let waited = wait_or_withdraw(&app, deadline, withdraw, |state| {
        let barrier = state.barriers.get(&name)?;
        (barrier.generation != generation)
            .then(|| barrier.ended.get(&generation).copied().unwrap_or(true))
    })
    .await?;
    let (released, broken) = match waited {
        Waited::Found(broken) => (!broken, broken),
        Waited::Withdrawn(Outcome::Barrier(BarrierOutcome::Released { .. })) => (true, false),
        Waited::Withdrawn(Outcome::Barrier(BarrierOutcome::Broken { .. })) => (false, true),
        Waited::Withdrawn(_) => (false, false),
    };
    Ok(
        Json(json!({ "generation": generation, "released": released, "broken": broken }))
            .into_response(),
    )
}

/// The barrier room's shared view (`resource::get`).
pub struct Barrier;

impl View for Barrier {
    fn view(state: &crate::sm::State, name: &str) -> Value {
        let barrier = state.barriers.get(name).cloned().unwrap_or_default();
        json!({
            "name": name,
            "parties": barrier.parties,
            "generation": barrier.generation,
            "arrived": barrier.arrived,
            "ended": barrier.ended.iter().map(|(g, broken)| json!({ "generation": g, "broken": broken })).collect::<Vec<_>>(),
        })
    }
}

// ----- elections ----------------------------------------------------------------

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignBody {
    session_id: SessionId,
    value: Option<super::input::JsonValue>,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    wait_ms: u64,
    request_id: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResignBody {
    session_id: SessionId,
    term: u64,
    guard: Option<super::input::GuardBody>,
    request_id: Option<String>,
}

/// How an election outcome reads over HTTP (see `outcome::describe`).
pub fn describe_election(outcome: &ElectionOutcome) -> Value {
    match outcome {
        ElectionOutcome::Elected { term } => json!({ "leader": true, "term": term }),
        ElectionOutcome::Queued { waiter_id } => json!({ "leader": false, "waiter_id": waiter_id }),
        ElectionOutcome::NotElected {
            leader_session_id,
            term,
        } => json!({ "leader": false, "leader_session_id": leader_session_id, "term": term }),
        ElectionOutcome::Resigned => json!({ "released": true }),
        ElectionOutcome::Withdrawn => json!({ "withdrawn": true }),
    }
}

fn leader_view(app: &AppState, name: &str, session_id: SessionId) -> Response {
    let applied = app.replica.state();
    let leader = applied.elections.get(name).and_then(|e| e.leader.clone());
    let body = match leader {
        Some(leader) => json!({
            "leader": leader.session_id == session_id,
            "term": leader.term,
            "leader_session_id": leader.session_id,
            "value": raw(&leader.value_json),
        }),
        None => json!({ "leader": false, "term": null, "leader_session_id": null, "value": null }),
    };
    Json(body).into_response()
}

/// Campaigns; with `wait_ms`, waits to become leader (higher priority first, then FIFO).
pub async fn campaign(
    State(app): State<AppState>,
    acting: super::extract::Acting,
    super::input::ResourceName(name): super::input::ResourceName,
    JsonBody(body): JsonBody<CampaignBody>,
) -> Result<Response, ApiError> {
    let deadline = tokio::time::Instant::now() + super::input::wait(&app.limits, body.wait_ms)?;
    let value_json = super::input::json_text(&app.limits, body.value, "null")?;
    let command = Command::Election(ElectionCommand::Campaign {
        name: name.clone(),
        session_id: body.session_id,
        value_json,
        priority: body.priority,
        wait: body.wait_ms > 0,
    });
    let how = Acquire {
        queue: Queue::Election,
        name: name.clone(),
        session_id: body.session_id,
        deadline,
    };
    let acquired = acquire_or_withdraw(&app, &acting, body.request_id, command, how).await?;
    match acquired {
        Acquired::Answered(applied)
            if !matches!(
                applied.outcome,
                Outcome::Election(ElectionOutcome::Elected { .. })
                    | Outcome::Election(ElectionOutcome::NotElected { .. })
            ) =>
        {
            super::outcome::respond(&applied)
        }
        // Elected or not (at once, within the wait or not at all): the current view.
        _ => Ok(leader_view(&app, &name, body.session_id)),
    }
}

impl CommandBody for ResignBody {
    type Path = super::input::ResourceName;

    fn command(self, name: super::input::ResourceName, _: &Limits) -> Result<Proposed, ApiError> {
        let command = Command::Election(ElectionCommand::Resign {
            name: name.0,
            session_id: self.session_id,
            term: self.term,
        });
        Ok(Proposed::new(command, self.request_id, self.guard))
    }
}

/// The election room's shared view (`resource::get`).
pub struct Election;

impl View for Election {
    fn view(state: &crate::sm::State, name: &str) -> Value {
        let election = state.elections.get(name).cloned().unwrap_or_default();
        let candidates: Vec<_> = election
            .candidates
            .iter()
            .map(|c| json!({ "session_id": c.session_id, "priority": c.priority, "waiter_id": c.waiter_id, "value": raw(&c.value_json) }))
            .collect();
        let leader = election.leader.as_ref();
        json!({
            "name": name,
            "leader_session_id": leader.map(|l| l.session_id),
            "term": leader.map(|l| l.term),
            "value": leader.map(|l| raw(&l.value_json)),
            "since_ms": leader.map(|l| l.since_ms),
            "candidates": candidates,
        })
    }
}
