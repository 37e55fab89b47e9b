//! Validated input types: a value of one of these has passed its checks, so a
//! handler never re-checks it and nothing stored from it can break a later read.
//!
//! Owns the rules for client-supplied JSON values, numeric path ids and fencing
//! guards. Must not depend on handlers or Raft: only on `limits`, the error model
//! and the state machine's command types it produces.

use std::collections::BTreeSet;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::{Deserialize, Deserializer};

use crate::sm::{Guard, GuardKind};
use serde_json::value::RawValue;

use super::error::{ApiError, ErrorCode};
use super::extract::PathParam;
use super::AppState;
use crate::limits::{Limits, MAX_JSON_DEPTH, MIN_TTL_MS};

/// A client-supplied JSON value (a KV value, session metadata, a task payload,
/// progress or result, an election value), kept as the client's text.
///
/// Deserializing checks that the text is a value serde_json can parse *and
/// re-encode* inside a response: no lone UTF-16 surrogate escapes (`"\ud800"`),
/// no nesting deeper than [`MAX_JSON_DEPTH`]. serde_json accepts both as raw text
/// but refuses them when building the response that lists them, which made every
/// list covering such a value fail (bug: "a stored value can poison every read
/// that lists it").
#[derive(Debug)]
pub struct JsonValue(Box<RawValue>);

impl JsonValue {
    /// The value's JSON text, exactly as the client sent it.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// Checks a value's text; the error says what is wrong with it.
    pub fn check(text: &str) -> Result<(), String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not a storable JSON value: {e}"))?;
        let depth = depth_of(&value);
        if depth > MAX_JSON_DEPTH {
            return Err(format!(
                "JSON values may nest at most {MAX_JSON_DEPTH} levels deep, this one nests {depth}"
            ));
        }
        Ok(())
    }
}

/// Any JSON value, in the OpenAPI document.
impl utoipa::PartialSchema for JsonValue {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::SchemaType::AnyValue)
            .description(Some(format!(
                "any JSON value, nesting at most {MAX_JSON_DEPTH} levels"
            )))
            .into()
    }
}

impl utoipa::ToSchema for JsonValue {}

impl<'de> Deserialize<'de> for JsonValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Self::check(raw.get()).map_err(serde::de::Error::custom)?;
        Ok(Self(raw))
    }
}

/// How deeply `value` nests (a scalar is 0, `[]` is 1, `[[1]]` is 2). Iterative,
/// so it cannot overflow the stack whatever the parser let through.
fn depth_of(value: &serde_json::Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((value, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &serde_json::Value>> = match value {
            serde_json::Value::Array(items) => Box::new(items.iter()),
            serde_json::Value::Object(fields) => Box::new(fields.values()),
            _ => continue,
        };
        deepest = deepest.max(depth + 1);
        stack.extend(children.map(|child| (child, depth + 1)));
    }
    deepest
}

/// A numeric id in a path (`/v1/sessions/{id}`, `/v1/tasks/{id}`,
/// `/v1/cluster/members/{id}`): canonical decimal only — no sign, no leading
/// zeros, no spaces — so one resource has exactly one path (bug: `+1` and `00001`
/// were read as node 1).
pub fn path_id(text: &str, code: ErrorCode, what: &str) -> Result<u64, ApiError> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    let refused = || {
        ApiError::invalid(
            code,
            format!("{what} ids are unsigned decimal integers without leading zeros, got {text:?}"),
        )
    };
    if !canonical {
        return Err(refused());
    }
    text.parse().map_err(|_| refused())
}

/// A fencing guard in a request body: `{"lock" | "semaphore" | "election": name,
/// "fencing_token": n}` (see docs/api.md, Guards).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GuardBody {
    lock: Option<String>,
    election: Option<String>,
    semaphore: Option<String>,
    fencing_token: u64,
}

/// Turns a request's guard into the replicated one: exactly one resource named.
pub fn guard(body: Option<GuardBody>) -> Result<Option<Guard>, ApiError> {
    let Some(body) = body else { return Ok(None) };
    let (kind, name) = match (body.lock, body.election, body.semaphore) {
        (Some(name), None, None) => (GuardKind::Lock, name),
        (None, Some(name), None) => (GuardKind::Election, name),
        (None, None, Some(name)) => (GuardKind::Semaphore, name),
        _ => {
            return Err(ApiError::invalid(
                ErrorCode::InvalidGuard,
                "a guard names exactly one lock, election or semaphore",
            ))
        }
    };
    Ok(Some(Guard {
        kind,
        name,
        fencing_token: body.fencing_token,
    }))
}

/// Validates a list of capability names (sessions offer them, tasks require them).
pub fn capabilities(
    limits: &Limits,
    capabilities: Vec<String>,
) -> Result<BTreeSet<String>, ApiError> {
    if capabilities.len() > limits.max_capabilities {
        return Err(ApiError::invalid(
            ErrorCode::TooManyCapabilities,
            format!("at most {} capabilities", limits.max_capabilities),
        ));
    }
    if let Some(bad) = capabilities
        .iter()
        .find(|c| c.is_empty() || c.len() > limits.max_capability_bytes)
    {
        return Err(ApiError::invalid(
            ErrorCode::InvalidCapability,
            format!(
                "capability {bad:?} must be 1 to {} bytes",
                limits.max_capability_bytes
            ),
        ));
    }
    Ok(capabilities.into_iter().collect())
}

/// A session `name`, task `kind` or `idempotency_key` (`field` names it): 1 to
/// `max_name_bytes`.
pub fn name(limits: &Limits, field: &str, name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > limits.max_name_bytes {
        return Err(ApiError::invalid(
            ErrorCode::InvalidName,
            format!("{field} must be 1 to {} bytes", limits.max_name_bytes),
        ));
    }
    Ok(())
}

/// A session TTL or task lease (`field` names it): `MIN_TTL_MS` to `max_ttl_ms`.
pub fn duration(limits: &Limits, field: &str, value: u64) -> Result<(), ApiError> {
    if !(MIN_TTL_MS..=limits.max_ttl_ms).contains(&value) {
        return Err(ApiError::invalid(
            ErrorCode::InvalidDuration,
            format!(
                "{field} must be between {MIN_TTL_MS} and {} ms",
                limits.max_ttl_ms
            ),
        ));
    }
    Ok(())
}

/// A JSON value given as raw text, checked against the value size limit.
pub fn json_text(
    limits: &Limits,
    value: Option<JsonValue>,
    default: &str,
) -> Result<String, ApiError> {
    let text = value.map_or_else(|| default.to_owned(), |value| value.get().to_owned());
    if text.len() > limits.max_value_bytes {
        return Err(ApiError::TooLarge {
            limit: limits.max_value_bytes,
        });
    }
    Ok(text)
}

/// A KV key: 1 to `max_key_bytes`.
pub fn key(limits: &Limits, key: &str) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(ApiError::invalid(
            ErrorCode::InvalidKey,
            "the key must not be empty",
        ));
    }
    if key.len() > limits.max_key_bytes {
        return Err(ApiError::invalid(
            ErrorCode::KeyTooLong,
            format!(
                "keys are at most {} bytes, this one is {}",
                limits.max_key_bytes,
                key.len()
            ),
        ));
    }
    Ok(())
}

/// A list `limit`: 1 to `max_list_limit`, that limit when absent.
pub fn page_limit(limits: &Limits, limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(limits.max_list_limit);
    if limit == 0 || limit > limits.max_list_limit {
        return Err(ApiError::invalid(
            ErrorCode::InvalidLimit,
            format!("limit must be between 1 and {}", limits.max_list_limit),
        ));
    }
    Ok(limit)
}

/// A `request_id`: 1 to `max_request_id_bytes`.
pub fn request_id(limits: &Limits, request_id: &str) -> Result<(), ApiError> {
    if request_id.is_empty() || request_id.len() > limits.max_request_id_bytes {
        return Err(ApiError::invalid(
            ErrorCode::InvalidRequestId,
            format!(
                "request_id must be 1 to {} bytes",
                limits.max_request_id_bytes
            ),
        ));
    }
    Ok(())
}

/// Checks the name of a lock, semaphore, barrier or election.
pub fn resource_name(limits: &Limits, name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > limits.max_key_bytes {
        return Err(ApiError::invalid(
            ErrorCode::InvalidName,
            format!("names are 1 to {} bytes", limits.max_key_bytes),
        ));
    }
    Ok(())
}

/// Checks that count `field` (a semaphore's `limit`, a barrier's `parties`) is 1
/// to `max`, refusing with `code` otherwise.
pub fn count(field: &str, value: u32, max: u32, code: ErrorCode) -> Result<u32, ApiError> {
    if value == 0 || value > max {
        return Err(ApiError::invalid(
            code,
            format!("{field} must be 1 to {max}"),
        ));
    }
    Ok(value)
}

/// A list's `?state=` filter: `parse` of the name, `None` when absent, `400
/// invalid_query` naming `what` when it is not a state.
pub fn state_filter<T>(
    name: Option<&str>,
    what: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, ApiError> {
    name.map(|name| {
        parse(name).ok_or_else(|| {
            let message = format!("unknown {what} state {name:?}");
            ApiError::invalid(ErrorCode::InvalidQuery, message)
        })
    })
    .transpose()
}

/// Checks a requested `wait_ms` against the limit.
pub fn wait(limits: &Limits, wait_ms: u64) -> Result<std::time::Duration, ApiError> {
    if wait_ms > limits.max_wait_ms {
        return Err(ApiError::invalid(
            ErrorCode::InvalidWait,
            format!("wait_ms is at most {}", limits.max_wait_ms),
        ));
    }
    Ok(std::time::Duration::from_millis(wait_ms))
}

/// A validated KV key from the path (`/v1/kv/{*key}`): see [`key`].
pub struct Key(pub String);

/// A validated lock, semaphore, barrier or election name from the path: see
/// [`resource_name`].
pub struct ResourceName(pub String);

/// A task id from the path (`/v1/tasks/{id}`), canonical decimal.
pub struct TaskIdPath(pub u64);

/// A session id from the path (`/v1/sessions/{id}`), canonical decimal.
pub struct SessionIdPath(pub u64);

/// A proposal id from the path (`/v1/proposals/{id}`), canonical decimal.
pub struct ProposalIdPath(pub u64);

/// A two-phase transaction id from the path (`/v1/2pc/{id}`), canonical decimal.
pub struct TransactionIdPath(pub u64);

/// Implements `FromRequestParts` for a path type: the one path parameter's text,
/// validated by `$parse(limits, text)`.
macro_rules! from_path {
    ($path:ident, $parse:expr) => {
        impl FromRequestParts<AppState> for $path {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut Parts,
                app: &AppState,
            ) -> Result<Self, ApiError> {
                let PathParam(text) = PathParam::<String>::from_request_parts(parts, app).await?;
                let parse: fn(&Limits, String) -> Result<$path, ApiError> = $parse;
                parse(&app.limits, text)
            }
        }
    };
}

from_path!(Key, |limits, text| key(limits, &text).map(|()| Key(text)));
from_path!(ResourceName, |limits, text| {
    resource_name(limits, &text).map(|()| ResourceName(text))
});
from_path!(TaskIdPath, |_, text| {
    path_id(&text, ErrorCode::InvalidTaskId, "task").map(TaskIdPath)
});
from_path!(SessionIdPath, |_, text| {
    path_id(&text, ErrorCode::InvalidSessionId, "session").map(SessionIdPath)
});
from_path!(ProposalIdPath, |_, text| {
    path_id(&text, ErrorCode::InvalidProposalId, "proposal").map(ProposalIdPath)
});
from_path!(TransactionIdPath, |_, text| {
    path_id(&text, ErrorCode::InvalidTransactionId, "transaction").map(TransactionIdPath)
});

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<JsonValue, serde_json::Error> {
        serde_json::from_str(text)
    }

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn a_stored_value_can_poison_every_read_that_lists_it() {
        // Both were accepted as raw text and then broke every response listing them.
        assert!(parse(r#""\ud800""#).is_err(), "lone surrogate escape");
        assert!(parse(&nested(128)).is_err(), "nested 128 deep");
        assert!(parse(&nested(MAX_JSON_DEPTH + 1)).is_err());
        // What is accepted re-encodes inside a response that wraps it a few levels deep.
        for text in [nested(MAX_JSON_DEPTH), r#""\ud83d\ude00""#.to_owned()] {
            let value = parse(&text).expect("accepted");
            let response = serde_json::json!({"items": [{"value": value.0}]});
            assert!(serde_json::to_string(&response).is_ok());
        }
    }

    #[test]
    fn values_keep_the_clients_text() {
        let value = parse(r#"{"b": 1.50, "a": [true, null]}"#).unwrap();
        assert_eq!(value.get(), r#"{"b": 1.50, "a": [true, null]}"#);
        assert!(JsonValue::check("12345678901234567890123456789").is_ok());
    }

    #[test]
    fn depth_counts_levels() {
        assert_eq!(depth_of(&serde_json::json!(1)), 0);
        assert_eq!(depth_of(&serde_json::json!([])), 1);
        assert_eq!(depth_of(&serde_json::json!({"a": [1, {"b": []}]})), 4);
    }

    #[test]
    fn path_ids_accept_canonical_decimal_only() {
        assert_eq!(path_id("1", ErrorCode::InvalidNodeId, "node").unwrap(), 1);
        assert_eq!(path_id("0", ErrorCode::InvalidNodeId, "node").unwrap(), 0);
        assert_eq!(
            path_id("18446744073709551615", ErrorCode::InvalidNodeId, "node").unwrap(),
            u64::MAX
        );
        for text in [
            "+1",
            "00001",
            "01",
            "-1",
            " 1",
            "1 ",
            "",
            "1e3",
            "0x1",
            "18446744073709551616",
        ] {
            assert!(
                path_id(text, ErrorCode::InvalidNodeId, "node").is_err(),
                "{text:?}"
            );
        }
    }
}
