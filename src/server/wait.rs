//! Blocking waits shared by every primitive: wait on applied state (woken by the
//! apply loop, never a poll), and withdraw by a replicated command when the wait
//! ends without success — or when the client goes away mid-wait, so no ghost waiter
//! is left behind. A client may also go away *before* its waiting command is
//! applied (under load the apply can lag by seconds): [`propose_undone_if_abandoned`]
//! keeps that submission running and withdraws the waiter it queues.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::error::ApiError;
use super::error_code::ErrorCode;
use super::AppState;
use crate::limits::{WITHDRAW_ATTEMPTS, WITHDRAW_RETRY_BASE_MS};
use crate::sm::elections::ElectionCommand;
use crate::sm::locks::LockCommand;
use crate::sm::semaphores::SemaphoreCommand;
use crate::sm::sessions::SessionId;
use crate::sm::wait_queue::{granted_to, Granted, Waiting};
#[cfg(test)]
use crate::sm::LockOutcome;
use crate::sm::{Applied, Command, Outcome, State, Submission};

/// How a submission is made (the node's proposer; a fake in tests).
pub type ProposeFn = Arc<
    dyn Fn(Submission) -> Pin<Box<dyn Future<Output = Result<Applied, ApiError>> + Send>>
        + Send
        + Sync,
>;

/// `app`'s proposer as a [`ProposeFn`].
pub fn propose_fn(app: &AppState) -> ProposeFn {
    let app = app.clone();
    Arc::new(move |submission| {
        let app = app.clone();
        Box::pin(async move { app.propose(submission).await })
    })
}

/// Proposes an abandoned waiter's withdrawal, again while the node is overloaded
/// (a full proposer queue refuses at once; nothing was applied, so a retry is safe,
/// and withdrawals are idempotent anyway). Other errors are final: the submission
/// was either refused for good or is in the log (indeterminate) and will apply.
async fn propose_withdrawal(
    propose: &ProposeFn,
    withdrawal: Submission,
) -> Result<Applied, ApiError> {
    let mut pause = std::time::Duration::from_millis(WITHDRAW_RETRY_BASE_MS);
    let mut attempt = 1;
    loop {
        match propose(withdrawal.clone()).await {
            Err(ApiError::Overloaded(_)) if attempt < WITHDRAW_ATTEMPTS => {
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Proposes `submission` in a task of its own, so it completes even if the caller
/// (the handler, dropped when its client disconnects) goes away. If the caller is
/// gone by then, the command `undo` derives from the outcome (the withdrawal of a
/// waiter it queued) is proposed instead: nobody is left to wait, and before this a
/// waiter queued after its client left stayed queued until its session ended.
pub async fn propose_undone_if_abandoned(
    propose: ProposeFn,
    submission: Submission,
    undo: impl FnOnce(&Outcome) -> Option<Command> + Send + 'static,
) -> Result<Applied, ApiError> {
    let (reply, answer) = oneshot::channel();
    tokio::spawn(async move {
        let result = propose(submission).await;
        let Err(Ok(applied)) = reply.send(result) else {
            return; // delivered, or failed (nothing to undo)
        };
        let Some(command) = undo(&applied.outcome) else {
            return;
        };
        let withdrawal = Submission {
            request_id: None,
            guard: None,
            acting_as: None,
            command,
        };
        if let Err(error) = propose_withdrawal(&propose, withdrawal).await {
            tracing::warn!("withdrawing a waiter queued after its client left: {error}");
        }
    });
    answer.await.unwrap_or_else(|_| {
        Err(ApiError::Indeterminate(
            "the proposing task stopped; the command may have been applied".into(),
        ))
    })
}

/// Proposes a command that may queue a waiter (an acquire, a barrier arrival, a
/// campaign) so that, if the client leaves before it is applied, `undo` withdraws
/// what it queued; the wait that follows withdraws it if the client leaves later.
pub async fn propose_queueing(
    app: &AppState,
    acting: &super::extract::Acting,
    request_id: Option<String>,
    command: Command,
    undo: impl FnOnce(&Outcome) -> Option<Command> + Send + 'static,
) -> Result<Applied, ApiError> {
    let submission = Submission {
        request_id,
        guard: None,
        acting_as: acting.held_to(),
        command,
    };
    propose_undone_if_abandoned(propose_fn(app), submission, undo).await
}

/// Proposes `command` if dropped while armed (the handler's future was dropped
/// because the client disconnected).
struct WithdrawOnDrop {
    app: Option<AppState>,
    command: Command,
}

impl Drop for WithdrawOnDrop {
    fn drop(&mut self) {
        if let Some(app) = self.app.take() {
            let submission = Submission {
                request_id: None,
                guard: None,
                acting_as: None,
                command: self.command.clone(),
            };
            let propose = propose_fn(&app);
            tokio::spawn(async move {
                if let Err(error) = propose_withdrawal(&propose, submission).await {
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
    let mut on_drop = WithdrawOnDrop {
        app: Some(app.clone()),
        command: withdraw,
    };
    if let Some(found) = app.wait_for_state(deadline, check).await {
        on_drop.app = None;
        return Ok(Waited::Found(found));
    }
    on_drop.app = None;
    let submission = Submission {
        request_id: None,
        guard: None,
        acting_as: None,
        command: on_drop.command.clone(),
    };
    // The waiter was registered by an applied command, so a withdrawal that fails
    // (lost leadership, no quorum, timeout) leaves its fate unknown: it may have been
    // granted or released meanwhile. Answer 504 `indeterminate`, never a "not
    // applied" error — in particular never the not-leader marker, which would make
    // the forwarding layer run the whole request again at the new leader (a barrier
    // arrival counted twice). Found by the jepsen-like barrier workload.
    match propose_withdrawal(&propose_fn(app), submission).await {
        Ok(applied) => Ok(Waited::Withdrawn(applied.outcome)),
        Err(error) => Err(ApiError::Indeterminate(format!(
            "the wait ended but withdrawing the waiter failed ({error}); it may have been granted: retry with the same request_id, or read the resource"
        ))),
    }
}

/// The refusal of a wait whose session ended while it waited.
fn session_ended(session_id: SessionId) -> ApiError {
    ApiError::NotFound {
        code: ErrorCode::SessionNotFound,
        message: format!("session {session_id} ended while waiting"),
    }
}

/// Where a queued waiter stands in the applied state.
enum Standing {
    /// Granted, with this fencing token (an election's term).
    Granted(u64),
    Waiting,
    /// Neither granted nor waiting: withdrawn, or its session ended.
    Gone,
}

/// A waiter's standing among a room's `holders` and `waiting`.
fn standing<'a, H: Granted, W: Waiting + 'a>(
    holders: &[H],
    waiting: impl IntoIterator<Item = &'a W>,
    waiter_id: u64,
) -> Standing {
    if let Some(hold) = granted_to(holders, waiter_id) {
        return Standing::Granted(hold.token());
    }
    match waiting.into_iter().any(|w| w.waiter_id() == waiter_id) {
        true => Standing::Waiting,
        false => Standing::Gone,
    }
}

/// The wait-queue rooms a waiting acquire can queue in.
#[derive(Debug, Clone, Copy)]
pub enum Queue {
    Lock,
    Semaphore,
    Election,
}

impl Queue {
    /// Its `primitive` label on `/metrics`.
    pub fn name(self) -> &'static str {
        match self {
            Queue::Lock => "lock",
            Queue::Semaphore => "semaphore",
            Queue::Election => "election",
        }
    }

    /// The command that withdraws waiter `waiter_id` from resource `name`.
    fn withdraw(self, name: String, waiter_id: u64) -> Command {
        match self {
            Queue::Lock => Command::Lock(LockCommand::Withdraw { name, waiter_id }),
            Queue::Semaphore => Command::Semaphore(SemaphoreCommand::Withdraw { name, waiter_id }),
            Queue::Election => Command::Election(ElectionCommand::Withdraw { name, waiter_id }),
        }
    }

    /// Where waiter `waiter_id` of resource `name` stands in `state`.
    fn standing(self, state: &State, name: &str, waiter_id: u64) -> Standing {
        let found = match self {
            Queue::Lock => {
                (state.locks.get(name)).map(|l| standing(&l.holders, &l.waiters, waiter_id))
            }
            Queue::Semaphore => {
                (state.semaphores.get(name)).map(|s| standing(&s.holders, &s.waiters, waiter_id))
            }
            Queue::Election => (state.elections.get(name))
                .map(|e| standing(e.leader.as_slice(), &e.candidates, waiter_id)),
        };
        found.unwrap_or(Standing::Gone)
    }
}

/// A waiting acquire of a wait-queue room: where it queues and for how long.
pub struct Acquire {
    pub queue: Queue,
    pub name: String,
    pub session_id: SessionId,
    pub deadline: tokio::time::Instant,
}

/// How a waiting acquire ended.
pub enum Acquired {
    /// It did not queue: this first outcome is the answer.
    Answered(Applied),
    /// Granted, at once after queueing or within the wait, with this token.
    Granted(u64),
    /// Not granted: the deadline passed (`timed_out`) or the waiter was withdrawn
    /// by someone else (a retried request whose earlier wait ended).
    NotGranted { timed_out: bool },
}

/// Proposes `command` (with [`propose_queueing`]'s undo); if it queued
/// ([`Outcome::queued_waiter`]), waits until the waiter is granted or gone, or
/// withdraws it at the deadline. A waiter that vanished because its session ended
/// is refused as such.
pub async fn acquire_or_withdraw(
    app: &AppState,
    acting: &super::extract::Acting,
    request_id: Option<String>,
    command: Command,
    how: Acquire,
) -> Result<Acquired, ApiError> {
    let (queue, undo_name) = (how.queue, how.name.clone());
    let undo = move |o: &Outcome| o.queued_waiter().map(|id| queue.withdraw(undo_name, id));
    let applied = propose_queueing(app, acting, request_id, command, undo).await?;
    let Some(waiter_id) = applied.outcome.queued_waiter() else {
        return Ok(Acquired::Answered(applied));
    };
    // How long it queued, for `conclave_acquire_wait_seconds` (this node's clock).
    let queued_at = std::time::Instant::now();
    let withdraw = queue.withdraw(how.name.clone(), waiter_id);
    let waited = wait_or_withdraw(app, how.deadline, withdraw, |state| {
        match queue.standing(state, &how.name, waiter_id) {
            Standing::Granted(token) => Some(Some(token)),
            Standing::Waiting => None,
            Standing::Gone => Some(None),
        }
    })
    .await?;
    let acquired = match waited {
        Waited::Found(Some(token)) => Acquired::Granted(token),
        Waited::Found(None) if !app.session_alive(how.session_id) => {
            return Err(session_ended(how.session_id))
        }
        Waited::Found(None) => Acquired::NotGranted { timed_out: false },
        // The grant may have won the race with the withdrawal.
        Waited::Withdrawn(outcome) => match outcome.granted_token() {
            Some(token) => Acquired::Granted(token),
            None => Acquired::NotGranted { timed_out: true },
        },
    };
    if let Acquired::Granted(_) = acquired {
        let primitive = crate::metrics::PrimitiveLabels {
            primitive: queue.name(),
        };
        let waits = &app.metrics.state.acquire_wait_seconds;
        waits
            .get_or_create(&primitive)
            .observe(queued_at.elapsed().as_secs_f64());
    }
    Ok(acquired)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn submission(name: &str) -> Submission {
        Submission {
            request_id: None,
            guard: None,
            acting_as: None,
            command: Command::Lock(LockCommand::Withdraw {
                name: name.into(),
                waiter_id: 0,
            }),
        }
    }

    /// A proposer that records every command, holds the first until `gate` opens
    /// and answers it `LockQueued`.
    fn gated() -> (ProposeFn, oneshot::Sender<()>, Arc<Mutex<Vec<Submission>>>) {
        let (open, gate) = oneshot::channel::<()>();
        let gate = Arc::new(Mutex::new(Some(gate)));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let propose: ProposeFn = Arc::new(move |submission: Submission| {
            log.lock().unwrap().push(submission);
            let gate = gate.lock().unwrap().take();
            Box::pin(async move {
                if let Some(gate) = gate {
                    let _ = gate.await;
                }
                Ok(Applied {
                    index: 9,
                    outcome: Outcome::Lock(LockOutcome::Queued { waiter_id: 9 }),
                })
            })
        });
        (propose, open, seen)
    }

    fn undo(outcome: &Outcome) -> Option<Command> {
        match outcome {
            Outcome::Lock(LockOutcome::Queued { waiter_id }) => {
                Some(Command::Lock(LockCommand::Withdraw {
                    name: "undo".into(),
                    waiter_id: *waiter_id,
                }))
            }
            _ => None,
        }
    }

    /// Regression (issue #10): a client that disconnected while its waiting acquire
    /// was still being applied left the waiter queued (the withdraw-on-drop was armed
    /// only once the acquire had been applied).
    #[tokio::test]
    async fn a_waiter_queued_after_its_client_left_is_withdrawn() {
        let (propose, open, seen) = gated();
        let (done, finished) = oneshot::channel::<()>();
        let handler = tokio::spawn(async move {
            let _done = done; // dropped with the handler
            propose_undone_if_abandoned(propose, submission("acquire"), undo).await
        });
        // The handler is waiting on the gated acquire; its client goes away.
        while seen.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        handler.abort();
        let _ = finished.await; // the handler future is gone
        open.send(()).unwrap();
        let withdrawn = async {
            while seen.lock().unwrap().len() < 2 {
                tokio::task::yield_now().await;
            }
        };
        let waited = std::time::Duration::from_secs(10);
        assert!(
            tokio::time::timeout(waited, withdrawn).await.is_ok(),
            "the queued waiter was never withdrawn"
        );
        let seen = seen.lock().unwrap();
        assert!(matches!(
            &seen[1].command,
            Command::Lock(LockCommand::Withdraw { name, waiter_id: 9 }) if name == "undo"
        ));
    }

    #[tokio::test]
    async fn a_caller_still_there_gets_the_outcome_and_nothing_is_undone() {
        let (propose, open, seen) = gated();
        open.send(()).unwrap();
        let applied = propose_undone_if_abandoned(propose, submission("acquire"), undo)
            .await
            .unwrap();
        assert_eq!(
            applied.outcome,
            Outcome::Lock(LockOutcome::Queued { waiter_id: 9 })
        );
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(seen.lock().unwrap().len(), 1, "no withdrawal");
    }

    /// Regression (issue #10): an abandoned waiter's withdrawal refused as
    /// `overloaded` (a full proposer queue) was given up after one try.
    #[tokio::test]
    async fn an_abandoned_waiters_withdrawal_is_retried_while_the_node_is_overloaded() {
        let attempts = Arc::new(Mutex::new(0));
        let counted = attempts.clone();
        let propose: ProposeFn = Arc::new(move |_| {
            let attempt = {
                let mut attempts = counted.lock().unwrap();
                *attempts += 1;
                *attempts
            };
            Box::pin(async move {
                if attempt < 3 {
                    return Err(ApiError::Overloaded("full".into()));
                }
                Ok(Applied {
                    index: 1,
                    outcome: Outcome::Lock(LockOutcome::Held),
                })
            })
        });
        let applied = propose_withdrawal(&propose, submission("L")).await.unwrap();
        assert_eq!(applied.outcome, Outcome::Lock(LockOutcome::Held));
        assert_eq!(*attempts.lock().unwrap(), 3);
    }
}
