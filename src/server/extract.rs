//! Request extractors that turn every kind of bad input into an [`ApiError`] with a
//! stable code (axum's own rejections are plain text with varying statuses).

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::error_code::ErrorCode;
use super::AppState;

/// A JSON body of type `T`. An empty body is treated as `{}` when `T` allows it.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = read_body(request.into_body(), state.limits.max_body_bytes).await?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        parse_json(bytes).map(JsonBody)
    }
}

/// Parses JSON, telling malformed text (`malformed_json`) from wrong fields or types
/// (`invalid_request`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::invalid(ErrorCode::InvalidRequest, e.to_string())
        }
        _ => ApiError::MalformedJson(e.to_string()),
    })
}

/// Query parameters of type `T`; a bad one is a 400 `invalid_query`.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(value)| QueryParams(value))
            .map_err(|e| ApiError::invalid(ErrorCode::InvalidQuery, e.body_text()))
    }
}

/// A path parameter of type `T`; one that does not decode (e.g. not UTF-8) is a
/// 400 `invalid_path`.
pub struct PathParam<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParam<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| PathParam(value))
            .map_err(|e| ApiError::invalid(ErrorCode::InvalidPath, e.body_text()))
    }
}

/// Reads a whole body of at most `limit` bytes: 413 `payload_too_large` past the
/// limit, 408 `body_timeout` past the body-read deadline, 400 `invalid_body` for a
/// body that cannot be read.
pub async fn read_body(body: axum::body::Body, limit: usize) -> Result<Bytes, ApiError> {
    crate::body::read_limited(body, limit)
        .await
        .map_err(|error| match error {
            crate::body::BodyError::TooLarge { limit } => ApiError::TooLarge { limit },
            crate::body::BodyError::TimedOut(message) => ApiError::BodyTimeout(message),
            malformed => ApiError::invalid(ErrorCode::InvalidBody, malformed.to_string()),
        })
}

/// On whose behalf a request acts: the subject that owns the sessions it creates,
/// and the subject the state machine holds it to (`Submission::acting_as`). An
/// `admin` caller is held to nothing; on an open node nobody is, and sessions have
/// no owner.
#[derive(Debug, Clone, Default)]
pub struct Acting {
    subject: Option<String>,
    admin: bool,
}

impl Acting {
    /// The owner a session created by this request records.
    pub fn owner(&self) -> Option<String> {
        self.subject.clone()
    }

    /// The subject this request is held to, `None` if it may act for any session.
    pub fn held_to(&self) -> Option<String> {
        self.subject.clone().filter(|_| !self.admin)
    }
}

impl FromRequestParts<AppState> for Acting {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // The gate puts the caller of every non-public route here.
        let caller = parts.extensions.get::<crate::auth::Caller>();
        Ok(match caller {
            Some(caller) if !state.auth.is_open() => Acting {
                subject: Some(caller.subject.clone()),
                admin: caller.grants.is_admin(),
            },
            _ => Acting::default(),
        })
    }
}
