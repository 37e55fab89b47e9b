//! The worker loop: [`Session::work`] claims the session's tasks (a server-side long
//! poll with `wait_ms`), runs the handler on each while heartbeating its lease with
//! the handler's latest progress, tells the handler of a cancellation
//! (`cancel_requested` in a heartbeat answer) or of a lost lease, and completes or
//! fails the task by the handler's result (each with a generated `request_id`, so a
//! lost answer is retried safely). While more tasks are to be handled, the
//! completion carries `claim_next` with no wait: when a task is ready it is claimed
//! by the completion's own command, saving the claim's request and log entry.
//!
//! Depends on the session helper and the task endpoints only (not on the lock or
//! watch helpers); nothing depends on it.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

use crate::{Claimed, Error, Heartbeat, Session, SessionState, TaskComplete, TaskFail};

/// How the loop runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The claim's long poll (default 10 s; the server caps it at `max_wait_ms`).
    pub wait_ms: u64,
    /// Time between heartbeats (default a third of the task's `lease_ms`).
    pub heartbeat_interval: Option<Duration>,
    /// Return after this many tasks were handled (default: run until the session
    /// expires).
    pub max_tasks: Option<u64>,
}

impl Default for WorkerOptions {
    fn default() -> WorkerOptions {
        WorkerOptions {
            wait_ms: 10_000,
            heartbeat_interval: None,
            max_tasks: None,
        }
    }
}

/// A handler's failure: recorded in the task's `errors`; `retryable: false`
/// dead-letters the task at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    pub message: String,
    pub retryable: bool,
}

impl TaskFailure {
    /// A failure the task should not be retried after.
    pub fn permanent(message: impl Into<String>) -> TaskFailure {
        TaskFailure {
            message: message.into(),
            retryable: false,
        }
    }
}

impl From<String> for TaskFailure {
    fn from(message: String) -> TaskFailure {
        TaskFailure {
            message,
            retryable: true,
        }
    }
}

impl From<&str> for TaskFailure {
    fn from(message: &str) -> TaskFailure {
        TaskFailure::from(message.to_owned())
    }
}

/// What the loop did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerReport {
    pub completed: u64,
    pub failed: u64,
    /// Cancelled while the handler ran (not completed or failed).
    pub cancelled: u64,
    /// The lease was lost (another token holds the task, or the session expired).
    pub lost: u64,
}

impl WorkerReport {
    fn handled(&self) -> u64 {
        self.completed + self.failed + self.cancelled + self.lost
    }
}

/// A claimed task as the handler sees it.
#[derive(Debug, Clone)]
pub struct TaskContext {
    task: Value,
    task_id: u64,
    fencing_token: u64,
    progress: Arc<Mutex<Option<Value>>>,
    stop: watch::Receiver<bool>,
}

impl TaskContext {
    /// The task view as claimed.
    pub fn task(&self) -> &Value {
        &self.task
    }

    pub fn task_id(&self) -> u64 {
        self.task_id
    }

    pub fn fencing_token(&self) -> u64 {
        self.fencing_token
    }

    pub fn payload(&self) -> &Value {
        &self.task["payload"]
    }

    /// Sent with the next heartbeat (replacing the stored `progress`).
    pub fn set_progress(&self, progress: Value) {
        *self.progress.lock().unwrap() = Some(progress);
    }

    /// Whether the task was cancelled or its lease lost: stop working.
    pub fn is_cancelled(&self) -> bool {
        *self.stop.borrow()
    }

    /// Resolves when the task is cancelled or its lease lost.
    pub async fn cancelled(&self) {
        let mut stop = self.stop.clone();
        let _ = stop.wait_for(|stop| *stop).await;
    }
}

/// How one task's run ended.
enum Ending {
    Finished(Result<Value, TaskFailure>),
    Cancelled,
    Lost,
}

impl Session {
    /// Runs the worker loop (module docs) until `options.max_tasks` tasks were
    /// handled, or the session expires (`Err(SessionExpired)`).
    pub async fn work<F, Fut>(
        &self,
        options: WorkerOptions,
        mut handler: F,
    ) -> Result<WorkerReport, Error>
    where
        F: FnMut(TaskContext) -> Fut,
        Fut: Future<Output = Result<Value, TaskFailure>>,
    {
        let mut report = WorkerReport::default();
        let mut pause = Duration::from_millis(50);
        // The next task when the last completion claimed it (`claim_next`).
        let mut next = None;
        while options.max_tasks.is_none_or(|max| report.handled() < max) {
            self.check()?;
            if let Some(claimed) = next.take() {
                next = self
                    .run_one(&options, claimed, &mut handler, &mut report)
                    .await?;
                continue;
            }
            let claim = tokio::select! {
                claim = self.client().task_claim(self.id(), options.wait_ms) => claim,
                _ = self.expired() => return Err(Error::SessionExpired(self.id())),
            };
            let claimed = match claim {
                Ok(Some(claimed)) => claimed,
                Ok(None) => continue,
                Err(error) if error.code() == Some("session_not_found") => {
                    return Err(Error::SessionExpired(self.id()))
                }
                // Not answered (a 5xx, a lost connection): claim again shortly. A
                // claim whose answer was lost leaves its task claimed until its
                // lease ends (docs/api.md, claim).
                Err(error) if error.status().is_none_or(|status| status >= 500) => {
                    tokio::time::sleep(crate::call::jitter(pause)).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                    continue;
                }
                Err(error) => return Err(error),
            };
            pause = Duration::from_millis(50);
            next = self
                .run_one(&options, claimed, &mut handler, &mut report)
                .await?;
        }
        Ok(report)
    }

    async fn run_one<F, Fut>(
        &self,
        options: &WorkerOptions,
        claimed: Claimed,
        handler: &mut F,
        report: &mut WorkerReport,
    ) -> Result<Option<Claimed>, Error>
    where
        F: FnMut(TaskContext) -> Fut,
        Fut: Future<Output = Result<Value, TaskFailure>>,
    {
        let task_id = claimed.task["task_id"].as_u64().unwrap_or_default();
        let token = claimed.fencing_token;
        let lease = Duration::from_millis(claimed.task["lease_ms"].as_u64().unwrap_or(30_000));
        let interval = options
            .heartbeat_interval
            .unwrap_or(lease / 3)
            .max(Duration::from_millis(10));
        let (stop_sender, stop) = watch::channel(false);
        let progress = Arc::new(Mutex::new(None));
        let context = TaskContext {
            task: claimed.task,
            task_id,
            fencing_token: token,
            progress: progress.clone(),
            stop,
        };
        // Heartbeats run beside the handler, so a slow heartbeat never stalls it.
        let halt = Arc::new(Mutex::new(None));
        let heartbeats = tokio::spawn(heartbeat(
            self.client().clone(),
            task_id,
            token,
            interval,
            progress,
            self.states(),
            stop_sender,
            halt.clone(),
        ));
        let result = handler(context).await;
        heartbeats.abort();
        let halted = halt.lock().unwrap().take();
        // Another task will be handled after this one: its completion claims it
        // when one is ready (`claim_next` with no wait: one command, retried with
        // its request id like a plain completion; none ready → the claim's poll).
        let more = options
            .max_tasks
            .is_none_or(|max| report.handled() + 1 < max);
        let mut next = None;
        match halted.unwrap_or(Ending::Finished(result)) {
            Ending::Cancelled => report.cancelled += 1,
            Ending::Lost => report.lost += 1,
            Ending::Finished(Ok(result)) => {
                let complete = TaskComplete {
                    fencing_token: token,
                    result: Some(result),
                    ..TaskComplete::default()
                };
                let done = match more {
                    true => {
                        self.client()
                            .task_complete_and_claim(task_id, &complete, 0)
                            .await
                    }
                    false => self
                        .client()
                        .task_complete(task_id, &complete)
                        .await
                        .map(plain),
                };
                match done {
                    Ok(done) => (report.completed, next) = (report.completed + 1, done.next),
                    Err(error) if lost_lease(&error) => report.lost += 1,
                    Err(error) => return Err(error),
                }
            }
            Ending::Finished(Err(failure)) => {
                let fail = TaskFail {
                    fencing_token: token,
                    error: failure.message,
                    retryable: Some(failure.retryable),
                    ..TaskFail::default()
                };
                let done = match more {
                    true => self.client().task_fail_and_claim(task_id, &fail, 0).await,
                    false => self.client().task_fail(task_id, &fail).await.map(plain),
                };
                match done {
                    Ok(done) => (report.failed, next) = (report.failed + 1, done.next),
                    Err(error) if lost_lease(&error) => report.lost += 1,
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(next)
    }
}

/// Heartbeats the lease every `interval` with the latest progress until the task is
/// cancelled or lost (then it says so in `halt` and stops the handler's context).
#[allow(clippy::too_many_arguments)]
async fn heartbeat(
    client: crate::Client,
    task_id: u64,
    token: u64,
    interval: Duration,
    progress: Arc<Mutex<Option<Value>>>,
    mut states: watch::Receiver<SessionState>,
    stop: watch::Sender<bool>,
    halt: Arc<Mutex<Option<Ending>>>,
) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ending = loop {
        tokio::select! {
            _ = ticker.tick() => {
                let heartbeat = Heartbeat {
                    fencing_token: token,
                    progress: progress.lock().unwrap().clone(),
                    ..Heartbeat::default()
                };
                match client.task_heartbeat(task_id, &heartbeat).await {
                    Ok(sent) if sent.cancel_requested => break Ending::Cancelled,
                    Ok(_) => {}
                    Err(error) if lost_lease(&error) => break Ending::Lost,
                    Err(_) => {} // not answered: the next tick tries again
                }
            }
            _ = crate::session::until_expired(&mut states) => break Ending::Lost,
        }
    };
    *halt.lock().unwrap() = Some(ending);
    let _ = stop.send(true);
}

/// A plain completion's answer as a `claim_next` one that claimed nothing.
fn plain(written: crate::TaskWritten) -> crate::Finished {
    crate::Finished {
        task_id: written.task_id,
        state: written.state,
        index: written.index,
        next: None,
    }
}

/// A refusal meaning the task is no longer this token's.
fn lost_lease(error: &Error) -> bool {
    matches!(
        error.code(),
        Some("stale_fencing_token" | "wrong_state" | "task_not_found")
    )
}
