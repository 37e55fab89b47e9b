//! Blocking waits shared by every primitive: wait on applied state (woken by the
//! apply loop, never a poll), and withdraw by a replicated command when the wait
//! ends without success — or when the client goes away mid-wait, so no ghost waiter
//! is left behind.

use super::error::ApiError;
use super::AppState;
use crate::sm::{Command, Outcome, Proposal, State};

/// Proposes `command` if dropped while armed (the handler's future was dropped
/// because the client disconnected).
struct WithdrawOnDrop {
    app: Option<AppState>,
    command: Command,
}

impl Drop for WithdrawOnDrop {
    fn drop(&mut self) {
        if let Some(app) = self.app.take() {
            let proposal = Proposal {
                request_id: None,
                guard: None,
                command: self.command.clone(),
            };
            tokio::spawn(async move {
                if let Err(error) = app.propose(proposal).await {
                    tracing::warn!("withdrawing an abandoned waiter: {error}");
                }
            });
        }
    }
}

/// How a wait ended.
pub enum Waited<T> {
    /// `check` found what it waited for.
    Found(T),
    /// The deadline passed; `withdraw` was applied with this outcome (which may
    /// still report success if it won the race).
    Withdrawn(Outcome),
}

/// Waits until `check` finds something in the applied state or `deadline` passes;
/// then withdraws with `withdraw`.
pub async fn wait_or_withdraw<T>(
    app: &AppState,
    deadline: tokio::time::Instant,
    withdraw: Command,
    check: impl FnMut(&State) -> Option<T>,
) -> Result<Waited<T>, ApiError> {
    let mut guard = WithdrawOnDrop {
        app: Some(app.clone()),
        command: withdraw,
    };
    if let Some(found) = app.wait_for_state(deadline, check).await {
        guard.app = None;
        return Ok(Waited::Found(found));
    }
    guard.app = None;
    let proposal = Proposal {
        request_id: None,
        guard: None,
        command: guard.command.clone(),
    };
    // The waiter was registered by an applied command, so a withdrawal that fails
    // (lost leadership, no quorum, timeout) leaves its fate unknown: it may have been
    // granted or released meanwhile. Answer 504 `indeterminate`, never a "not
    // applied" error — in particular never the not-leader marker, which would make
    // the forwarding layer run the whole request again at the new leader (a barrier
    // arrival counted twice). Found by the jepsen-like barrier workload.
    match app.propose(proposal).await {
        Ok(applied) => Ok(Waited::Withdrawn(applied.outcome)),
        Err(error) => Err(ApiError::Indeterminate(format!(
            "the wait ended but withdrawing the waiter failed ({error}); it may have been granted: retry with the same request_id, or read the resource"
        ))),
    }
}
