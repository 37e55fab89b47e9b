//! Session endpoints: create, keepalive (batched by the leader), end, discovery.

use crate::sm::sessions::SessionCommand;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::error::ApiError;
use super::error_code::ErrorCode;
use super::extract::{Acting, JsonBody, QueryParams};
use super::input::JsonValue;
use super::{AppState, Consistency, ReadQuery};
use crate::sm::sessions::{NewSession, Session, SessionId};
use crate::sm::{Command, SessionOutcome};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    name: String,
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default = "default_capacity")]
    capacity: u32,
    #[serde(default = "default_ttl_ms")]
    ttl_ms: u64,
    metadata: Option<JsonValue>,
    request_id: Option<String>,
}

fn default_capacity() -> u32 {
    1
}

fn default_ttl_ms() -> u64 {
    10_000
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    capability: Option<String>,
    after: Option<SessionId>,
    limit: Option<usize>,
    #[serde(default)]
    #[param(inline)]
    consistency: Consistency,
}

pub fn raw(text: &str) -> &RawValue {
    serde_json::from_str(text)
        .unwrap_or_else(|_| serde_json::from_str("null").expect("null is JSON"))
}

fn view(session: &Session) -> Value {
    json!({
        "session_id": session.id,
        "name": session.name,
        "capabilities": session.capabilities,
        "capacity": session.capacity,
        "load": session.load,
        "ttl_ms": session.ttl_ms,
        "metadata": raw(&session.metadata_json),
        "created_at_ms": session.created_at_ms,
        "expires_at_ms": session.expires_at_ms,
        "ephemeral_keys": session.ephemeral_keys,
        "owner": session.owner,
    })
}

/// How a session outcome reads over HTTP (see `outcome::describe`).
pub fn describe(outcome: &SessionOutcome) -> Value {
    match outcome {
        SessionOutcome::Created {
            session_id,
            expires_at_ms,
        } => json!({ "session_id": session_id, "expires_at_ms": expires_at_ms }),
        SessionOutcome::Renewed { expires_at_ms } => json!({ "expires_at_ms": expires_at_ms }),
        SessionOutcome::Ended => json!({ "ended": true }),
        SessionOutcome::Ticked { renewed } => json!({ "renewed": renewed }),
    }
}

pub async fn create(
    State(app): State<AppState>,
    acting: Acting,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<Response, ApiError> {
    super::input::name(&app.limits, "name", &body.name)?;
    let capabilities = super::input::capabilities(&app.limits, body.capabilities)?;
    if body.capacity > app.limits.max_session_capacity {
        return Err(ApiError::invalid(
            ErrorCode::InvalidCapacity,
            format!("capacity is at most {}", app.limits.max_session_capacity),
        ));
    }
    super::input::duration(&app.limits, "ttl_ms", body.ttl_ms)?;
    let new = NewSession {
        name: body.name,
        capabilities,
        capacity: body.capacity,
        ttl_ms: body.ttl_ms,
        metadata_json: super::input::json_text(&app.limits, body.metadata, "{}")?,
        owner: acting.owner(),
    };
    app.propose_and_respond(
        &acting,
        body.request_id,
        None,
        Command::Session(SessionCommand::Create(new)),
    )
    .await
}

/// Records the keepalive in the leader's memory; the ticker replicates it within
/// one flush interval. Only the leader gets here (the route is forwarded).
pub async fn keepalive(
    State(app): State<AppState>,
    acting: Acting,
    super::input::SessionIdPath(id): super::input::SessionIdPath,
) -> Result<Response, ApiError> {
    // Only a leader's record is ever replicated: anywhere else, nothing was done
    // (and `forward` retries at the leader).
    if !app.replica.is_leader() {
        return Err(ApiError::NoLeader {
            leader: app.current_leader(),
        });
    }
    let live = |app: &AppState, now: u64| {
        let applied = app.replica.state();
        let session = applied.sessions.get(id)?;
        // A session whose expiry has passed is gone, even before the tick says so.
        (now < session.expires_at_ms).then(|| (session.ttl_ms, session.owner.clone()))
    };
    let mut now = app.replica.leader_now_ms();
    let mut ttl_ms = live(&app, now);
    if ttl_ms.is_none() {
        // A new leader may not have applied everything yet: look again, linearizably.
        app.read_barrier(Consistency::Linearizable).await?;
        now = app.replica.leader_now_ms();
        ttl_ms = live(&app, now);
    }
    let Some((ttl_ms, owner)) = ttl_ms else {
        return Err(ApiError::NotFound {
            code: ErrorCode::SessionNotFound,
            message: format!("no live session {id}"),
        });
    };
    // The same rule the state machine applies to every other command on a session.
    if let (Some(subject), Some(owner)) = (acting.held_to(), owner) {
        if subject != owner {
            return Err(ApiError::not_session_owner(id));
        }
    }
    // Answered only once the renewal is durable: the batched tick carrying it is
    // committed (fsynced on a quorum) and applied.
    let renewal = app.replica.accept_keepalive(id, now);
    let waited = Duration::from_millis(app.limits.write_timeout_ms + app.limits.keepalive_flush_ms);
    match tokio::time::timeout(waited, renewal).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => return Err(error.into()),
        // The leadership was lost before the renewal was flushed: nothing proposed.
        Ok(Err(_)) => {
            return Err(ApiError::NoLeader {
                leader: app.current_leader(),
            })
        }
        Err(_) => {
            return Err(ApiError::Indeterminate(
                "the renewal was not replicated in time; it may still apply".into(),
            ))
        }
    }
    Ok(Json(json!({ "session_id": id, "expires_at_ms": now + ttl_ms })).into_response())
}

pub async fn end(
    State(app): State<AppState>,
    acting: Acting,
    super::input::SessionIdPath(session_id): super::input::SessionIdPath,
) -> Result<Response, ApiError> {
    let command = Command::Session(SessionCommand::End { session_id });
    app.propose_and_respond(&acting, None, None, command).await
}

pub async fn get(
    State(app): State<AppState>,
    super::input::SessionIdPath(id): super::input::SessionIdPath,
    QueryParams(query): QueryParams<ReadQuery>,
) -> Result<Response, ApiError> {
    let look = |state: &crate::sm::State| state.sessions.get(id).map(view);
    let missing = || format!("no live session {id}");
    app.read_view(query.consistency, look, ErrorCode::SessionNotFound, missing)
        .await
}

/// Agent discovery: live sessions, optionally only those offering `capability`.
impl super::resource::ListQuery for ListQuery {
    fn page(&self) -> (Option<usize>, Consistency) {
        (self.limit, self.consistency)
    }

    fn list(self, state: &crate::sm::State, limit: usize) -> Result<Response, ApiError> {
        let after = |session: &&Session| self.after.is_none_or(|after| session.id > after);
        let offers = |session: &&Session| {
            let capability = self.capability.as_ref();
            capability.is_none_or(|c| session.capabilities.contains(c))
        };
        let matching = state.sessions.iter().filter(after).filter(offers);
        Ok(super::list_page(matching.map(view), limit, "session_id"))
    }
}
