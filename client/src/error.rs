//! The client's error type: an API refusal (`{"error": {"code", "message", ...}}`
//! with its HTTP status), a transport failure, or an answer the client could not
//! read. Owns the parsing of error bodies; depends on nothing else in the crate.

use serde_json::Value;

/// A refusal answered by the server with the API's error model.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status (4xx or 5xx).
    pub status: u16,
    /// The stable machine-readable code (`cas_mismatch`, `session_not_found`, ...).
    pub code: String,
    /// The human-readable message.
    pub message: String,
    /// The whole `error` object, with the endpoint's extra details
    /// (`current_version`, `current_token`, `cycle`, `limit_bytes`, ...).
    pub details: Value,
}

impl ApiError {
    /// One detail field of the error object (`Null` when absent).
    pub fn detail(&self, field: &str) -> &Value {
        self.details.get(field).unwrap_or(&Value::Null)
    }
}

/// Everything a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with the API's error model.
    #[error("{} {}: {}", .0.status, .0.code, .0.message)]
    Api(ApiError),
    /// The request could not be sent or its answer not received (connect refused,
    /// timeout, connection reset). A write that fails this way may or may not have
    /// been applied; retry it with the same `request_id`.
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
    /// An answer that is neither the expected body nor the error model.
    #[error("unexpected answer {status}: {body}")]
    Unexpected { status: u16, body: String },
    /// A key or name `.` or `..`: no URL can carry it as a path segment.
    #[error("a path segment {0:?} cannot be sent (URLs normalize dot segments)")]
    UnsendableSegment(String),
    /// A member operation named a node the cluster view does not list.
    #[error("node {0} is not a member")]
    NotMember(u64),
    /// The base URL given to the client is not an absolute `http(s)://` URL.
    #[error("invalid base url {0:?}")]
    InvalidBaseUrl(String),
    /// A builder was given no endpoint at all.
    #[error("no endpoints given")]
    NoEndpoints,
    /// The call's overall timeout passed before any attempt could be made or
    /// answered (when an attempt failed, its error is returned instead).
    #[error("the call's deadline passed")]
    DeadlineExceeded,
    /// A watch stream fell behind the node's history (`event: lagged`): events after
    /// `last_event_id` may be gone. Polling the stream again resumes from it (which
    /// may answer `410 compacted`).
    #[error("the watch fell behind the node's history (last event {last_event_id:?})")]
    Lagged { last_event_id: Option<String> },
    /// The session helper's lease ran out locally (or the server said the session is
    /// gone): nothing may be done in its name any more.
    #[error("session {0} expired")]
    SessionExpired(u64),
}

impl Error {
    /// The error of a non-2xx answer read by hand (a binary download): the API's
    /// refusal when `body` has the error model, else `Unexpected`.
    pub fn from_answer(status: u16, body: &[u8]) -> Error {
        from_error_body(status, body)
    }

    /// The HTTP status of an answered request (`None` for transport errors).
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api(api) => Some(api.status),
            Error::Unexpected { status, .. } => Some(*status),
            Error::Transport(error) => error.status().map(|status| status.as_u16()),
            Error::InvalidBaseUrl(_)
            | Error::UnsendableSegment(_)
            | Error::NotMember(_)
            | Error::NoEndpoints
            | Error::DeadlineExceeded
            | Error::Lagged { .. }
            | Error::SessionExpired(_) => None,
        }
    }

    /// The API's stable error code, when the server answered with one.
    pub fn code(&self) -> Option<&str> {
        self.api().map(|api| api.code.as_str())
    }

    /// The API refusal, when the server answered with one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Error::Api(api) => Some(api),
            _ => None,
        }
    }
}

/// Reads a non-2xx answer: the error model when the body has it, else `Unexpected`.
pub(crate) fn from_error_body(status: u16, body: &[u8]) -> Error {
    let unexpected = || Error::Unexpected {
        status,
        body: String::from_utf8_lossy(body).into_owned(),
    };
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return unexpected();
    };
    let Some(error) = value.get("error").filter(|error| error.is_object()) else {
        return unexpected();
    };
    let Some(code) = error.get("code").and_then(Value::as_str) else {
        return unexpected();
    };
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Error::Api(ApiError {
        status,
        code: code.to_owned(),
        message: message.to_owned(),
        details: error.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_error_body_gives_status_code_message_and_details() {
        let body = br#"{"error":{"code":"cas_mismatch","current_version":3,"message":"version mismatch: current version is 3"}}"#;
        let error = from_error_body(409, body);
        assert_eq!(error.status(), Some(409));
        assert_eq!(error.code(), Some("cas_mismatch"));
        let api = error.api().unwrap();
        assert_eq!(api.message, "version mismatch: current version is 3");
        assert_eq!(api.detail("current_version"), &json!(3));
        assert_eq!(api.detail("absent"), &Value::Null);
        assert_eq!(
            error.to_string(),
            "409 cas_mismatch: version mismatch: current version is 3"
        );
    }

    #[test]
    fn a_body_without_the_error_model_is_unexpected_and_kept() {
        for body in [
            &b"not json"[..],
            br#"{"error":"flat"}"#,
            br#"{"error":{"message":"no code"}}"#,
            b"",
        ] {
            match from_error_body(502, body) {
                Error::Unexpected { status, body: text } => {
                    assert_eq!(status, 502);
                    assert_eq!(text.as_bytes(), body);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_missing_message_is_empty_not_a_failure() {
        let error = from_error_body(404, br#"{"error":{"code":"not_found"}}"#);
        assert_eq!(error.code(), Some("not_found"));
        assert_eq!(error.api().unwrap().message, "");
    }
}
