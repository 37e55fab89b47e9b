//! The API's error model, mapped to HTTP in exactly one place.
//!
//! Every error body is `{"error": {"code": "snake_case", "message": "...", ...}}`
//! with a stable `code`. 503 means definitely not applied (safe to retry); 504 means
//! proposed with an unknown outcome (resolve with `request_id`). Handlers return
//! [`ApiError`]; none of them builds an error response itself.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

pub use super::error_code::ErrorCode;
use crate::raft_types::NodeId;
use crate::replica::proposer::ProposeError;
use crate::replica::read_index::ReadError;

/// Marks a response as "this node is not the leader, nothing was done", so the
/// forwarding layer may retry the request at the leader (see `forward`).
#[derive(Debug, Clone, Copy)]
pub struct NotLeaderMarker;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not JSON at all.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// 400: well-formed input that breaks a rule; `code` says which.
    #[error("{message}")]
    Invalid { code: ErrorCode, message: String },
    /// 401 `unauthenticated` / `token_expired`: no valid bearer token.
    #[error("{message}")]
    Unauthenticated { code: ErrorCode, message: String },
    /// 403 `forbidden`: the token's scopes do not allow this request.
    #[error("{0}")]
    Forbidden(String),
    /// 403 `not_session_owner`: the request acts for a session another token
    /// subject created.
    #[error("session {session_id} belongs to another subject: only its creator's token (or an admin token) may use it")]
    NotSessionOwner { session_id: u64 },
    /// 403 with a `code` of its own: the request names a voter or participant it
    /// may not act as (`not_a_voter`, `not_a_participant`, `not_the_party`).
    #[error("{message}")]
    Denied { code: ErrorCode, message: String },
    /// 404: no such route or resource.
    #[error("{message}")]
    NotFound { code: ErrorCode, message: String },
    /// 405.
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    /// 409: a compare-and-set precondition failed.
    #[error("version mismatch: current version is {current_version}")]
    CasMismatch { current_version: u64 },
    /// 409 `stale_fencing_token`: the token is not current; `current` is (0 if none).
    #[error("the fencing token is not current (current is {current})")]
    StaleToken { current: u64 },
    /// 409 `deadlock`: waiting would close this cycle of sessions.
    #[error("waiting would deadlock: sessions {cycle:?} would wait for each other")]
    Deadlock { cycle: Vec<u64> },
    /// 409: op `op_index` of a transaction's branch was refused (`code` is the op's
    /// own refusal); nothing of the transaction was applied.
    #[error("op {op_index} of the transaction was refused: {message}")]
    TxnOpRefused {
        op_index: usize,
        code: ErrorCode,
        message: String,
    },
    /// 409 `learner_not_caught_up`: a member to promote did not replicate far
    /// enough in time; how far it got (`matched_index`, `null` if nothing is known)
    /// and the index it had to reach (`target_index`).
    #[error("{message}")]
    NotCaughtUp {
        message: String,
        matched_index: Option<u64>,
        target_index: u64,
    },
    /// 409: another conflict with current state.
    #[error("{message}")]
    Conflict { code: ErrorCode, message: String },
    /// 408 `body_timeout`: the body did not arrive within the body-read timeout.
    #[error("{0}")]
    BodyTimeout(String),
    /// 413.
    #[error("too large: the limit is {limit} bytes")]
    TooLarge { limit: usize },
    /// 429: overloaded; retry after a moment.
    #[error("{0}")]
    Overloaded(String),
    /// 429 `rate_limited`: this subject is over its rate on this node.
    #[error("{message}")]
    RateLimited { message: String, retry_after_s: u64 },
    /// 410 `compacted`: a watch asked to start before this node's retained history.
    #[error("events before command index {oldest_index} are no longer retained on this node: re-read the state you need, then watch from_index={oldest_index} or later (docs/watch.md)")]
    Compacted { oldest_index: u64 },
    /// 429 `too_many_watchers`: this node serves its most watches already.
    #[error("this node serves {limit} watches already; try another node or later")]
    TooManyWatchers { limit: usize },
    /// 503 `no_leader`: not applied; retry (at `leader` if given).
    #[error("no leader available{}", leader.map(|l| format!(" (leader is node {l})")).unwrap_or_default())]
    NoLeader { leader: Option<NodeId> },
    /// 503 `unavailable`: not applied; retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// 504 `indeterminate`: the write may or may not have been applied.
    #[error("outcome unknown: {0}")]
    Indeterminate(String),
    /// 500 `internal`: a bug in this node (a handler panicked). The connection is
    /// kept and the panic logged; a write's outcome is unknown, as with 504.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Invalid {
            code,
            message: message.into(),
        }
    }

    /// The 403 of a request that acts for another subject's session.
    pub fn not_session_owner(session_id: u64) -> Self {
        Self::NotSessionOwner { session_id }
    }

    /// A 409 refusal with a stable `code`.
    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
        }
    }

    /// The stable error code this error answers with.
    pub fn code(&self) -> ErrorCode {
        self.status_and_code().1
    }

    fn status_and_code(&self) -> (StatusCode, ErrorCode) {
        match self {
            Self::Compacted { .. } => (StatusCode::GONE, ErrorCode::Compacted),
            Self::TooManyWatchers { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, ErrorCode::TooManyWatchers)
            }
            Self::MalformedJson(_) => (StatusCode::BAD_REQUEST, ErrorCode::MalformedJson),
            Self::Invalid { code, .. } => (StatusCode::BAD_REQUEST, *code),
            Self::Unauthenticated { code, .. } => (StatusCode::UNAUTHORIZED, *code),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
            Self::NotSessionOwner { .. } => (StatusCode::FORBIDDEN, ErrorCode::NotSessionOwner),
            Self::Denied { code, .. } => (StatusCode::FORBIDDEN, *code),
            Self::NotFound { code, .. } => (StatusCode::NOT_FOUND, *code),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, ErrorCode::MethodNotAllowed),
            Self::CasMismatch { .. } => (StatusCode::CONFLICT, ErrorCode::CasMismatch),
            Self::Deadlock { .. } => (StatusCode::CONFLICT, ErrorCode::Deadlock),
            Self::StaleToken { .. } => (StatusCode::CONFLICT, ErrorCode::StaleFencingToken),
            Self::Conflict { code, .. } => (StatusCode::CONFLICT, *code),
            Self::NotCaughtUp { .. } => (StatusCode::CONFLICT, ErrorCode::LearnerNotCaughtUp),
            Self::TxnOpRefused { code, .. } => (StatusCode::CONFLICT, *code),
            Self::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, ErrorCode::BodyTimeout),
            Self::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge),
            Self::Overloaded(_) => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::Overloaded),
            Self::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited),
            Self::NoLeader { .. } => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::NoLeader),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable),
            Self::Indeterminate(_) => (StatusCode::GATEWAY_TIMEOUT, ErrorCode::Indeterminate),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
        }
    }

    fn details(&self) -> Map<String, Value> {
        let mut details = Map::new();
        match self {
            Self::CasMismatch { current_version } => {
                details.insert("current_version".into(), json!(current_version));
            }
            Self::Deadlock { cycle } => {
                details.insert("cycle".into(), json!(cycle));
            }
            Self::NotSessionOwner { session_id } => {
                details.insert("session_id".into(), json!(session_id));
            }
            Self::TxnOpRefused { op_index, .. } => {
                details.insert("op_index".into(), json!(op_index));
            }
            Self::StaleToken { current } => {
                details.insert("current_token".into(), json!(current));
            }
            Self::NoLeader {
                leader: Some(leader),
            } => {
                details.insert("leader_id".into(), json!(leader));
            }
            Self::NotCaughtUp {
                matched_index,
                target_index,
                ..
            } => {
                details.insert("matched_index".into(), json!(matched_index));
                details.insert("target_index".into(), json!(target_index));
            }
            Self::TooLarge { limit } => {
                details.insert("limit_bytes".into(), json!(limit));
            }
            Self::Compacted { oldest_index } => {
                details.insert("oldest_index".into(), json!(oldest_index));
            }
            Self::TooManyWatchers { limit } => {
                details.insert("limit".into(), json!(limit));
            }
            Self::RateLimited { retry_after_s, .. } => {
                details.insert("retry_after_s".into(), json!(retry_after_s));
            }
            _ => {}
        }
        details
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        self.status_and_code().0
    }

    /// The `error` object of the body.
    pub fn body(&self) -> Value {
        let mut error = self.details();
        error.insert("code".into(), json!(self.status_and_code().1.as_str()));
        error.insert("message".into(), json!(self.to_string()));
        Value::Object(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, axum::Json(json!({ "error": self.body() }))).into_response();
        match self {
            Self::Overloaded(_) | Self::TooManyWatchers { .. } => {
                response
                    .headers_mut()
                    .insert("retry-after", HeaderValue::from_static("1"));
            }
            Self::RateLimited { retry_after_s, .. } => {
                response
                    .headers_mut()
                    .insert("retry-after", HeaderValue::from(retry_after_s));
            }
            Self::NoLeader { .. } => {
                response.extensions_mut().insert(NotLeaderMarker);
            }
            Self::Unauthenticated { .. } => {
                response
                    .headers_mut()
                    .insert("www-authenticate", HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

/// The response to a handler that panicked (installed by `server::router` as a
/// catch-panic layer): logs the panic and answers 500 `internal` in the usual
/// error shape instead of dropping the connection.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a handler panicked");
    tracing::error!("handler panicked: {message}");
    ApiError::Internal(format!(
        "the request hit a bug in this node ({message}); a write's outcome is unknown: \
         resolve it with its request_id"
    ))
    .into_response()
}

impl From<ProposeError> for ApiError {
    fn from(error: ProposeError) -> Self {
        match error {
            ProposeError::NotLeader { leader } => Self::NoLeader { leader },
            ProposeError::Overloaded => Self::Overloaded("too many queued writes".into()),
            ProposeError::Unavailable(message) => Self::Unavailable(message),
            ProposeError::Indeterminate(message) => Self::Indeterminate(message),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::NotLeader { leader } => Self::NoLeader { leader },
            ReadError::Overloaded => Self::Overloaded("too many queued reads".into()),
            ReadError::Unavailable(message) => Self::Unavailable(message),
        }
    }
}
