//! The replica: the one front the HTTP handlers use to reach the replicated state.
//!
//! It owns the Raft handle, the applied state, the write batcher (`proposer`), the
//! read-index batcher (`read_index`), the leader's ticker and keepalive batching
//! (`ticker`) and the bounded leader clock (`clock`), and offers: propose a
//! command, wait until a read at a consistency level may be served, read the
//! applied state, wait until the applied state satisfies a condition, accept a
//! keepalive, the leader and membership facts a handler needs, and membership
//! changes (`membership`). Handlers see neither the store nor the lock around the
//! state nor openraft.
//!
//! Must not depend on the HTTP layer (`server`, `transport`).

pub mod clock;
pub mod cluster_view;
pub mod membership;
pub mod proposer;
pub mod read_index;
pub mod ticker;

use std::time::Duration;

use serde::Deserialize;

use crate::raft_types::{NodeId, Raft};
use crate::sm::{Applied, State, Submission};
use crate::store::StateMachineStore;
use clock::LeaderClock;
use proposer::{ProposeError, Proposer};
use read_index::{ReadError, ReadIndex};
use ticker::Keepalives;

/// How fresh a read must be (`?consistency=` on reads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Served only after a read-index round confirms this node leads and has
    /// applied everything committed before the read arrived.
    #[default]
    Linearizable,
    /// Served from this node's applied state at once.
    Stale,
}

/// Read access to the applied state; hold it briefly (apply waits for it).
pub struct StateRef<'a>(std::sync::RwLockReadGuard<'a, crate::store::state_machine::AppliedState>);

impl StateRef<'_> {
    /// The Raft log index of the last entry this state includes.
    pub fn last_applied_index(&self) -> Option<u64> {
        self.0.last_applied.map(|log_id| log_id.index)
    }

    /// A backup of this state (`store::backup`), encoded under the read lock.
    pub fn backup(&self) -> Result<Vec<u8>, crate::codec::CodecError> {
        crate::store::backup::encode(self.0.last_applied, &self.0.state)
    }
}

impl std::ops::Deref for StateRef<'_> {
    type Target = State;

    fn deref(&self) -> &State {
        &self.0.state
    }
}

/// What the replica shares with the peer network (`node::run` hands both halves
/// their clones): what each peer acknowledged (`PeerAcks`), and whether the leader
/// said this node was removed.
pub struct PeerNotes {
    pub acks: crate::raft_types::PeerAcks,
    pub removed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// How a follower asks the leader for its read index (`read_index`).
    pub read_index: read_index::LeaderCall,
}

/// See the module doc. Built once by `node::run`.
pub struct Replica {
    node_id: NodeId,
    raft: Raft,
    state_machine: StateMachineStore,
    proposer: Proposer,
    reads: ReadIndex,
    keepalives: Keepalives,
    /// The node-local cluster view `cluster` events carry (`cluster_view`).
    cluster: tokio::sync::watch::Receiver<std::sync::Arc<cluster_view::ClusterView>>,
    /// Set when the leader said this node was removed (see `cluster_view`).
    removed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// What peers acknowledged (forgotten when a node leaves; see `PeerAcks`).
    acks: crate::raft_types::PeerAcks,
    /// Test-only planted bug: linearizable reads served locally (see `config`).
    stale_reads_bug: bool,
}

impl Replica {
    /// Starts the proposer, the read-index batcher and the ticker for `raft`.
    // The composition root's one call; each argument is a different part.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        node_id: NodeId,
        raft: Raft,
        state_machine: StateMachineStore,
        limits: &crate::limits::Limits,
        clock: std::sync::Arc<LeaderClock>,
        stale_reads_bug: bool,
        peers: PeerNotes,
        proposer_metrics: crate::metrics::ProposerMetrics,
    ) -> Self {
        let PeerNotes {
            acks,
            removed,
            read_index,
        } = peers;
        let proposer = Proposer::spawn(
            raft.clone(),
            state_machine.clone(),
            limits,
            clock,
            proposer_metrics,
        );
        let keepalives = Keepalives::default();
        ticker::Ticker {
            node_id,
            raft: raft.clone(),
            proposer: proposer.clone(),
            state_machine: state_machine.clone(),
            keepalives: keepalives.clone(),
            flush_interval: Duration::from_millis(limits.keepalive_flush_ms),
        }
        .spawn();
        Self {
            node_id,
            cluster: cluster_view::spawn(node_id, raft.clone(), removed.clone()),
            removed,
            reads: ReadIndex::spawn(raft.clone(), limits, read_index),
            raft,
            state_machine,
            proposer,
            keepalives,
            stale_reads_bug,
            acks,
        }
    }

    /// Proposes one command through the batching proposer and waits for its result.
    pub async fn propose(&self, submission: Submission) -> Result<Applied, ProposeError> {
        self.proposer.propose(submission).await
    }

    /// Waits until this node may serve a read at `consistency`.
    pub async fn read_barrier(&self, consistency: Consistency) -> Result<(), ReadError> {
        match consistency {
            Consistency::Stale => Ok(()),
            Consistency::Linearizable
                if crate::config::TEST_SWITCHES_BUILT && self.stale_reads_bug =>
            {
                Ok(())
            }
            Consistency::Linearizable => self.reads.wait().await,
        }
    }

    /// Whether the planted stale-reads bug is on (test-only; see `config`).
    pub fn stale_reads_bug(&self) -> bool {
        crate::config::TEST_SWITCHES_BUILT && self.stale_reads_bug
    }

    /// The applied state, for reading.
    pub fn state(&self) -> StateRef<'_> {
        StateRef(self.state_machine.read())
    }

    /// Waits until `check` finds what it looks for in the applied state (re-checked
    /// after every apply), or `deadline` passes.
    pub async fn wait_for_state<T>(
        &self,
        deadline: tokio::time::Instant,
        mut check: impl FnMut(&State) -> Option<T>,
    ) -> Option<T> {
        let mut applied = self.state_machine.subscribe_applied();
        loop {
            if let Some(found) = check(&self.state()) {
                return Some(found);
            }
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    /// The leader's notion of now (bounded; see `clock`), for stamping keepalives.
    pub fn leader_now_ms(&self) -> u64 {
        self.proposer.leader_now_ms()
    }

    /// The leader clock (its test-only offset lives there).
    pub fn clock(&self) -> &LeaderClock {
        self.proposer.clock()
    }

    /// Records a keepalive this leader accepted at `at_ms`; the ticker replicates
    /// it, and the returned renewal resolves once that is durable (see `ticker`).
    pub fn accept_keepalive(
        &self,
        session_id: crate::sm::sessions::SessionId,
        at_ms: u64,
    ) -> ticker::Renewal {
        self.keepalives.record(session_id, at_ms)
    }

    /// This node's snapshot and log up to its applied index (`store::backup::export`).
    pub fn export_log(&self) -> Result<Vec<u8>, String> {
        self.state_machine.export_log()
    }

    /// Whether the leader said this node was removed (and it was not added again).
    pub fn is_removed(&self) -> bool {
        self.removed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The watch hub: this node's history of applied events (`crate::watch`).
    pub fn hub(&self) -> &crate::watch::Hub {
        self.state_machine.hub()
    }

    /// A receiver of this node's cluster view, updated when the role, leader,
    /// term or membership changes.
    pub fn cluster_view(
        &self,
    ) -> tokio::sync::watch::Receiver<std::sync::Arc<cluster_view::ClusterView>> {
        self.cluster.clone()
    }

    /// Commands queued for the proposer's next batch (`/metrics`).
    pub fn proposer_queued(&self) -> usize {
        self.proposer.queued()
    }

    /// The leader this node currently believes in.
    pub fn current_leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Whether this node is the leader (in the leader state and naming itself).
    pub fn is_leader(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics.state == openraft::ServerState::Leader
            && metrics.current_leader == Some(self.node_id)
    }

    /// Waits at most `wait` for an election to produce a leader.
    #[allow(clippy::let_and_return)]
    pub async fn wait_for_leader(&self, wait: Duration) -> Option<NodeId> {
        let mut metrics = self.raft.metrics();
        let found =
            tokio::time::timeout(wait, metrics.wait_for(|m| m.current_leader.is_some())).await;
        // The guard borrows `metrics`; copy the id out before it is dropped.
        let leader = found.ok()?.ok()?.current_leader;
        leader
    }

    /// `node`'s address in the replicated membership (what clients should use).
    pub fn member_addr(&self, node: NodeId) -> Option<String> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics
            .membership_config
            .membership()
            .get_node(&node)
            .map(|member| member.addr.clone())
    }
}
