//! Helpers shared by the state machine's unit tests: apply commands as one batch at
//! a given cluster time, and make sessions.

use super::sessions::NewSession;
use super::{Batch, Command, Outcome, Proposal, State};

/// Applies `commands` as one batch stamped `time_ms`; returns their outcomes.
pub fn run(state: &mut State, time_ms: u64, commands: Vec<Command>) -> Vec<Outcome> {
    let proposals = commands
        .into_iter()
        .map(|command| Proposal {
            request_id: None,
            guard: None,
            command,
        })
        .collect();
    let response = state.apply_batch(&Batch {
        leader_time_ms: time_ms,
        proposals,
    });
    response
        .results
        .into_iter()
        .map(|applied| applied.outcome)
        .collect()
}

/// Applies one command at `time_ms`; returns its outcome.
pub fn one(state: &mut State, time_ms: u64, command: Command) -> Outcome {
    run(state, time_ms, vec![command]).remove(0)
}

/// A session-create command (no capabilities, capacity 0).
pub fn session(ttl_ms: u64) -> Command {
    Command::SessionCreate(NewSession {
        name: "s".into(),
        capabilities: Default::default(),
        capacity: 0,
        ttl_ms,
        metadata_json: "{}".into(),
    })
}

/// A state with `n` sessions (ids 1..=n) created at time 0 with `ttl_ms`.
pub fn with_sessions_ttl(n: u64, ttl_ms: u64) -> State {
    let mut state = State::default();
    run(&mut state, 0, (0..n).map(|_| session(ttl_ms)).collect());
    state
}
