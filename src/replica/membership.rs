//! What the cluster operations endpoints need from Raft, without openraft's types:
//! this node's Raft facts (role, term, indexes, members and how far each matches
//! the leader's log), membership changes (add a learner and promote it once it
//! follows the log, remove a voter or learner), and an on-demand snapshot.
//!
//! Must not depend on the HTTP layer: refusals are [`MembershipError`]s, which the
//! server names with its error codes.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};

use super::Replica;
use crate::limits::{
    MEMBERSHIP_CHANGE_TIMEOUT, SNAPSHOT_WAIT, TRANSFER_LEASE_MARGIN, TRANSFER_TIMEOUT,
};
use crate::raft_types::{Member, NodeId};

/// A member of the Raft membership as this node sees it.
#[derive(Debug, Clone)]
pub struct MemberFacts {
    pub id: NodeId,
    pub addr: String,
    pub raft_addr: String,
    pub voter: bool,
    /// The last Raft log index known replicated to it (the leader's view; this
    /// node's own last log index for itself).
    pub matched_index: Option<u64>,
}

/// This node's Raft facts, read at one moment.
#[derive(Debug, Clone)]
pub struct RaftFacts {
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: &'static str,
    pub leader_id: Option<NodeId>,
    pub term: u64,
    pub commit_index: Option<u64>,
    pub last_log_index: Option<u64>,
    pub last_applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub members: Vec<MemberFacts>,
    /// A leader that a quorum answered within the election timeout, or a
    /// follower, or the only voter: not a leader cut off from its quorum.
    pub quorum_fresh: bool,
}

impl RaftFacts {
    /// Whether node `id` is in the membership (voter or learner).
    pub fn is_member(&self, id: NodeId) -> bool {
        self.members.iter().any(|m| m.id == id)
    }
}

/// Why a membership change was refused or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("not the leader")]
    NotLeader { leader: Option<NodeId> },
    #[error("{0}")]
    InProgress(String),
    #[error("{0}")]
    EmptyMembership(String),
    #[error("{0}")]
    LearnerNotFound(String),
    #[error("node {id} is not a member")]
    NotMember { id: NodeId },
    /// The id is a member with other addresses.
    #[error("{0}")]
    Conflict(String),
    /// `matched` is the last index known replicated to it when the wait ran out,
    /// `target` the index it had to reach (the entry that added it).
    #[error("node {id} was added as a learner but did not replicate the log within {waited:?} (matched {}, needs {target})", matched.map_or_else(|| "nothing".to_string(), |m| m.to_string()))]
    NotCaughtUp {
        id: NodeId,
        waited: Duration,
        matched: Option<u64>,
        target: u64,
    },
    /// Proposed, but whether it took effect is unknown (a timeout, a fatal error).
    #[error("{0}")]
    Indeterminate(String),
}

type WriteResult = Result<
    openraft::raft::ClientWriteResponse<crate::raft_types::TypeConfig>,
    RaftError<NodeId, ClientWriteError<NodeId, Member>>,
>;

/// The Raft log index of the change's entry, or why it failed.
fn written(
    result: Result<WriteResult, tokio::time::error::Elapsed>,
) -> Result<u64, MembershipError> {
    match result {
        Ok(Ok(response)) => Ok(response.log_id.index),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
            Err(MembershipError::NotLeader {
                leader: forward.leader_id,
            })
        }
        Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(error)))) => {
            let message = error.to_string();
            Err(match error {
                ChangeMembershipError::InProgress(_) => MembershipError::InProgress(message),
                ChangeMembershipError::EmptyMembership(_) => {
                    MembershipError::EmptyMembership(message)
                }
                ChangeMembershipError::LearnerNotFound(_) => {
                    MembershipError::LearnerNotFound(message)
                }
            })
        }
        Ok(Err(RaftError::Fatal(fatal))) => Err(MembershipError::Indeterminate(fatal.to_string())),
        Err(_) => Err(MembershipError::Indeterminate(
            "membership change did not finish in time".into(),
        )),
    }
}

pub(super) fn role_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

impl Replica {
    /// This node's Raft facts now.
    pub async fn raft_facts(&self) -> RaftFacts {
        let commit_index = self
            .raft
            .with_raft_state(|state| state.committed.map(|log_id| log_id.index))
            .await
            .ok()
            .flatten();
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let replication = metrics.replication.as_ref();
        let members = membership
            .nodes()
            .map(|(id, member)| MemberFacts {
                id: *id,
                addr: member.addr.clone(),
                raft_addr: member.raft_addr.clone(),
                voter: voters.contains(id),
                matched_index: replication
                    .and_then(|r| r.get(id).cloned().flatten())
                    .map(|log_id| log_id.index)
                    .or(if *id == self.node_id {
                        metrics.last_log_index
                    } else {
                        None
                    }),
            })
            .collect();
        let lone_voter = voters.len() == 1 && voters.contains(&self.node_id);
        let quorum_fresh = metrics.state != ServerState::Leader
            || lone_voter
            || metrics
                .millis_since_quorum_ack
                .is_some_and(|ms| ms <= self.raft.config().election_timeout_max);
        RaftFacts {
            role: role_name(metrics.state),
            leader_id: metrics.current_leader,
            term: metrics.current_term,
            commit_index,
            last_log_index: metrics.last_log_index,
            last_applied_index: metrics.last_applied.map(|log_id| log_id.index),
            snapshot_index: metrics.snapshot.map(|log_id| log_id.index),
            purged_index: metrics.purged.map(|log_id| log_id.index),
            members,
            quorum_fresh,
        }
    }

    /// Adds node `id` (client API at `member.addr`, peer listener at
    /// `member.raft_addr`) as a learner; with `voter`, promotes it once it has
    /// replicated the log up to the entry that added it (within `catch_up`), so
    /// only a node that really follows the log is ever promoted.
    ///
    /// Repeating the call converges: a voter at the same addresses is left as it is
    /// (a learner asked for is not demoted), a learner is caught up and promoted. A
    /// `fresh` node (empty storage: it was wiped, or is new under a reused id) that
    /// is still listed as a voter is first removed, then added as a learner, caught
    /// up and promoted: it is never a voter in place, where it could vote twice in
    /// a term it had forgotten.
    pub async fn add_member(
        &self,
        id: NodeId,
        member: Member,
        voter: bool,
        fresh: bool,
        catch_up: Duration,
    ) -> Result<(), MembershipError> {
        let (is_voter, existing) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            let membership = metrics.membership_config.membership();
            let is_voter = membership.voter_ids().any(|voter| voter == id);
            (is_voter, membership.get_node(&id).cloned())
        };
        if is_voter && fresh {
            tracing::warn!(
                node = id,
                "a fresh node rejoins under a voter's id: removing the old voter first"
            );
            self.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])))
                .await?;
            self.acks.forget(id);
        } else if is_voter && existing.as_ref() == Some(&member) {
            return Ok(());
        } else if is_voter {
            return Err(MembershipError::Conflict(format!(
                "node {id} is a voter at {:?}; remove it first to move it",
                existing.map(|m| (m.addr, m.raft_addr))
            )));
        }
        // Not openraft's blocking add: its catch-up check compares the lag with
        // `replication_lag_threshold`, which an unreachable node passes on a short log.
        let add = self.raft.add_learner(id, member, false);
        let added_at = written(tokio::time::timeout(MEMBERSHIP_CHANGE_TIMEOUT, add).await)?;
        if !voter {
            return Ok(());
        }
        let caught_up = self
            .raft
            .wait(Some(catch_up))
            .metrics(
                |metrics| {
                    let replication = metrics.replication.as_ref();
                    let matched = replication.and_then(|r| r.get(&id).cloned().flatten());
                    matched.is_some_and(|log_id| log_id.index >= added_at)
                },
                "learner caught up",
            )
            .await;
        if caught_up.is_err() {
            let matched = self
                .raft
                .metrics()
                .borrow()
                .replication
                .as_ref()
                .and_then(|r| {
                    let matched = r.get(&id).cloned().flatten();
                    matched.map(|log_id| log_id.index)
                });
            return Err(MembershipError::NotCaughtUp {
                id,
                waited: catch_up,
                matched,
                target: added_at,
            });
        }
        self.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])))
            .await
    }

    /// Removes node `id`, a voter or a learner.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), MembershipError> {
        let (is_voter, is_member) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            let membership = metrics.membership_config.membership();
            let is_voter = membership.voter_ids().any(|voter| voter == id);
            (is_voter, membership.get_node(&id).is_some())
        };
        if !is_member {
            return Err(MembershipError::NotMember { id });
        }
        let ids = BTreeSet::from([id]);
        let change = match is_voter {
            true => ChangeMembers::RemoveVoters(ids),
            false => ChangeMembers::RemoveNodes(ids),
        };
        self.change_membership(change).await?;
        self.acks.forget(id);
        Ok(())
    }

    /// Proposes a membership change and waits (within the timeout) until it is
    /// committed.
    async fn change_membership(
        &self,
        change: ChangeMembers<NodeId, Member>,
    ) -> Result<(), MembershipError> {
        let change = self.raft.change_membership(change, false);
        written(tokio::time::timeout(MEMBERSHIP_CHANGE_TIMEOUT, change).await).map(|_| ())
    }

    /// Hands leadership to voter `to` (or the most caught-up other voter) and
    /// returns it: openraft 0.9.25 has no transfer call, so this leader stops
    /// proposing (writes queue) and sending heartbeats, waits until the target has
    /// the whole log and until the followers' leader lease (the election timeout's
    /// max, during which they refuse votes) has run out, then `campaign(target)`
    /// makes the target call an election, which it wins with the longest log. Then
    /// proposing resumes here: what queued meanwhile is answered `503 no_leader`
    /// (not applied; retry at the new leader). Bounded by [`TRANSFER_TIMEOUT`]; on
    /// failure this node stays (or becomes again) a leader sending heartbeats.
    pub async fn transfer_leadership<F, Fut>(
        &self,
        to: Option<NodeId>,
        campaign: F,
    ) -> Result<NodeId, MembershipError>
    where
        F: FnOnce(NodeId, String, u64) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let (target, raft_addr, term) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            if metrics.current_leader != Some(self.node_id) {
                return Err(MembershipError::NotLeader {
                    leader: metrics.current_leader,
                });
            }
            let membership = metrics.membership_config.membership();
            let matched = |id: &NodeId| {
                metrics
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id).cloned().flatten())
                    .map(|log_id| log_id.index)
            };
            let target = match to {
                Some(id) if id == self.node_id => {
                    return Err(MembershipError::Conflict(format!(
                        "node {id} already leads"
                    )))
                }
                Some(id) if membership.voter_ids().any(|v| v == id) => id,
                Some(id) => return Err(MembershipError::NotMember { id }),
                None => membership
                    .voter_ids()
                    .filter(|id| *id != self.node_id)
                    .max_by_key(|id| (matched(id), std::cmp::Reverse(*id)))
                    .ok_or_else(|| {
                        MembershipError::Conflict("no other voter to hand leadership to".into())
                    })?,
            };
            let node = membership.get_node(&target);
            let raft_addr = node.map(|m| m.raft_addr.clone()).unwrap_or_default();
            (target, raft_addr, metrics.current_term)
        };
        let deadline = tokio::time::Instant::now() + TRANSFER_TIMEOUT;
        let paused = tokio::time::timeout_at(deadline, self.proposer.pause()).await;
        self.raft.runtime_config().heartbeat(false);
        let result = async {
            let _paused = paused.map_err(|_| "in-flight writes did not finish".to_string())?;
            let last = self.raft.metrics().borrow().last_log_index;
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            self.raft
                .wait(Some(remaining))
                .metrics(
                    |m| {
                        let replication = m.replication.as_ref();
                        let matched = replication.and_then(|r| r.get(&target).cloned().flatten());
                        matched.map(|log_id| log_id.index) >= last
                    },
                    "transfer target caught up",
                )
                .await
                .map_err(|e| format!("node {target} did not catch up: {e}"))?;
            // Followers refuse votes for a lease after the last append they got.
            let lease = Duration::from_millis(self.raft.config().election_timeout_max);
            tokio::time::sleep(lease + TRANSFER_LEASE_MARGIN).await;
            campaign(target, raft_addr, term).await?;
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            self.raft
                .wait(Some(remaining))
                .metrics(|m| m.current_leader == Some(target), "new leader")
                .await
                .map_err(|e| format!("node {target} did not take over: {e}"))?;
            Ok::<_, String>(())
        }
        .await;
        self.raft.runtime_config().heartbeat(true);
        match result {
            Ok(()) => {
                tracing::info!(to = target, "handed leadership over");
                Ok(target)
            }
            Err(message) => {
                tracing::warn!(to = target, "leadership transfer failed: {message}");
                Err(MembershipError::Indeterminate(format!(
                    "leadership transfer to node {target} did not complete: {message}"
                )))
            }
        }
    }

    /// Builds a snapshot on this node now and waits until it covers what was
    /// applied; returns the snapshot's Raft log index.
    pub async fn snapshot_now(&self) -> Result<Option<u64>, String> {
        let applied = self.raft.metrics().borrow().last_applied;
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| e.to_string())?;
        let waited = self
            .raft
            .wait(Some(SNAPSHOT_WAIT))
            .metrics(|metrics| metrics.snapshot >= applied, "snapshot built")
            .await
            .map_err(|e| format!("snapshot not built: {e}"))?;
        Ok(waited.snapshot.map(|log_id| log_id.index))
    }
}
