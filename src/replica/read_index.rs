//! Read-index batching: one leadership-confirming round serves every linearizable
//! read that arrived before the round started.
//!
//! A linearizable read calls [`ReadIndex::wait`], which queues it for the next round
//! and returns once `ensure_linearizable` (a heartbeat round to a quorum, then a wait
//! until this node has applied up to the commit index it saw) has completed for a
//! round that *started after the read arrived*. The caller then reads its local state
//! machine. One round is in flight at a time; reads arriving during it form the next.
//!
//! On a follower (#16) a round asks the leader for its read index instead
//! (`POST /raft/read_index` on the peer listener, through [`LeaderCall`]): the leader
//! confirms its leadership with a quorum ([`leader_read_index`]) and answers the log
//! index every read that arrived before must see; the follower waits until it has
//! applied that index and serves its waiters from its own state machine. One RPC per
//! round, whatever the number of waiters, and the leader does not apply, parse or
//! answer the reads themselves. A follower that cannot reach a leader answers
//! `NotLeader`, and the HTTP layer forwards the read instead (`server::forward`).
//!
//! Must not depend on the HTTP layer: the peer call is injected by `node`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::limits::Limits;
use crate::raft_types::{NodeId, Raft};

/// Asks leader `NodeId` (peer listener at the `String`) for its read index within the
/// `Duration`: the leader's answer, or `Err` if the call itself failed (nothing known).
pub type LeaderCall = Arc<
    dyn Fn(
            NodeId,
            String,
            Duration,
        ) -> Pin<Box<dyn Future<Output = Result<Result<u64, ReadError>, String>> + Send>>
        + Send
        + Sync,
>;

/// Why a linearizable read could not be confirmed. Nothing was read, so retrying is safe.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadError {
    #[error("not the leader")]
    NotLeader { leader: Option<NodeId> },
    #[error("too many queued reads")]
    Overloaded,
    #[error("could not confirm leadership: {0}")]
    Unavailable(String),
}

type Waiter = oneshot::Sender<Result<(), ReadError>>;

/// Handle to the read-index task. Cheap to clone.
#[derive(Clone)]
pub struct ReadIndex {
    queue: mpsc::Sender<Waiter>,
}

impl ReadIndex {
    /// Starts the batching task; on a follower a round asks the leader through
    /// `leader` (see the module doc).
    pub fn spawn(raft: Raft, limits: &Limits, leader: LeaderCall) -> Self {
        let (queue, receiver) = mpsc::channel(limits.max_queued_reads);
        tokio::spawn(run(
            raft,
            receiver,
            Duration::from_millis(limits.read_timeout_ms),
            leader,
        ));
        Self { queue }
    }

    /// Returns once this node's state machine may serve a linearizable read.
    pub async fn wait(&self) -> Result<(), ReadError> {
        let (waiter, done) = oneshot::channel();
        self.queue.try_send(waiter).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ReadError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => {
                ReadError::Unavailable("read-index task stopped".into())
            }
        })?;
        done.await
            .unwrap_or_else(|_| Err(ReadError::Unavailable("read-index task stopped".into())))
    }
}

async fn run(
    raft: Raft,
    mut receiver: mpsc::Receiver<Waiter>,
    timeout: Duration,
    leader: LeaderCall,
) {
    while let Some(first) = receiver.recv().await {
        let mut waiters = vec![first];
        while let Ok(next) = receiver.try_recv() {
            waiters.push(next);
        }
        let result = match confirm(&raft, timeout).await {
            Err(ReadError::NotLeader { leader: hint }) => {
                read_through_leader(&raft, &leader, hint, timeout).await
            }
            other => other.map(|_| ()),
        };
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
    }
}

/// One confirmation for a batch of waiters. A round that misses a quorum (a follower
/// slower than one heartbeat interval, which is openraft's timeout for the round) is
/// repeated while `timeout` lasts: nothing was read yet, so repeating is safe, and
/// on a loaded host it turns spurious 503s into a slightly slower read.
async fn confirm(raft: &Raft, timeout: Duration) -> Result<u64, ReadError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let result = match tokio::time::timeout_at(deadline, raft.ensure_linearizable()).await {
            Ok(Ok(read_log_id)) => Ok(read_log_id.map_or(0, |log_id| log_id.index)),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward)))) => {
                Err(ReadError::NotLeader {
                    leader: forward.leader_id,
                })
            }
            Ok(Err(RaftError::APIError(error @ CheckIsLeaderError::QuorumNotEnough(_)))) => {
                if tokio::time::Instant::now() + RETRY_PAUSE < deadline {
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
                Err(ReadError::Unavailable(error.to_string()))
            }
            Ok(Err(RaftError::Fatal(fatal))) => Err(ReadError::Unavailable(fatal.to_string())),
            Err(_) => Err(ReadError::Unavailable("read-index round timed out".into())),
        };
        return result;
    }
}

/// Pause between confirmation rounds that missed a quorum.
const RETRY_PAUSE: Duration = Duration::from_millis(5);

/// The leader's half of a follower's read (`POST /raft/read_index`): confirms
/// leadership with a quorum, as a read here would, and answers the log index a read
/// that arrived before must see (this node has applied it).
pub async fn leader_read_index(raft: &Raft, timeout: Duration) -> Result<u64, ReadError> {
    confirm(raft, timeout).await
}

/// A follower's round: the leader's read index, then this node's apply up to it.
/// A leader that cannot be asked (unknown, unreachable, or no longer leading) is
/// `NotLeader`, so the HTTP layer forwards the read instead; a read index this node
/// does not apply within `timeout` is `Unavailable`.
async fn read_through_leader(
    raft: &Raft,
    call: &LeaderCall,
    hint: Option<NodeId>,
    timeout: Duration,
) -> Result<(), ReadError> {
    let not_leader = ReadError::NotLeader { leader: hint };
    let Some(leader) = hint else {
        return Err(not_leader);
    };
    let raft_addr = {
        let metrics = raft.metrics();
        let membership = metrics.borrow().membership_config.clone();
        let member = membership.membership().get_node(&leader).cloned();
        match member {
            Some(member) => member.raft_addr,
            None => return Err(not_leader),
        }
    };
    let started = tokio::time::Instant::now();
    let index = match call(leader, raft_addr, timeout).await {
        Ok(Ok(index)) => index,
        Ok(Err(error)) => return Err(error),
        Err(transport) => {
            tracing::debug!(leader, error = %transport, "read index: leader not reached");
            return Err(not_leader);
        }
    };
    let left = timeout.saturating_sub(started.elapsed());
    raft.wait(Some(left))
        .applied_index_at_least(Some(index), "follower read")
        .await
        .map(|_| ())
        .map_err(|e| ReadError::Unavailable(format!("not applied up to the read index: {e}")))
}
