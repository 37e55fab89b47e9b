//! Read-index batching: one leadership-confirming round serves every linearizable
//! read that arrived before the round started.
//!
//! A linearizable read calls [`ReadIndex::wait`], which queues it for the next round
//! and returns once `ensure_linearizable` (a heartbeat round to a quorum, then a wait
//! until this node has applied up to the commit index it saw) has completed for a
//! round that *started after the read arrived*. The caller then reads its local state
//! machine. One round is in flight at a time; reads arriving during it form the next.

use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::{mpsc, oneshot};

use crate::limits::Limits;
use crate::raft_types::{NodeId, Raft};

/// Why a linearizable read could not be confirmed. Nothing was read, so retrying is safe.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
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
    pub fn spawn(raft: Raft, limits: &Limits) -> Self {
        let (queue, receiver) = mpsc::channel(limits.max_queued_reads);
        tokio::spawn(run(
            raft,
            receiver,
            Duration::from_millis(limits.read_timeout_ms),
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

async fn run(raft: Raft, mut receiver: mpsc::Receiver<Waiter>, timeout: Duration) {
    while let Some(first) = receiver.recv().await {
        let mut waiters = vec![first];
        while let Ok(next) = receiver.try_recv() {
            waiters.push(next);
        }
        let result = confirm(&raft, timeout).await;
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
    }
}

/// One confirmation for a batch of waiters. A round that misses a quorum (a follower
/// slower than one heartbeat interval, which is openraft's timeout for the round) is
/// repeated while `timeout` lasts: nothing was read yet, so repeating is safe, and
/// on a loaded host it turns spurious 503s into a slightly slower read.
async fn confirm(raft: &Raft, timeout: Duration) -> Result<(), ReadError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let result = match tokio::time::timeout_at(deadline, raft.ensure_linearizable()).await {
            Ok(Ok(_)) => Ok(()),
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
