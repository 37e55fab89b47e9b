//! The read endpoints rooms share — a paged list (`list::<Query>`, for a query
//! type implementing [`ListQuery`]) — and the endpoints every named wait-queue
//! resource shares: `GET /v1/<room>/{name}`
//! (its view, shown empty when absent) and, for rooms whose holds carry a fencing
//! token, `POST /v1/<room>/{name}/release`. A room implements [`View`] (and
//! [`Release`]) on a marker type and routes `get::<Marker>` /
//! `propose::<ReleaseBody<Marker>>`.
//! Like every handler file it reaches the replica only through `AppState`.

use std::marker::PhantomData;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use super::extract::QueryParams;
use super::input::{GuardBody, ResourceName};
use super::propose::{CommandBody, Proposed};
use super::{AppState, Consistency, ReadQuery};
use crate::limits::Limits;
use crate::sm::sessions::SessionId;
use crate::sm::{Command, State as Applied};

/// How a room shows one of its resources.
pub trait View {
    /// Resource `name` as JSON; a resource nobody holds or awaits is shown empty.
    fn view(state: &Applied, name: &str) -> Value;
}

/// How a room releases a hold that presents its fencing token.
pub trait Release {
    fn release(name: String, session_id: SessionId, fencing_token: u64) -> Command;
}

/// The query of a paged list (`GET /v1/kv`, `/v1/sessions`, `/v1/tasks`).
pub trait ListQuery: DeserializeOwned + Send + 'static {
    /// The page size asked for, and the read's consistency.
    fn page(&self) -> (Option<usize>, Consistency);
    /// One page of at most `limit` items of `state` (see `server::list_page`).
    fn list(self, state: &Applied, limit: usize) -> Result<Response, ApiError>;
}

pub async fn list<Q: ListQuery>(
    State(app): State<AppState>,
    QueryParams(query): QueryParams<Q>,
) -> Result<Response, ApiError> {
    let (limit, consistency) = query.page();
    let limit = super::input::page_limit(&app.limits, limit)?;
    let state = app.read(consistency).await?;
    query.list(&state, limit)
}

pub async fn get<R: View>(
    State(app): State<AppState>,
    ResourceName(name): ResourceName,
    QueryParams(query): QueryParams<ReadQuery>,
) -> Result<Response, ApiError> {
    let state = app.read(query.consistency).await?;
    Ok(Json(R::view(&state, &name)).into_response())
}

/// Which room a body is for (a function type, so the body is `Send` for any room).
type Room<R> = PhantomData<fn() -> R>;

/// `POST /v1/<room>/{name}/release` of room `R` (routed as
/// `propose::<ReleaseBody<R>>`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, bound(deserialize = ""))]
#[schema(bound = "")]
pub struct ReleaseBody<R> {
    session_id: SessionId,
    fencing_token: u64,
    guard: Option<GuardBody>,
    request_id: Option<String>,
    #[serde(skip)]
    room: Room<R>,
}

impl<R: Release + 'static> CommandBody for ReleaseBody<R> {
    type Path = ResourceName;

    fn command(self, ResourceName(name): ResourceName, _: &Limits) -> Result<Proposed, ApiError> {
        let command = R::release(name, self.session_id, self.fencing_token);
        Ok(Proposed::new(command, self.request_id, self.guard))
    }
}
