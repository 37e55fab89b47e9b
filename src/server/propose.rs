//! The endpoint shape most writes share: a JSON body that becomes one
//! state-machine command, proposed and answered by its outcome
//! (`outcome::respond`), with no wait. A body type implements [`CommandBody`] and
//! routes `propose::<Body>`; writes that wait (acquires, claims, barriers) keep
//! handlers of their own. Like every handler it reaches the replica only through
//! `AppState`.

use axum::extract::{FromRequestParts, State};
use axum::response::Response;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::extract::{Acting, JsonBody};
use super::input::GuardBody;
use super::AppState;
use crate::limits::Limits;
use crate::sm::Command;

/// A command with the idempotency key and fencing guard its request carried.
pub struct Proposed {
    pub command: Command,
    pub request_id: Option<String>,
    pub guard: Option<GuardBody>,
}

impl Proposed {
    pub fn new(command: Command, request_id: Option<String>, guard: Option<GuardBody>) -> Self {
        Self {
            command,
            request_id,
            guard,
        }
    }
}

/// A request body that, with what the path names, is one command.
pub trait CommandBody: DeserializeOwned + Send + 'static {
    /// What the path names: a key, a task id, a resource name.
    type Path: FromRequestParts<AppState, Rejection = ApiError> + Send;

    /// The command, or a refusal of the body (checked against `limits`).
    fn command(self, path: Self::Path, limits: &Limits) -> Result<Proposed, ApiError>;
}

pub async fn propose<B: CommandBody>(
    State(app): State<AppState>,
    acting: Acting,
    path: B::Path,
    JsonBody(body): JsonBody<B>,
) -> Result<Response, ApiError> {
    let proposed = body.command(path, &app.limits)?;
    let Proposed {
        command,
        request_id,
        guard,
    } = proposed;
    app.propose_and_respond(&acting, request_id, guard, command)
        .await
}
