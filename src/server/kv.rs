//! Key/value endpoints: `PUT|GET|DELETE /v1/kv/{key}` and `GET /v1/kv?prefix=`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::error::ApiError;
use super::error_code::ErrorCode;
use super::extract::{JsonBody, QueryParams};
use super::{AppState, Consistency, ReadQuery};
use crate::sm::kv::{KvCommand, KvEntry};
use crate::sm::Command;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutBody {
    value: super::input::JsonValue,
    if_version: Option<u64>,
    /// Makes the key ephemeral: deleted when this session ends.
    session_id: Option<u64>,
    guard: Option<super::input::GuardBody>,
    request_id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DeleteBody {
    if_version: Option<u64>,
    guard: Option<super::input::GuardBody>,
    request_id: Option<String>,
}

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    prefix: String,
    after: Option<String>,
    limit: Option<usize>,
    #[serde(default)]
    consistency: Consistency,
}

#[derive(Serialize)]
struct KvView<'a> {
    key: &'a str,
    value: &'a RawValue,
    version: u64,
    create_index: u64,
    /// The session an ephemeral key is bound to.
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<u64>,
}

fn view<'a>(key: &'a str, entry: &'a KvEntry) -> KvView<'a> {
    let value = serde_json::from_str::<&RawValue>(&entry.value_json).unwrap_or_else(|_| null());
    KvView {
        key,
        value,
        version: entry.version,
        create_index: entry.create_index,
        session_id: entry.session_id,
    }
}

fn null() -> &'static RawValue {
    serde_json::from_str("null").expect("null is JSON")
}

pub async fn put(
    State(app): State<AppState>,
    super::input::Key(key): super::input::Key,
    JsonBody(body): JsonBody<PutBody>,
) -> Result<Response, ApiError> {
    let value_json = body.value.get();
    if value_json.len() > app.limits.max_value_bytes {
        return Err(ApiError::TooLarge {
            limit: app.limits.max_value_bytes,
        });
    }
    let command = Command::Kv(KvCommand::Put {
        key,
        value_json: value_json.to_owned(),
        if_version: body.if_version,
        session_id: body.session_id,
    });
    app.propose_and_respond(body.request_id, body.guard, command)
        .await
}

pub async fn delete(
    State(app): State<AppState>,
    super::input::Key(key): super::input::Key,
    JsonBody(body): JsonBody<DeleteBody>,
) -> Result<Response, ApiError> {
    let command = Command::Kv(KvCommand::Delete {
        key,
        if_version: body.if_version,
    });
    app.propose_and_respond(body.request_id, body.guard, command)
        .await
}

pub async fn get(
    State(app): State<AppState>,
    super::input::Key(key): super::input::Key,
    QueryParams(query): QueryParams<ReadQuery>,
) -> Result<Response, ApiError> {
    let look = |state: &crate::sm::State| {
        state
            .kv
            .get(&key)
            .map(|entry| Json(view(&key, entry)).into_response())
    };
    let missing = || format!("no key {key:?}");
    app.read_view(query.consistency, look, ErrorCode::KeyNotFound, missing)
        .await
}

pub async fn list(
    State(app): State<AppState>,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = super::input::page_limit(&app.limits, query.limit)?;
    app.read_barrier(query.consistency).await?;
    let applied = app.replica.state();
    let mut page = crate::sm::kv::list(
        &applied.kv,
        &query.prefix,
        query.after.as_deref(),
        limit + 1,
    );
    let more = page.len() > limit;
    page.truncate(limit);
    let next = if more {
        page.last().map(|(key, _)| key.as_str())
    } else {
        None
    };
    let items: Vec<KvView> = page.iter().map(|(key, entry)| view(key, entry)).collect();
    Ok(Json(serde_json::json!({ "items": items, "next_after": next })).into_response())
}
