//! Task endpoints: submit, claim (a long poll woken on apply), heartbeat, complete,
//! fail, cancel, retry, get, list.

use crate::sm::tasks::TaskCommand;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::error_code::ErrorCode;
use super::extract::{JsonBody, QueryParams};
use super::input::{json_text, TaskIdPath};
use super::propose::{CommandBody, Proposed};
use super::sessions::raw;
use super::task_finish::{ClaimNext, Finish};
use super::{AppState, Consistency, ReadQuery};
use crate::auth::{Caller, Kind, Need};
use crate::limits::Limits;
use crate::sm::sessions::SessionId;
use crate::sm::tasks::{NewTask, Task, TaskId, TaskState};
use crate::sm::{Command, Outcome, Submission, TaskOutcome};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    kind: String,
    payload: Option<super::input::JsonValue>,
    #[serde(default)]
    required_capabilities: Vec<String>,
    #[serde(default)]
    priority: i32,
    #[serde(default = "default_max_attempts")]
    max_attempts: u32,
    #[serde(default = "default_lease_ms")]
    lease_ms: u64,
    not_before_ms: Option<u64>,
    #[serde(default)]
    depends_on: Vec<TaskId>,
    idempotency_key: Option<String>,
    guard: Option<super::input::GuardBody>,
    request_id: Option<String>,
}

impl SubmitBody {
    /// The task kind (what a tasks scope's prefix is checked against).
    pub fn kind(&self) -> &str {
        &self.kind
    }
}

fn default_max_attempts() -> u32 {
    3
}

fn default_lease_ms() -> u64 {
    30_000
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    session_id: SessionId,
    #[serde(default)]
    wait_ms: u64,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatBody {
    fencing_token: u64,
    progress: Option<super::input::JsonValue>,
    guard: Option<super::input::GuardBody>,
    request_id: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteBody {
    fencing_token: u64,
    result: Option<super::input::JsonValue>,
    guard: Option<super::input::GuardBody>,
    request_id: Option<String>,
    claim_next: Option<ClaimNext>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailBody {
    fencing_token: u64,
    error: String,
    #[serde(default = "default_true")]
    retryable: bool,
    guard: Option<super::input::GuardBody>,
    request_id: Option<String>,
    claim_next: Option<ClaimNext>,
}

impl Finish for CompleteBody {
    fn take_claim_next(&mut self) -> Option<ClaimNext> {
        self.claim_next.take()
    }
}

impl Finish for FailBody {
    fn take_claim_next(&mut self) -> Option<ClaimNext> {
        self.claim_next.take()
    }
}

fn default_true() -> bool {
    true
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    state: Option<String>,
    kind: Option<String>,
    after: Option<TaskId>,
    limit: Option<usize>,
    #[serde(default)]
    #[param(inline)]
    consistency: Consistency,
}

/// The full view of a task, with its dependencies' states and results (so a
/// dependent can read what it joins on).
pub fn view(task: &Task, all: &crate::sm::tasks::Tasks) -> Value {
    let dependencies: Vec<Value> = task
        .spec
        .depends_on
        .iter()
        .map(|id| match all.get(*id) {
            Some(dependency) => json!({
                "task_id": id,
                "state": dependency.state.name(),
                "result": dependency.result_json.as_deref().map(raw),
            }),
            None => json!({ "task_id": id, "state": null }),
        })
        .collect();
    let errors: Vec<Value> = task
        .errors
        .iter()
        .map(|e| json!({ "attempt": e.attempt, "reason": e.reason, "error": e.error, "at_ms": e.at_ms }))
        .collect();
    json!({
        "task_id": task.id,
        "kind": task.spec.kind,
        "payload": raw(&task.spec.payload_json),
        "required_capabilities": task.spec.required_capabilities,
        "priority": task.spec.priority,
        "max_attempts": task.spec.max_attempts,
        "lease_ms": task.spec.lease_ms,
        "depends_on": task.spec.depends_on,
        "idempotency_key": task.spec.idempotency_key,
        "state": task.state.name(),
        "attempts": task.attempts,
        "not_before_at_ms": task.not_before_ms,
        "session_id": task.session_id,
        "fencing_token": if task.fencing_token == 0 { None } else { Some(task.fencing_token) },
        "lease_expires_at_ms": (task.state == TaskState::Assigned).then_some(task.lease_expires_at_ms),
        "claimed": task.claimed,
        "progress": task.progress_json.as_deref().map(raw),
        "cancel_requested": task.cancel_requested,
        "result": task.result_json.as_deref().map(raw),
        "errors": errors,
        "dependencies": dependencies,
        "created_at_ms": task.created_at_ms,
        "updated_at_ms": task.updated_at_ms,
    })
}

/// How a task outcome reads over HTTP (see `outcome::describe`).
pub fn describe(outcome: &TaskOutcome) -> Result<Value, ApiError> {
    Ok(match outcome {
        TaskOutcome::Submitted {
            task_id,
            state,
            existing,
        } => json!({ "task_id": task_id, "state": state.name(), "existing": existing }),
        TaskOutcome::Claimed {
            task_id,
            fencing_token,
            lease_expires_at_ms,
        } => json!({
            "task_id": task_id, "fencing_token": fencing_token,
            "lease_expires_at_ms": lease_expires_at_ms,
        }),
        TaskOutcome::NoneAssigned => json!({ "task": null }),
        TaskOutcome::LeaseExtended {
            lease_expires_at_ms,
            cancel_requested,
        } => json!({
            "lease_expires_at_ms": lease_expires_at_ms, "cancel_requested": cancel_requested,
        }),
        TaskOutcome::Updated { task_id, state } => {
            json!({ "task_id": task_id, "state": state.name() })
        }
        TaskOutcome::NotFound { task_id } => {
            return Err(ApiError::NotFound {
                code: ErrorCode::TaskNotFound,
                message: format!("no task {task_id}"),
            })
        }
        TaskOutcome::Finished { finished, next } => {
            let mut body = describe(finished)?;
            body["next"] = match next.as_ref() {
                TaskOutcome::Claimed { .. } => describe(next)?,
                _ => Value::Null,
            };
            body
        }
    })
}

pub async fn submit(
    State(app): State<AppState>,
    acting: super::extract::Acting,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<SubmitBody>,
) -> Result<Response, ApiError> {
    super::input::name(&app.limits, "kind", &body.kind)?;
    // The route needs a tasks scope; the prefix applies to the task's kind.
    let need = Need::AgentOf(Kind::Tasks, body.kind.clone());
    if !caller.grants.allows(&need) {
        let message = format!(
            "the token of {:?} may not submit tasks of kind {:?}",
            caller.subject, body.kind
        );
        return Err(ApiError::Forbidden(message));
    }
    let (new, request_id, guard) = new_task(&app.limits, body)?;
    app.propose_and_respond(
        &acting,
        request_id,
        guard,
        Command::Task(TaskCommand::Submit(new)),
    )
    .await
}

/// A submit body checked against `limits`: the task, its `request_id` and `guard`
/// (also used for a transaction's `submit_task` op, `txn`).
pub fn new_task(
    limits: &Limits,
    body: SubmitBody,
) -> Result<(NewTask, Option<String>, Option<super::input::GuardBody>), ApiError> {
    super::input::name(limits, "kind", &body.kind)?;
    let required_capabilities = super::input::capabilities(limits, body.required_capabilities)?;
    if body.max_attempts == 0 || body.max_attempts > limits.max_task_attempts {
        return Err(ApiError::invalid(
            ErrorCode::InvalidMaxAttempts,
            format!("max_attempts must be 1 to {}", limits.max_task_attempts),
        ));
    }
    super::input::duration(limits, "lease_ms", body.lease_ms)?;
    if body
        .not_before_ms
        .is_some_and(|delay| delay > limits.max_not_before_ms)
    {
        return Err(ApiError::invalid(
            ErrorCode::InvalidDuration,
            format!("not_before_ms is at most {}", limits.max_not_before_ms),
        ));
    }
    if body.depends_on.len() > limits.max_depends_on {
        return Err(ApiError::invalid(
            ErrorCode::TooManyDependencies,
            format!("depends_on lists at most {} tasks", limits.max_depends_on),
        ));
    }
    if let Some(key) = &body.idempotency_key {
        super::input::name(limits, "idempotency_key", key)?;
    }
    let new = NewTask {
        kind: body.kind,
        payload_json: super::input::json_text(limits, body.payload, "null")?,
        required_capabilities,
        priority: body.priority,
        max_attempts: body.max_attempts,
        lease_ms: body.lease_ms,
        not_before_ms: body.not_before_ms,
        depends_on: body.depends_on,
        idempotency_key: body.idempotency_key,
    };
    Ok((new, body.request_id, body.guard))
}

/// Claims the session's next assigned task, waiting up to `wait_ms` for one. The
/// wait is woken by applied state (an assignment to this session), not a poll loop.
/// 204 when the wait ends with nothing.
pub async fn claim(
    State(app): State<AppState>,
    acting: super::extract::Acting,
    JsonBody(body): JsonBody<ClaimBody>,
) -> Result<Response, ApiError> {
    let deadline = tokio::time::Instant::now() + super::input::wait(&app.limits, body.wait_ms)?;
    match claim_until(&app, &acting, body.session_id, deadline, false).await? {
        Claim::Claimed(body, index) => {
            super::observe::record_index(index);
            let mut response = Json(body).into_response();
            response
                .headers_mut()
                .insert(super::forward::INDEX_HEADER, index.into());
            Ok(response)
        }
        Claim::Nothing => Ok(StatusCode::NO_CONTENT.into_response()),
        Claim::Refused(applied) => super::outcome::respond(&applied),
    }
}

/// What a claim's wait ended with.
pub enum Claim {
    /// The claim answer `{task, fencing_token, lease_expires_at_ms, index}` and its
    /// command index.
    Claimed(Value, u64),
    /// The wait ended with nothing assigned.
    Nothing,
    /// The claim was refused (the session is gone, not the caller's...).
    Refused(crate::sm::Applied),
}

/// The claim answer of a `Claimed` outcome applied at `index`, with the task's view.
pub fn claimed_body(app: &AppState, outcome: &TaskOutcome, index: u64) -> Option<Value> {
    let TaskOutcome::Claimed {
        task_id,
        fencing_token,
        lease_expires_at_ms,
    } = outcome
    else {
        return None;
    };
    let applied_state = app.replica.state();
    let tasks = &applied_state.tasks;
    let task = tasks.get(*task_id).map(|task| view(task, tasks));
    Some(json!({
        "task": task,
        "fencing_token": fencing_token,
        "lease_expires_at_ms": lease_expires_at_ms,
        "index": index,
    }))
}

/// Proposes claims for `session_id` until one gets a task or `deadline` passes,
/// waiting between them for applied state to assign it one (or end it); with
/// `wait_first`, waiting before the first (a claim just found nothing).
pub async fn claim_until(
    app: &AppState,
    acting: &super::extract::Acting,
    session_id: SessionId,
    deadline: tokio::time::Instant,
    wait_first: bool,
) -> Result<Claim, ApiError> {
    if wait_first && !wait_assigned(app, session_id, deadline).await {
        return Ok(Claim::Nothing);
    }
    loop {
        let applied = app
            .propose(Submission {
                guard: None,
                acting_as: acting.held_to(),
                request_id: None,
                command: Command::Task(TaskCommand::Claim { session_id }),
            })
            .await?;
        match &applied.outcome {
            Outcome::Task(outcome @ TaskOutcome::Claimed { .. }) => {
                let body = claimed_body(app, outcome, applied.index).expect("a claim");
                return Ok(Claim::Claimed(body, applied.index));
            }
            Outcome::Task(TaskOutcome::NoneAssigned) => {}
            _ => return Ok(Claim::Refused(applied)),
        }
        if !wait_assigned(app, session_id, deadline).await {
            return Ok(Claim::Nothing);
        }
    }
}

/// Waits until an unclaimed task is assigned to `session_id` or it ends (`true`),
/// or `deadline` passes (`false`).
async fn wait_assigned(
    app: &AppState,
    session_id: SessionId,
    deadline: tokio::time::Instant,
) -> bool {
    app.wait_for_state(deadline, |state| {
        let gone = state.sessions.get(session_id).is_none();
        let waiting = state
            .tasks
            .assigned_to(session_id)
            .into_iter()
            .any(|id| state.tasks.get(id).is_some_and(|task| !task.claimed));
        (gone || waiting).then_some(())
    })
    .await
    .is_some()
}

impl CommandBody for HeartbeatBody {
    type Path = TaskIdPath;

    fn command(self, path: TaskIdPath, limits: &Limits) -> Result<Proposed, ApiError> {
        let task_id = path.0;
        let progress_json = match self.progress {
            Some(progress) => Some(json_text(limits, Some(progress), "null")?),
            None => None,
        };
        let command = Command::Task(TaskCommand::Heartbeat {
            task_id,
            fencing_token: self.fencing_token,
            progress_json,
        });
        Ok(Proposed::new(command, self.request_id, self.guard))
    }
}

impl CommandBody for CompleteBody {
    type Path = TaskIdPath;

    fn command(self, path: TaskIdPath, limits: &Limits) -> Result<Proposed, ApiError> {
        let task_id = path.0;
        let result_json = json_text(limits, self.result, "null")?;
        let command = Command::Task(TaskCommand::Complete {
            task_id,
            fencing_token: self.fencing_token,
            result_json,
        });
        Ok(Proposed::new(command, self.request_id, self.guard))
    }
}

impl CommandBody for FailBody {
    type Path = TaskIdPath;

    fn command(self, path: TaskIdPath, limits: &Limits) -> Result<Proposed, ApiError> {
        let task_id = path.0;
        if self.error.len() > limits.max_value_bytes {
            let limit = limits.max_value_bytes;
            return Err(ApiError::TooLarge { limit });
        }
        let command = Command::Task(TaskCommand::Fail {
            task_id,
            fencing_token: self.fencing_token,
            error: self.error,
            retryable: self.retryable,
        });
        Ok(Proposed::new(command, self.request_id, self.guard))
    }
}

/// The body of a task command that carries only `request_id` and `guard`.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlainBody<const RETRY: bool> {
    guard: Option<super::input::GuardBody>,
    request_id: Option<String>,
}

/// `DELETE /v1/tasks/{id}`.
pub type CancelBody = PlainBody<false>;
/// `POST /v1/tasks/{id}/retry`.
pub type RetryBody = PlainBody<true>;

impl<const RETRY: bool> CommandBody for PlainBody<RETRY> {
    type Path = TaskIdPath;

    fn command(self, path: TaskIdPath, _: &Limits) -> Result<Proposed, ApiError> {
        let task_id = path.0;
        let command = match RETRY {
            true => TaskCommand::Retry { task_id },
            false => TaskCommand::Cancel { task_id },
        };
        Ok(Proposed::new(
            Command::Task(command),
            self.request_id,
            self.guard,
        ))
    }
}

/// `DELETE /v1/tasks/{id}` and `POST /v1/tasks/{id}/retry` (routed as
/// `by_kind::<false>` / `by_kind::<true>`): like `propose::<PlainBody<RETRY>>`, but, as
/// for submit, the caller's tasks scope must cover the task's kind. A task's kind
/// never changes, so the leader's applied state (where the route is served) answers
/// it; a task it does not have goes on to the state machine, which answers
/// `task_not_found`.
pub async fn by_kind<const RETRY: bool>(
    State(app): State<AppState>,
    acting: super::extract::Acting,
    Extension(caller): Extension<Caller>,
    path: TaskIdPath,
    JsonBody(body): JsonBody<PlainBody<RETRY>>,
) -> Result<Response, ApiError> {
    if !caller.grants.is_admin() {
        let kind = app
            .replica
            .state()
            .tasks
            .get(path.0)
            .map(|task| task.spec.kind.clone());
        if let Some(kind) = kind {
            if !caller
                .grants
                .allows(&Need::AgentOf(Kind::Tasks, kind.clone()))
            {
                let verb = if RETRY { "retry" } else { "cancel" };
                return Err(ApiError::Forbidden(format!(
                    "the token of {:?} may not {verb} tasks of kind {kind:?}",
                    caller.subject
                )));
            }
        }
    }
    let Proposed {
        command,
        request_id,
        guard,
    } = body.command(path, &app.limits)?;
    app.propose_and_respond(&acting, request_id, guard, command)
        .await
}

pub async fn get(
    State(app): State<AppState>,
    super::input::TaskIdPath(task_id): super::input::TaskIdPath,
    QueryParams(query): QueryParams<ReadQuery>,
) -> Result<Response, ApiError> {
    let look = |state: &crate::sm::State| {
        let tasks = &state.tasks;
        tasks.get(task_id).map(|task| view(task, tasks))
    };
    let missing = || format!("no task {task_id}");
    app.read_view(query.consistency, look, ErrorCode::TaskNotFound, missing)
        .await
}

impl super::resource::ListQuery for ListQuery {
    fn page(&self) -> (Option<usize>, Consistency) {
        (self.limit, self.consistency)
    }

    fn list(self, applied: &crate::sm::State, limit: usize) -> Result<Response, ApiError> {
        let state = super::input::state_filter(self.state.as_deref(), "task", TaskState::parse)?;
        let tasks = &applied.tasks;
        let matching = tasks
            .range_from(self.after)
            .filter(|task| state.is_none_or(|s| task.state == s))
            .filter(|task| self.kind.as_ref().is_none_or(|k| &task.spec.kind == k));
        let views = matching.map(|task| view(task, tasks));
        Ok(super::list_page(views, limit, "task_id"))
    }
}
