//! Reading a whole HTTP request body within a byte limit, telling "too large" from
//! "malformed". Shared by the client API (`server`) and the peer listener
//! (`transport`), which map the two failures to their own error types. Must not
//! depend on either.

use bytes::Bytes;

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is longer than the limit.
    #[error("the body is over the limit of {limit} bytes")]
    TooLarge { limit: usize },
    /// The body could not be read: a malformed chunked encoding, a connection cut
    /// mid-body. (Bug: every read error was answered as too large.)
    #[error("the request body could not be read: {0}")]
    Malformed(String),
    /// The whole body did not arrive within the body-read timeout (`serve`).
    #[error("{0}")]
    TimedOut(String),
}

/// Reads a whole body of at most `limit` bytes.
pub async fn read_limited(body: axum::body::Body, limit: usize) -> Result<Bytes, BodyError> {
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        if is_length_limit(&error) {
            BodyError::TooLarge { limit }
        } else if let Some(timed_out) = timed_out(&error) {
            BodyError::TimedOut(timed_out)
        } else {
            BodyError::Malformed(error.to_string())
        }
    })
}

/// The body-read deadline's message, if that is what ended the read.
fn timed_out(error: &axum::Error) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        if let Some(timed_out) = error.downcast_ref::<crate::serve::BodyTimedOut>() {
            return Some(timed_out.to_string());
        }
        cause = error.source();
    }
    None
}

/// Whether a body-read error is the length limit (anywhere in its source chain).
fn is_length_limit(error: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = error.source();
    }
    false
}
