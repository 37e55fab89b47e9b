//! Key/value endpoints: `PUT|GET|DELETE /v1/kv/{key}` and `GET /v1/kv?prefix=`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::error::ApiError;
use super::error_code::ErrorCode;
use super::extract::QueryParams;
use super::propose::{CommandBody, Proposed};
use super::{AppState, Consistency, ReadQuery};
use crate::limits::Limits;
use crate::sm::kv::{KvCommand, KvEntry};
use crate::sm::{Command, KvOutcome};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutBody {
    value: super::input::JsonValue,
    if_version: Option<u64>,
    /// Makes the key ephemeral: deleted when this session ends.
    session_id: Option<u64>,
    guard: Option<super::input::GuardBody>,
    request_id: Option<String>,
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteBody {
    if_version: Option<u64>,
    guard: Option<super::input::GuardBody>,
    request_id: Option<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[serde(default)]
    prefix: String,
    after: Option<String>,
    limit: Option<usize>,
    #[serde(default)]
    #[param(inline)]
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

/// How a KV outcome reads over HTTP (see `outcome::describe`).
pub fn describe(outcome: &KvOutcome) -> Result<serde_json::Value, ApiError> {
    Ok(match outcome {
        KvOutcome::Written { version } => serde_json::json!({ "version": version }),
        KvOutcome::Deleted { existed } => serde_json::json!({ "deleted": existed }),
        KvOutcome::CasMismatch { current_version } => {
            let current_version = *current_version;
            return Err(ApiError::CasMismatch { current_version });
        }
    })
}

impl CommandBody for PutBody {
    type Path = super::input::Key;

    fn command(self, key: super::input::Key, limits: &Limits) -> Result<Proposed, ApiError> {
        let value_json = self.value.get();
        if value_json.len() > limits.max_value_bytes {
            let limit = limits.max_value_bytes;
            return Err(ApiError::TooLarge { limit });
        }
        let command = Command::Kv(KvCommand::Put {
            key: key.0,
            value_json: value_json.to_owned(),
            if_version: self.if_version,
            session_id: self.session_id,
        });
        Ok(Proposed::new(command, self.request_id, self.guard))
    }
}

impl CommandBody for DeleteBody {
    type Path = super::input::Key;

    fn command(self, key: super::input::Key, _: &Limits) -> Result<Proposed, ApiError> {
        let if_version = self.if_version;
        let command = Command::Kv(KvCommand::Delete {
            key: key.0,
            if_version,
        });
        Ok(Proposed::new(command, self.request_id, self.guard))
    }
}

pub async fn get(
    State(app): State<AppState>,
    super::input::Key(key): super::input::Key,
    QueryParams(query): QueryParams<ReadQuery>,
) -> Result<Response, ApiError> {
    // Served from the stored JSON text as it is (no parse into a `Value`).
    let applied = app.read(query.consistency).await?;
    let Some(entry) = applied.kv.get(&key) else {
        let message = format!("no key {key:?}");
        let code = ErrorCode::KeyNotFound;
        return Err(ApiError::NotFound { code, message });
    };
    Ok(Json(view(&key, entry)).into_response())
}

impl super::resource::ListQuery for ListQuery {
    fn page(&self) -> (Option<usize>, Consistency) {
        (self.limit, self.consistency)
    }

    /// Served from the stored JSON text as it is (no parse into a `Value`).
    fn list(self, state: &crate::sm::State, limit: usize) -> Result<Response, ApiError> {
        let after = self.after.as_deref();
        let mut page = crate::sm::kv::list(&state.kv, &self.prefix, after, limit + 1);
        let more = page.len() > limit;
        page.truncate(limit);
        let next = match more {
            true => page.last().map(|(key, _)| key.as_str()),
            false => None,
        };
        let items: Vec<KvView> = page.iter().map(|(key, entry)| view(key, entry)).collect();
        Ok(Json(serde_json::json!({ "items": items, "next_after": next })).into_response())
    }
}
