//! Write batching: the leader-side task that coalesces concurrent commands into one
//! Raft log entry and hands each caller its own result.
//!
//! openraft 0.9 appends and fsyncs every `client_write` on its own, so one entry per
//! request would cost one fsync per request. Instead callers queue [`Submission`]s here;
//! the task takes the first one as soon as it arrives (no delay when idle), drains
//! whatever else is already queued (bounded by count and bytes), stamps the leader's
//! clock, and proposes the [`Batch`]. Up to `max_inflight_batches` batches are in
//! Raft at once; while they are, new arrivals accumulate into the next batch. Every
//! `client_write` is wrapped in the write timeout: a timeout is *indeterminate* (the
//! entry may still commit), a `ForwardToLeader` is definitely not applied.
//!
//! The time stamped on a batch (and read by the ticker and the keepalive handler
//! through [`Proposer::leader_now_ms`]) comes from [`super::clock::LeaderClock`], which
//! bounds how far one node's wall clock can move cluster time.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::clock::LeaderClock;
use crate::limits::Limits;
use crate::metrics::ProposerMetrics;
use crate::raft_types::{NodeId, Raft};
use crate::sm::{Applied, Batch, Submission};
use crate::store::StateMachineStore;

/// The leader's notion of now: the bounded reading of `clock` (see [`clock`]),
/// never behind the cluster time applied here. The state machine independently
/// never lets cluster time go back.
fn leader_now_ms(clock: &LeaderClock, state_machine: &StateMachineStore) -> u64 {
    let applied_ms = state_machine.read().state.cluster_time_ms;
    clock.now_ms(applied_ms)
}

/// Why a submission has no result.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProposeError {
    /// This node is not the leader; nothing was applied. `leader` is a hint.
    #[error("not the leader")]
    NotLeader { leader: Option<NodeId> },
    /// Too many commands are queued; nothing was applied.
    #[error("too many queued writes")]
    Overloaded,
    /// The node is shutting down or Raft stopped before proposing; nothing was applied.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Proposed, but the outcome is unknown (timeout, or Raft stopped mid-write).
    #[error("outcome unknown: {0}")]
    Indeterminate(String),
}

struct Pending {
    submission: Submission,
    bytes: usize,
    reply: oneshot::Sender<Result<Applied, ProposeError>>,
}

/// Handle to the batching task. Cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::Sender<Pending>,
    /// The batch task's in-flight slots; holding all of them pauses proposing.
    inflight: Arc<Semaphore>,
    max_inflight: u32,
    write_timeout: Duration,
    clock: Arc<LeaderClock>,
    state_machine: StateMachineStore,
}

impl Proposer {
    /// Starts the batching task for `raft`, stamping batches with `clock` and
    /// counting them in `metrics`, and the task that shows `clock` every cluster
    /// time applied here.
    pub fn spawn(
        raft: Raft,
        state_machine: StateMachineStore,
        limits: &Limits,
        clock: Arc<LeaderClock>,
        metrics: ProposerMetrics,
    ) -> Self {
        let (queue, receiver) = mpsc::channel(limits.max_queued_commands);
        let write_timeout = Duration::from_millis(limits.write_timeout_ms);
        let inflight = Arc::new(Semaphore::new(limits.max_inflight_batches));
        let task = BatchTask {
            raft,
            receiver,
            inflight: inflight.clone(),
            max_commands: limits.max_batch_commands,
            max_bytes: limits.max_batch_bytes,
            write_timeout,
            metrics,
            state_machine: state_machine.clone(),
            clock: clock.clone(),
        };
        tokio::spawn(task.run());
        tokio::spawn(observe_applied(state_machine.clone(), clock.clone()));
        Self {
            queue,
            inflight,
            max_inflight: u32::try_from(limits.max_inflight_batches).unwrap_or(u32::MAX),
            write_timeout,
            clock,
            state_machine,
        }
    }

    /// Commands queued for the next batch (for `/metrics`).
    pub fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// This node's time as a leader (for the ticker and accepted keepalives): the
    /// same clock the batches are stamped with.
    pub fn leader_now_ms(&self) -> u64 {
        leader_now_ms(&self.clock, &self.state_machine)
    }

    /// Stops proposing (new writes queue, bounded as ever) once the batches in Raft
    /// have finished; proposing resumes when the guard is dropped. For a leadership
    /// transfer, which needs the log to stand still.
    pub async fn pause(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.inflight
            .clone()
            .acquire_many_owned(self.max_inflight)
            .await
            .ok()
    }

    /// The leader clock (the test-only offset endpoint acts on it).
    pub fn clock(&self) -> &LeaderClock {
        &self.clock
    }

    /// Proposes one command and waits for its applied result.
    pub async fn propose(&self, submission: Submission) -> Result<Applied, ProposeError> {
        let (reply, result) = oneshot::channel();
        let bytes = submission.size_hint();
        self.queue
            .try_send(Pending {
                submission,
                bytes,
                reply,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => ProposeError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => {
                    ProposeError::Unavailable("proposer stopped".into())
                }
            })?;
        // The batch task always answers (its own write timeout included); the outer
        // timeout only guards against a bug there.
        match tokio::time::timeout(self.write_timeout * 2, result).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ProposeError::Indeterminate(
                "proposer dropped the write".into(),
            )),
            Err(_) => Err(ProposeError::Indeterminate("write timed out".into())),
        }
    }
}

struct BatchTask {
    raft: Raft,
    receiver: mpsc::Receiver<Pending>,
    inflight: Arc<Semaphore>,
    max_commands: usize,
    max_bytes: usize,
    write_timeout: Duration,
    metrics: ProposerMetrics,
    state_machine: StateMachineStore,
    clock: Arc<LeaderClock>,
}

/// Shows `clock` the cluster time after every apply, so a follower that becomes
/// leader continues from the last applied time plus the monotonic time since.
async fn observe_applied(state_machine: StateMachineStore, clock: Arc<LeaderClock>) {
    let mut applied = state_machine.subscribe_applied();
    loop {
        let cluster_time_ms = state_machine.read().state.cluster_time_ms;
        clock.observe(cluster_time_ms);
        if applied.changed().await.is_err() {
            return;
        }
    }
}

impl BatchTask {
    async fn run(mut self) {
        loop {
            // The first command before the permit: an idle proposer holds no permit,
            // so `pause` (which takes them all) returns at once when nothing is in
            // flight (a leadership transfer of an idle leader used to wait for a
            // write that never came).
            let Some(first) = self.receiver.recv().await else {
                return;
            };
            let Ok(permit) = self.inflight.clone().acquire_owned().await else {
                return;
            };
            let mut bytes = first.bytes;
            let mut pending = vec![first];
            while pending.len() < self.max_commands && bytes < self.max_bytes {
                match self.receiver.try_recv() {
                    Ok(next) => {
                        bytes += next.bytes;
                        pending.push(next);
                    }
                    Err(_) => break,
                }
            }
            let leader_time_ms = self.stamp();
            let (submissions, replies): (Vec<_>, Vec<_>) =
                pending.into_iter().map(|p| (p.submission, p.reply)).unzip();
            // Once per batch: two atomic adds and a histogram bucket.
            self.metrics.batches.inc();
            self.metrics.commands.inc_by(submissions.len() as u64);
            self.metrics
                .batch_commands
                .observe(submissions.len() as f64);
            let raft = self.raft.clone();
            let write_timeout = self.write_timeout;
            let inflight = self.metrics.inflight_batches.clone();
            let commit_seconds = self.metrics.commit_seconds.clone();
            inflight.inc();
            tokio::spawn(async move {
                let batch = Batch {
                    leader_time_ms,
                    submissions,
                };
                // The node's clock, for the metric only.
                let proposed = std::time::Instant::now();
                let outcome = tokio::time::timeout(write_timeout, raft.client_write(batch)).await;
                commit_seconds.observe(proposed.elapsed().as_secs_f64());
                drop(permit);
                inflight.dec();
                deliver(outcome, replies);
            });
        }
    }

    /// The leader's time for a batch (see [`leader_now_ms`]).
    fn stamp(&mut self) -> u64 {
        leader_now_ms(&self.clock, &self.state_machine)
    }
}

type WriteOutcome = Result<
    Result<
        openraft::raft::ClientWriteResponse<crate::raft_types::TypeConfig>,
        RaftError<NodeId, ClientWriteError<NodeId, crate::raft_types::Member>>,
    >,
    tokio::time::error::Elapsed,
>;

fn deliver(outcome: WriteOutcome, replies: Vec<oneshot::Sender<Result<Applied, ProposeError>>>) {
    let error = match outcome {
        Ok(Ok(response)) => {
            let mut results = response.data.results.into_iter();
            for reply in replies {
                let result = results.next().ok_or_else(|| {
                    ProposeError::Indeterminate("state machine returned too few results".into())
                });
                let _ = reply.send(result);
            }
            return;
        }
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
            ProposeError::NotLeader {
                leader: forward.leader_id,
            }
        }
        Ok(Err(RaftError::APIError(other))) => ProposeError::Unavailable(other.to_string()),
        Ok(Err(RaftError::Fatal(fatal))) => {
            ProposeError::Indeterminate(format!("raft stopped: {fatal}"))
        }
        Err(_) => {
            ProposeError::Indeterminate("the write was proposed but not committed in time".into())
        }
    };
    for reply in replies {
        let _ = reply.send(Err(error.clone()));
    }
}
