//! The CLI's exit codes and how a failure maps to one (docs/cli.md, "Exit codes"):
//! 0 done, 1 refused (the server answered 4xx/5xx other than 503/504: the request
//! was not applied, or was answered with a refusal such as `cas_mismatch`), 2 usage
//! (clap's own code for bad arguments), 3 unavailable (503, or nothing answered
//! before the request was sent: nothing was applied), 4 indeterminate (504, or the
//! connection failed after the request may have been sent: retry with the same
//! `request_id`, or read `GET /v1/requests/{id}`).
//!
//! Depends only on `conclave-client`'s error type.

use conclave_client::Error;

pub const OK: i32 = 0;
pub const REFUSED: i32 = 1;
/// clap exits with it on bad arguments (checked in the tests).
#[allow(dead_code)]
pub const USAGE: i32 = 2;
pub const UNAVAILABLE: i32 = 3;
pub const INDETERMINATE: i32 = 4;

/// The exit code for a failed command.
pub fn code_of(error: &anyhow::Error) -> i32 {
    let Some(client) = error.chain().find_map(|e| e.downcast_ref::<Error>()) else {
        return REFUSED;
    };
    match client {
        Error::Api(api) if api.status == 503 => UNAVAILABLE,
        Error::Api(api) if api.status == 504 => INDETERMINATE,
        Error::Api(_) | Error::NotMember(_) => REFUSED,
        Error::Transport(transport) if transport.is_connect() => UNAVAILABLE,
        Error::Transport(_) => INDETERMINATE,
        Error::Unexpected { status: 503, .. } => UNAVAILABLE,
        Error::Unexpected { status: 504, .. } => INDETERMINATE,
        Error::Unexpected { .. }
        | Error::UnsendableSegment(_)
        | Error::InvalidBaseUrl(_)
        | Error::NoEndpoints
        | Error::Lagged { .. }
        | Error::SessionExpired(_) => REFUSED,
        // The call's overall deadline passed: whether a sent write applied is unknown.
        Error::DeadlineExceeded => INDETERMINATE,
    }
}

/// Runs a command's body and exits with its code; failures are printed first as
/// `Error: <status> <code>: <message>`.
pub fn finish(result: anyhow::Result<()>) -> ! {
    match result {
        Ok(()) => std::process::exit(OK),
        Err(error) => {
            eprintln!("Error: {error:#}");
            std::process::exit(code_of(&error))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16) -> anyhow::Error {
        let body = r#"{"error":{"code":"c","message":"m"}}"#;
        anyhow::Error::new(Error::from_answer(status, body.as_bytes()))
    }

    #[test]
    fn statuses_map_to_the_documented_codes() {
        assert_eq!(code_of(&api(409)), REFUSED);
        assert_eq!(code_of(&api(404)), REFUSED);
        assert_eq!(code_of(&api(503)), UNAVAILABLE);
        assert_eq!(code_of(&api(504)), INDETERMINATE);
        assert_eq!(code_of(&anyhow::anyhow!("reading a file")), REFUSED);
        let usage = clap::Command::new("c")
            .try_get_matches_from(["c", "--nope"])
            .unwrap_err();
        assert_eq!(usage.exit_code(), USAGE);
        let wrapped = api(503).context("while putting k");
        assert_eq!(code_of(&wrapped), UNAVAILABLE, "found through context");
    }
}
