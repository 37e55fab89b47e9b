//! Every stable error `code` the API answers with, as one enum: a handler names a
//! variant, never a string, so a code cannot be misspelled in one place or built
//! differently in two. `docs/api.md` documents each one (a test checks).
//!
//! Owns only the names; the status each error maps to lives in `error`. Must not
//! depend on handlers, the state machine or Raft. (The peer listener's refusals
//! have codes of their own in `transport::server`.)

macro_rules! error_codes {
    ($($variant:ident => $text:literal,)*) => {
        /// A stable, machine-readable error code (the `code` of an error body).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            /// Every code, for documentation checks.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as it appears on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $text,)*
                }
            }
        }
    };
}

error_codes! {
    BodyTimeout => "body_timeout",
    BelowMinVoters => "below_min_voters",
    AlreadyVoted => "already_voted",
    CasMismatch => "cas_mismatch",
    Compacted => "compacted",
    Deadlock => "deadlock",
    EmptyMembership => "empty_membership",
    Forbidden => "forbidden",
    Indeterminate => "indeterminate",
    Internal => "internal",
    InvalidAddr => "invalid_addr",
    InvalidBody => "invalid_body",
    InvalidCapability => "invalid_capability",
    InvalidCapacity => "invalid_capacity",
    InvalidDuration => "invalid_duration",
    InvalidEventId => "invalid_event_id",
    InvalidEventType => "invalid_event_type",
    InvalidGuard => "invalid_guard",
    InvalidKey => "invalid_key",
    InvalidLimit => "invalid_limit",
    InvalidMaxAttempts => "invalid_max_attempts",
    InvalidMode => "invalid_mode",
    InvalidName => "invalid_name",
    InvalidNodeId => "invalid_node_id",
    InvalidParties => "invalid_parties",
    InvalidProposalId => "invalid_proposal_id",
    InvalidOffset => "invalid_offset",
    InvalidPath => "invalid_path",
    InvalidQuery => "invalid_query",
    InvalidRequest => "invalid_request",
    InvalidRequestId => "invalid_request_id",
    InvalidRule => "invalid_rule",
    InvalidSessionId => "invalid_session_id",
    InvalidTaskId => "invalid_task_id",
    InvalidTitle => "invalid_title",
    InvalidTransactionId => "invalid_transaction_id",
    InvalidTxn => "invalid_txn",
    InvalidVoters => "invalid_voters",
    InvalidWait => "invalid_wait",
    KeyNotFound => "key_not_found",
    KeyTooLong => "key_too_long",
    LearnerNotCaughtUp => "learner_not_caught_up",
    LearnerNotFound => "learner_not_found",
    LimitMismatch => "limit_mismatch",
    LockHeld => "lock_held",
    MalformedJson => "malformed_json",
    MemberConflict => "member_conflict",
    MemberNotFound => "member_not_found",
    MembershipChangeInProgress => "membership_change_in_progress",
    MethodNotAllowed => "method_not_allowed",
    NoLeader => "no_leader",
    NotAParticipant => "not_a_participant",
    NotAVoter => "not_a_voter",
    NotDecided => "not_decided",
    NotFound => "not_found",
    NotSessionOwner => "not_session_owner",
    NotTheParty => "not_the_party",
    Overloaded => "overloaded",
    PayloadTooLarge => "payload_too_large",
    PermitsUnavailable => "permits_unavailable",
    ProposalDecided => "proposal_decided",
    ProposalNotFound => "proposal_not_found",
    RateLimited => "rate_limited",
    RequestIdConflict => "request_id_conflict",
    SessionNotFound => "session_not_found",
    StaleFencingToken => "stale_fencing_token",
    TaskNotFound => "task_not_found",
    TokenExpired => "token_expired",
    TooManyCapabilities => "too_many_capabilities",
    TooManyDependencies => "too_many_dependencies",
    TooManyWatchers => "too_many_watchers",
    TransactionDecided => "transaction_decided",
    TransactionNotFound => "transaction_not_found",
    Unauthenticated => "unauthenticated",
    Unavailable => "unavailable",
    WrongState => "wrong_state",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_is_snake_case_unique_and_documented() {
        let api = include_str!("../../docs/api.md");
        let mut seen = std::collections::BTreeSet::new();
        for code in ErrorCode::ALL {
            let text = code.as_str();
            assert!(
                text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{text}"
            );
            assert!(seen.insert(text), "{text} twice");
            assert!(
                api.contains(&format!("`{text}`")),
                "docs/api.md does not document `{text}`"
            );
        }
    }
}
