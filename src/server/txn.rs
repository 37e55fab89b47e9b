//! `POST /v1/txn`: one atomic log entry over KV and primitives (etcd-style
//! compare / success / failure). This file turns the body into a
//! `sm::txn::TxnCommand` — checking its shape against `Limits` and every compare
//! and op against the caller's scopes, as the op's own route would — and words the
//! outcome. The all-or-nothing rule is the state machine's (`sm::txn`). Like every
//! handler file it reaches the replica only through `AppState`.

use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::error_code::ErrorCode;
use super::extract::{Acting, JsonBody};
use super::input::JsonValue;
use super::AppState;
use crate::auth::{Caller, Kind, Need};
use crate::limits::Limits;
use crate::sm::kv::KvCommand;
use crate::sm::locks::{LockCommand, LockMode};
use crate::sm::semaphores::SemaphoreCommand;
use crate::sm::sessions::SessionId;
use crate::sm::tasks::{TaskCommand, TaskId, TaskState};
use crate::sm::txn::{Compare, TxnCommand, TxnOutcome};
use crate::sm::{Applied, Command};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxnBody {
    #[serde(default)]
    compare: Vec<CompareBody>,
    #[serde(default)]
    success: Vec<OpBody>,
    #[serde(default)]
    failure: Vec<OpBody>,
    request_id: Option<String>,
}

/// One comparison: `{key, version}`, `{key, exists}`, `{key, value}`,
/// `{lock, fencing_token}`, `{election, term}` or `{task, state}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompareBody {
    key: Option<String>,
    version: Option<u64>,
    exists: Option<bool>,
    value: Option<JsonValue>,
    lock: Option<String>,
    fencing_token: Option<u64>,
    election: Option<String>,
    term: Option<u64>,
    task: Option<TaskId>,
    state: Option<String>,
}

/// One op of a branch, named by its only field.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OpBody {
    Put(TxnPut),
    Delete(TxnDelete),
    SubmitTask(super::tasks::SubmitBody),
    CancelTask(TxnCancel),
    AcquireLock(TxnLockAcquire),
    ReleaseLock(TxnRelease),
    AcquireSemaphore(TxnSemaphoreAcquire),
    ReleaseSemaphore(TxnRelease),
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxnPut {
    key: String,
    value: JsonValue,
    if_version: Option<u64>,
    /// Makes the key ephemeral: deleted when this session ends.
    session_id: Option<SessionId>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxnDelete {
    key: String,
    if_version: Option<u64>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxnCancel {
    task_id: TaskId,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxnLockAcquire {
    name: String,
    session_id: SessionId,
    #[serde(default = "exclusive")]
    mode: String,
}

fn exclusive() -> String {
    "exclusive".into()
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxnRelease {
    name: String,
    session_id: SessionId,
    fencing_token: u64,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxnSemaphoreAcquire {
    name: String,
    session_id: SessionId,
    #[serde(default = "one")]
    permits: u32,
    limit: u32,
}

fn one() -> u32 {
    1
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::invalid(ErrorCode::InvalidTxn, message)
}

/// The caller's scopes must allow `need` for part `what` of the transaction.
fn allowed(caller: &Caller, need: Need, what: &str) -> Result<(), ApiError> {
    if caller.grants.allows(&need) {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "the token of {:?} does not allow {what}: it needs {need} (or admin)",
        caller.subject
    )))
}

/// A compare body as a comparison, and what reading it needs.
fn compare(limits: &Limits, body: CompareBody, i: usize) -> Result<(Compare, Need), ApiError> {
    let shape = (
        body.key,
        body.version,
        body.exists,
        body.value,
        body.lock,
        body.fencing_token,
        body.election,
        body.term,
        body.task,
        body.state,
    );
    let bad = || {
        invalid(format!(
            "compare {i} must be one of {{key, version}}, {{key, exists}}, {{key, value}}, \
             {{lock, fencing_token}}, {{election, term}}, {{task, state}}"
        ))
    };
    let read_key = |key: &String| -> Result<Need, ApiError> {
        super::input::key(limits, key)?;
        Ok(Need::ReadOf(Kind::Kv, key.clone()))
    };
    Ok(match shape {
        (Some(key), Some(version), None, None, None, None, None, None, None, None) => {
            let need = read_key(&key)?;
            (Compare::KeyVersion { key, version }, need)
        }
        (Some(key), None, Some(exists), None, None, None, None, None, None, None) => {
            let need = read_key(&key)?;
            (Compare::KeyExists { key, exists }, need)
        }
        (Some(key), None, None, Some(value), None, None, None, None, None, None) => {
            let need = read_key(&key)?;
            let value_json = super::input::json_text(limits, Some(value), "null")?;
            (Compare::KeyValue { key, value_json }, need)
        }
        (None, None, None, None, Some(lock), Some(fencing_token), None, None, None, None) => {
            super::input::resource_name(limits, &lock)?;
            let need = Need::ReadOf(Kind::Locks, lock.clone());
            (
                Compare::LockToken {
                    lock,
                    fencing_token,
                },
                need,
            )
        }
        (None, None, None, None, None, None, Some(election), Some(term), None, None) => {
            super::input::resource_name(limits, &election)?;
            let need = Need::ReadOf(Kind::Elections, election.clone());
            (Compare::ElectionTerm { election, term }, need)
        }
        (None, None, None, None, None, None, None, None, Some(task_id), Some(state)) => {
            let state = TaskState::parse(&state)
                .ok_or_else(|| invalid(format!("compare {i}: unknown task state {state:?}")))?;
            (Compare::TaskState { task_id, state }, Need::Read)
        }
        _ => return Err(bad()),
    })
}

/// An op body as a command, the bytes of values it carries, and what it needs.
fn op(app: &AppState, body: OpBody, i: usize) -> Result<(Command, usize, Need), ApiError> {
    let limits = &app.limits;
    Ok(match body {
        OpBody::Put(put) => {
            super::input::key(limits, &put.key)?;
            let value_json = super::input::json_text(limits, Some(put.value), "null")?;
            let bytes = value_json.len() + put.key.len();
            let need = Need::AgentOf(Kind::Kv, put.key.clone());
            let command = Command::Kv(KvCommand::Put {
                key: put.key,
                value_json,
                if_version: put.if_version,
                session_id: put.session_id,
            });
            (command, bytes, need)
        }
        OpBody::Delete(delete) => {
            super::input::key(limits, &delete.key)?;
            let need = Need::AgentOf(Kind::Kv, delete.key.clone());
            let bytes = delete.key.len();
            let command = Command::Kv(KvCommand::Delete {
                key: delete.key,
                if_version: delete.if_version,
            });
            (command, bytes, need)
        }
        OpBody::SubmitTask(submit) => {
            let need = Need::AgentOf(Kind::Tasks, submit.kind().to_owned());
            let (new, request_id, guard) = super::tasks::new_task(limits, submit)?;
            if request_id.is_some() || guard.is_some() {
                return Err(invalid(format!(
                    "op {i}: a submit_task op takes no request_id or guard (the transaction's request_id covers it)"
                )));
            }
            let bytes = new.payload_json.len() + new.kind.len();
            (Command::Task(TaskCommand::Submit(new)), bytes, need)
        }
        OpBody::CancelTask(TxnCancel { task_id }) => {
            // As for DELETE /v1/tasks/{id}: the scope must cover the task's kind (a
            // task the leader does not have is left to the state machine: not found).
            let kind = app
                .replica
                .state()
                .tasks
                .get(task_id)
                .map(|task| task.spec.kind.clone());
            let need = match kind {
                Some(kind) => Need::AgentOf(Kind::Tasks, kind),
                None => Need::AgentKind(Kind::Tasks),
            };
            (Command::Task(TaskCommand::Cancel { task_id }), 8, need)
        }
        OpBody::AcquireLock(acquire) => {
            super::input::resource_name(limits, &acquire.name)?;
            let mode = match acquire.mode.as_str() {
                "exclusive" => LockMode::Exclusive,
                "shared" => LockMode::Shared,
                other => {
                    return Err(ApiError::invalid(
                        ErrorCode::InvalidMode,
                        format!("op {i}: mode {other:?} is not exclusive or shared"),
                    ))
                }
            };
            let need = Need::AgentOf(Kind::Locks, acquire.name.clone());
            let bytes = acquire.name.len();
            let command = Command::Lock(LockCommand::Acquire {
                name: acquire.name,
                session_id: acquire.session_id,
                mode,
                wait: false,
                lock_delay_ms: 0,
                previous_token: None,
            });
            (command, bytes, need)
        }
        OpBody::ReleaseLock(release) => {
            super::input::resource_name(limits, &release.name)?;
            let need = Need::AgentOf(Kind::Locks, release.name.clone());
            let bytes = release.name.len();
            let command = Command::Lock(LockCommand::Release {
                name: release.name,
                session_id: release.session_id,
                fencing_token: release.fencing_token,
            });
            (command, bytes, need)
        }
        OpBody::AcquireSemaphore(acquire) => {
            super::input::resource_name(limits, &acquire.name)?;
            let max = limits.max_semaphore_limit;
            let limit = super::input::count("limit", acquire.limit, max, ErrorCode::InvalidLimit)?;
            let need = Need::AgentOf(Kind::Semaphores, acquire.name.clone());
            let bytes = acquire.name.len();
            let command = Command::Semaphore(SemaphoreCommand::Acquire {
                name: acquire.name,
                session_id: acquire.session_id,
                permits: acquire.permits,
                limit,
                wait: false,
            });
            (command, bytes, need)
        }
        OpBody::ReleaseSemaphore(release) => {
            super::input::resource_name(limits, &release.name)?;
            let need = Need::AgentOf(Kind::Semaphores, release.name.clone());
            let bytes = release.name.len();
            let command = Command::Semaphore(SemaphoreCommand::Release {
                name: release.name,
                session_id: release.session_id,
                fencing_token: release.fencing_token,
            });
            (command, bytes, need)
        }
    })
}

/// `POST /v1/txn`.
pub async fn txn(
    State(app): State<AppState>,
    acting: Acting,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<TxnBody>,
) -> Result<Response, ApiError> {
    let limits = &app.limits;
    if body.compare.len() > limits.max_txn_compares {
        let max = limits.max_txn_compares;
        return Err(invalid(format!("a transaction has at most {max} compares")));
    }
    for (name, branch) in [("success", &body.success), ("failure", &body.failure)] {
        if branch.len() > limits.max_txn_ops {
            let max = limits.max_txn_ops;
            return Err(invalid(format!("{name} has at most {max} ops")));
        }
    }
    let mut bytes = 0;
    let mut compares = Vec::with_capacity(body.compare.len());
    for (i, body) in body.compare.into_iter().enumerate() {
        let (compare, need) = compare(limits, body, i)?;
        allowed(&caller, need, &format!("compare {i}"))?;
        if let Compare::KeyValue { value_json, .. } = &compare {
            bytes += value_json.len();
        }
        compares.push(compare);
    }
    let mut branches = Vec::new();
    for (name, branch) in [("success", body.success), ("failure", body.failure)] {
        let mut commands = Vec::with_capacity(branch.len());
        for (i, body) in branch.into_iter().enumerate() {
            let (command, size, need) = op(&app, body, i)?;
            allowed(&caller, need, &format!("{name} op {i}"))?;
            bytes += size;
            commands.push(command);
        }
        branches.push(commands);
    }
    if bytes > limits.max_txn_bytes {
        return Err(ApiError::TooLarge {
            limit: limits.max_txn_bytes,
        });
    }
    let failure = branches.pop().unwrap_or_default();
    let success = branches.pop().unwrap_or_default();
    let txn = TxnCommand {
        compare: compares,
        success,
        failure,
    };
    crate::sm::txn::shape(&txn).map_err(invalid)?;
    app.propose_and_respond(&acting, body.request_id, None, Command::Txn(txn))
        .await
}

/// How a transaction's outcome reads over HTTP (see `outcome::describe`): each
/// op's result as its own endpoint words it (without `index`: the transaction's
/// index is every op's).
pub fn describe(outcome: &TxnOutcome, index: u64) -> Result<Value, ApiError> {
    let word = |outcome: &crate::sm::Outcome| {
        let applied = Applied {
            index,
            outcome: outcome.clone(),
        };
        super::outcome::describe(&applied)
    };
    match outcome {
        TxnOutcome::Applied { succeeded, results } => {
            let results: Vec<Value> = results
                .iter()
                .map(|result| match word(result) {
                    Ok(mut body) => {
                        if let Some(fields) = body.as_object_mut() {
                            fields.remove("index");
                        }
                        body
                    }
                    // Not reached: an op that would be refused aborts the whole
                    // transaction before any is applied.
                    Err(error) => json!({ "error": error.code().as_str() }),
                })
                .collect();
            Ok(json!({ "succeeded": succeeded, "results": results }))
        }
        TxnOutcome::OpRefused {
            op_index, refusal, ..
        } => {
            let error = match word(refusal) {
                Err(error) => error,
                Ok(_) => invalid("the op was refused"),
            };
            Err(ApiError::TxnOpRefused {
                op_index: *op_index,
                code: error.code(),
                message: error.to_string(),
            })
        }
    }
}
