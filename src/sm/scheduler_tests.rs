//! Unit and property tests of sessions and tasks, driven only through
//! [`State::apply_batch`](super::State::apply_batch): time enters through
//! `leader_time_ms`, ids and fencing tokens are command indexes. One file per
//! subject; the command builders and the [`Machine`](super::test_support::Machine)
//! they drive live in `test_support`, the ephemeral-key tests in `kv`.

mod assignment;
mod cancel_and_idempotency;
mod claims_and_tokens;
mod dependencies;
mod finish_and_claim;
mod golden;
mod invariants;
mod leases_and_retries;
mod properties;
mod regressions;
mod retention;
mod sessions;
