//! The log's durable point: the highest log id this node knows is on its disk, and
//! the background flush that advances it for a leader's own appends.
//!
//! Why (#16, the 1-client put): openraft 0.9 runs a leader's log append on its one
//! RaftCore task and sends nothing to the followers until the append's `LogFlushed`
//! callback fires (`../shared/OPENRAFT.md` §6), so a leader that flushes before the
//! callback puts its own fsync in series with the followers' round. A leader's
//! *own* appends are therefore acknowledged to openraft at once
//! (`log_store::LogStore::append`) and flushed here in the background, and three
//! rules keep "nothing is applied or acknowledged before it is on disk on a quorum":
//!
//! 1. **apply waits for the durable point** (`state_machine::StateMachineStore::apply`):
//!    a leader applies an entry (and so answers its client) only once its own flush
//!    covers it. openraft's quorum for that entry counted the leader plus followers
//!    that acknowledge only after their own flush (a follower's append still flushes
//!    before its callback), so at apply time all of that quorum has it on disk.
//! 2. **the commit index a leader sends never passes its durable point**
//!    (`transport::client`, [`Durable::commit_to_send`]): followers apply only what
//!    is on the leader's disk too.
//! 3. **`save_committed` stores at most the durable point** (`log_store`): a restart
//!    never finds a committed id beyond its log.
//!
//! The point starts at the last entry found on disk at start-up, moves with each
//! flush of the log, and to a snapshot's last entry when one is installed.
//!
//! Ordering: [`LogId`]s compare by (term, leader, index), the order of entries in any
//! one Raft log. A value left from a truncated suffix (term T) never covers an entry
//! appended after the truncation: those carry a later term. sled flushes the whole
//! `Db` up to the call, so a flush that covers entry `e` covers every earlier write.
//!
//! Depends on sled and tokio only; knows nothing of Raft's roles (the log store
//! decides which appends come here).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::raft_types::LogId;

/// The durable point, shared by the log store (which advances it), the state
/// machine (which waits on it before applying) and the network (which bounds the
/// commit index it sends by it).
#[derive(Debug)]
pub struct Durable {
    point: watch::Sender<Option<LogId>>,
}

impl Durable {
    /// A durable point starting at `on_disk` (the last log id found at start-up:
    /// everything read back from the directory is on disk).
    pub fn new(on_disk: Option<LogId>) -> Arc<Self> {
        Arc::new(Self {
            point: watch::Sender::new(on_disk),
        })
    }

    /// The highest log id known to be on disk.
    pub fn get(&self) -> Option<LogId> {
        *self.point.borrow()
    }

    /// Everything up to `flushed` is on disk (never moves back).
    pub fn advance(&self, flushed: LogId) {
        self.point.send_if_modified(|point| {
            let newer = *point < Some(flushed);
            if newer {
                *point = Some(flushed);
            }
            newer
        });
    }

    /// Resolves once `log_id` is on disk.
    pub async fn wait_for(&self, log_id: LogId) {
        let mut point = self.point.subscribe();
        // The sender lives as long as `self`, so the wait cannot fail.
        let _ = point.wait_for(|point| *point >= Some(log_id)).await;
    }

    /// The commit index a leader may send (rule 2): `leader_commit` once the point
    /// covers it, waiting at most `limit` for that; after it, the point itself.
    pub async fn commit_to_send(
        &self,
        leader_commit: Option<LogId>,
        limit: Duration,
    ) -> Option<LogId> {
        let commit = leader_commit?;
        if self.get() < Some(commit) {
            // The wait's result is read back below.
            let _ = tokio::time::timeout(limit, self.wait_for(commit)).await;
        }
        clamp_commit(Some(commit), self.get())
    }
}

/// A commit index bounded by the durable point: `leader_commit`, but never past
/// `durable` (rules 2 and 3 above).
pub fn clamp_commit(leader_commit: Option<LogId>, durable: Option<LogId>) -> Option<LogId> {
    leader_commit.min(durable)
}

/// One background flush at a time for a leader's own appends; requests that arrive
/// while one runs are covered by the next (a group commit of the leader's appends).
pub struct Flusher {
    db: sled::Db,
    durable: Arc<Durable>,
    wanted: Mutex<Wanted>,
}

#[derive(Default)]
struct Wanted {
    running: bool,
    upto: Option<LogId>,
}

impl Flusher {
    pub fn new(db: sled::Db, durable: Arc<Durable>) -> Arc<Self> {
        Arc::new(Self {
            db,
            durable,
            wanted: Mutex::new(Wanted::default()),
        })
    }

    /// Flushes everything written so far, in the background, then advances the
    /// durable point to `upto` (the last entry written before this call).
    pub fn request(self: &Arc<Self>, upto: LogId) {
        let mut wanted = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
        wanted.upto = wanted.upto.max(Some(upto));
        if !wanted.running {
            wanted.running = true;
            tokio::spawn(self.clone().run());
        }
    }

    async fn run(self: Arc<Self>) {
        loop {
            let upto = {
                let mut wanted = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
                match wanted.upto.take() {
                    Some(upto) => upto,
                    None => {
                        wanted.running = false;
                        return;
                    }
                }
            };
            // FSYNC: the leader's own appends, off the Raft task; nothing they carry
            // is applied (so answered) until this returns (rule 1).
            match self.db.flush_async().await {
                Ok(_) => self.durable.advance(upto),
                Err(error) => {
                    // openraft was told these entries are written: a leader that
                    // cannot put them on disk must stop rather than serve on.
                    tracing::error!(%error, "flushing the Raft log failed; stopping the node");
                    std::process::exit(74);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn log_id(term: u64, node: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, node), index)
    }

    #[test]
    fn the_point_only_moves_forward_in_log_order() {
        let durable = Durable::new(None);
        durable.advance(log_id(2, 1, 10));
        durable.advance(log_id(2, 1, 7));
        assert_eq!(durable.get(), Some(log_id(2, 1, 10)));
        // A later term orders after any index of an earlier one.
        durable.advance(log_id(3, 2, 8));
        assert_eq!(durable.get(), Some(log_id(3, 2, 8)));
    }

    #[test]
    fn a_sent_commit_never_passes_the_durable_point() {
        let a = log_id(2, 1, 5);
        let b = log_id(2, 1, 9);
        assert_eq!(clamp_commit(Some(b), Some(a)), Some(a));
        assert_eq!(clamp_commit(Some(a), Some(b)), Some(a));
        assert_eq!(clamp_commit(Some(a), None), None);
        assert_eq!(clamp_commit(None, Some(a)), None);
    }

    #[tokio::test]
    async fn a_commit_is_sent_once_on_disk_or_else_bounded_by_the_point() {
        let durable = Durable::new(Some(log_id(1, 1, 3)));
        let limit = Duration::from_millis(20);
        assert_eq!(
            durable.commit_to_send(Some(log_id(1, 1, 2)), limit).await,
            Some(log_id(1, 1, 2))
        );
        assert_eq!(durable.commit_to_send(None, limit).await, None);
        // Not on disk within the limit: the point is sent instead.
        assert_eq!(
            durable.commit_to_send(Some(log_id(1, 1, 4)), limit).await,
            Some(log_id(1, 1, 3))
        );
        // On disk during the wait: sent whole.
        let sent = {
            let durable = durable.clone();
            tokio::spawn(async move {
                durable
                    .commit_to_send(Some(log_id(1, 1, 5)), Duration::from_secs(60))
                    .await
            })
        };
        durable.advance(log_id(1, 1, 6));
        assert_eq!(sent.await.unwrap(), Some(log_id(1, 1, 5)));
    }

    #[tokio::test]
    async fn a_wait_ends_when_the_point_covers_it() {
        let durable = Durable::new(Some(log_id(1, 1, 3)));
        let waiter = {
            let durable = durable.clone();
            tokio::spawn(async move { durable.wait_for(log_id(1, 1, 4)).await })
        };
        durable.advance(log_id(1, 1, 5));
        waiter.await.unwrap();
    }

    #[tokio::test]
    async fn the_flusher_advances_the_point_once_sled_has_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let durable = Durable::new(None);
        let flusher = Flusher::new(db.clone(), durable.clone());
        db.insert(b"k", b"v").unwrap();
        flusher.request(log_id(1, 1, 1));
        flusher.request(log_id(1, 1, 2));
        let flushed = durable.wait_for(log_id(1, 1, 2));
        tokio::time::timeout(Duration::from_secs(30), flushed)
            .await
            .expect("the flusher advanced the point");
        assert_eq!(durable.get(), Some(log_id(1, 1, 2)));
    }
}
