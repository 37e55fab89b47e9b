//! The sessions room: agent sessions (`records`: liveness with a TTL, capabilities,
//! capacity, load, and the indexes assignment uses), the session command
//! (`SessionCommand`), and the rules (`rules`: create, renew, end — which runs
//! every room's session-end hook).
//!
//! Like all of `sm`, it must not depend on storage, Raft, the clock or the HTTP
//! layer; ending a session calls into the other rooms only through their
//! `*_on_session_end` hooks.

mod command;
mod records;
mod rules;

pub use command::{SessionCommand, SessionOutcome};
pub use records::*;
pub(in crate::sm) use rules::session_not_found;
