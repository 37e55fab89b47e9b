//! `POST /v1/tasks/{id}/complete` and `.../fail`, with the optional `claim_next`:
//! finish the task and claim the worker's next one in the same request — and, when
//! the cluster is at format 8, in the same command (`TaskCommand::FinishAndClaim`:
//! the finish, the assignment the freed capacity allows, then the claim, in one
//! step). When no task is ready, the claim long-polls up to `claim_next.wait_ms`
//! as `POST /v1/tasks/claim` does. What SQS and River workers do: a task cycle in
//! two requests (submit; complete-and-claim) instead of three.
//!
//! Owns the request shape only: the rules are the state machine's (`sm::tasks`),
//! the claim's wait is `tasks::claim_until`'s.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use super::extract::{Acting, JsonBody};
use super::input::TaskIdPath;
use super::propose::{CommandBody, Proposed};
use super::tasks::{claim_until, claimed_body, Claim};
use super::AppState;
use crate::sm::tasks::TaskCommand;
use crate::sm::{Command, Outcome, TaskOutcome};

/// The first format whose replicas apply `FinishAndClaim`.
const FINISH_AND_CLAIM_FORMAT: u32 = 8;

/// `claim_next` of a complete or fail: claim the next task assigned to the session
/// that held this one, waiting up to `wait_ms` for one (0: only if one is ready).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimNext {
    #[serde(default)]
    pub wait_ms: u64,
}

/// A body that finishes a task and may ask for the next one.
pub trait Finish: CommandBody<Path = TaskIdPath> {
    /// Takes `claim_next` out of the body (what is left is the plain command).
    fn take_claim_next(&mut self) -> Option<ClaimNext>;
}

/// Finishes the task; with `claim_next`, also answers `next`: the claim answer
/// (`{task, fencing_token, lease_expires_at_ms, index}`) or `null` when nothing
/// was assigned within the wait.
pub async fn finish<B: Finish>(
    State(app): State<AppState>,
    acting: Acting,
    path: TaskIdPath,
    JsonBody(mut body): JsonBody<B>,
) -> Result<Response, ApiError> {
    let task_id = path.0;
    let claim_next = body.take_claim_next();
    let Proposed {
        command,
        request_id,
        guard,
    } = body.command(path, &app.limits)?;
    let Some(claim_next) = claim_next else {
        return app
            .propose_and_respond(&acting, request_id, guard, command)
            .await;
    };
    let deadline =
        tokio::time::Instant::now() + super::input::wait(&app.limits, claim_next.wait_ms)?;
    let (combined, session_id) = {
        let state = app.replica.state();
        let holder = state.tasks.get(task_id).and_then(|task| task.session_id);
        (state.active_format() >= FINISH_AND_CLAIM_FORMAT, holder)
    };
    let command = match command {
        Command::Task(finish) if combined => Command::Task(TaskCommand::FinishAndClaim {
            finish: Box::new(finish),
        }),
        // A cluster not yet upgraded: the finish alone, then a claim.
        command => command,
    };
    let applied = app
        .propose_command(&acting, request_id, guard, command)
        .await?;
    let next = match &applied.outcome {
        Outcome::Task(TaskOutcome::Finished { next, .. }) => {
            claimed_body(&app, next, applied.index)
        }
        Outcome::Task(TaskOutcome::Updated { .. }) => None,
        _ => return super::outcome::respond(&applied),
    };
    // Claimed in the same command when one was ready; else the claim's wait (which
    // for a finish applied alone starts with a claim).
    let wait_first = combined;
    let waits = claim_next.wait_ms > 0 || !combined;
    let next = match (next, session_id) {
        (Some(next), _) => Some(next),
        (None, Some(session_id)) if waits => {
            match claim_until(&app, &acting, session_id, deadline, wait_first).await? {
                Claim::Claimed(next, _) => Some(next),
                // The holder's session ended meanwhile: nothing to claim for it.
                Claim::Nothing | Claim::Refused(_) => None,
            }
        }
        _ => None,
    };
    let mut answer = super::outcome::describe(&applied)?;
    answer["next"] = next.unwrap_or(Value::Null);
    super::observe::record_index(applied.index);
    let mut response = Json(answer).into_response();
    response
        .headers_mut()
        .insert(super::forward::INDEX_HEADER, applied.index.into());
    Ok(response)
}
