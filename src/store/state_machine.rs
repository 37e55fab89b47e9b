//! The state machine as openraft sees it (`RaftStateMachine`): the in-memory
//! [`State`] behind a lock, plus snapshots persisted in sled.
//!
//! Apply and install take the write lock; snapshot builds and HTTP reads take the
//! read lock, so a snapshot is always the state at exactly its `last_log_id` (the
//! builder runs concurrently with apply in openraft 0.9). A build holds the lock
//! only to copy the state; encoding and writing it run on a blocking thread. `last_applied`, membership
//! and state change together under that lock. Install *replaces* the state. A
//! snapshot is durable (FSYNC) before openraft is told it exists, because openraft
//! purges the log up to it right after.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::OpenError;
use crate::codec;
use crate::raft_types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::sm::{BatchResponse, State};
use crate::watch::Hub;

const CURRENT_SNAPSHOT_KEY: &[u8] = b"current";

/// The stored snapshot's bytes (an encoded [`StoredSnapshot`]): data directory
/// `dir`'s snapshot file, or where a previous release kept it, `db`'s `snapshot` tree.
fn read_stored(db: &sled::Db, dir: &Path) -> Result<Option<Vec<u8>>, String> {
    if let Some(bytes) = super::snapshot_file::read(dir).map_err(|e| e.to_string())? {
        return Ok(Some(bytes));
    }
    let tree = db.open_tree("snapshot").map_err(|e| e.to_string())?;
    let bytes = tree.get(CURRENT_SNAPSHOT_KEY).map_err(|e| e.to_string())?;
    Ok(bytes.map(|bytes| bytes.to_vec()))
}

/// The current snapshot of the store in `db` and `dir` as (its log id, its encoded
/// state), if any (for `backup::export`).
pub(super) fn read_snapshot(
    db: &sled::Db,
    dir: &Path,
) -> Result<Option<super::backup::SnapshotData>, String> {
    let Some(bytes) = read_stored(db, dir)? else {
        return Ok(None);
    };
    let stored: StoredSnapshot = codec::decode(&bytes).map_err(|e| e.to_string())?;
    Ok(Some((stored.meta.last_log_id, stored.data)))
}

/// Writes `data` with `meta` as data directory `dir`'s current snapshot, durably, as
/// a build would (for `backup::restore`).
pub(super) fn write_snapshot(dir: &Path, meta: SnapshotMeta, data: Vec<u8>) -> Result<(), String> {
    let bytes = codec::encode(&StoredSnapshot { meta, data }).map_err(|e| e.to_string())?;
    super::snapshot_file::write(dir, &bytes).map_err(|e| e.to_string())
}

/// The applied state: what the log up to `last_applied` produced.
#[derive(Debug, Default)]
pub struct AppliedState {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub state: State,
}

/// A snapshot as persisted: openraft's meta plus the encoded [`State`].
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

struct Shared {
    applied: RwLock<AppliedState>,
    /// Where a previous release kept the snapshot (emptied once a file replaces it).
    snapshots: sled::Tree,
    db: sled::Db,
    /// The data directory: the snapshot file's (`snapshot_file`).
    dir: PathBuf,
    /// Serializes snapshot persistence so an older build never overwrites a newer
    /// install; holds the `last_log_id` of the stored snapshot.
    persisted: tokio::sync::Mutex<Option<LogId>>,
    /// The Raft log index applied so far; waiters (linearizable reads, blocking waits)
    /// subscribe to it.
    applied_index: watch::Sender<u64>,
    builds: AtomicU64,
    /// Where each entry's events go (`crate::watch`), pushed under the write lock
    /// so a watch and a read of the state see the same order.
    hub: Hub,
    /// The applied state's format, for the peer network (`raft_types::Formats`).
    formats: crate::raft_types::Formats,
    /// Shown every apply and snapshot build (the node's metrics), if any.
    observer: Option<Arc<dyn super::ApplyObserver>>,
    /// The log's durable point: nothing is applied before it covers it
    /// (`super::durable`, rule 1). `None`: no wait (a store without a log).
    durable: Option<Arc<super::durable::Durable>>,
}

/// The state-machine store. Cloning shares it (openraft gets one clone, the HTTP
/// layer another for reads).
#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<Shared>,
}

fn read_error(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_state_machine(&e).into()
}

/// Runs `work` on a thread of its own at the lowest scheduling priority (nice 19 on
/// Linux), off the runtime's workers: a snapshot's encode and write of a large state
/// take seconds of CPU, and on a shared or small host they must not take it from the
/// heartbeats (a follower that misses them campaigns, #16). `Err` if `work` panicked.
async fn in_background<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, std::io::Error> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("snapshot".into())
        .spawn(move || {
            lower_priority();
            let _ = done.send(work());
        })?;
    result
        .await
        .map_err(|_| std::io::Error::other("the snapshot thread panicked"))
}

/// Lowers the calling thread's priority to nice 19 (best effort: a failure only
/// leaves it at the default).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: `gettid` and `setpriority` take no pointers; on Linux a thread id as
    // `PRIO_PROCESS`'s `who` sets that thread's nice value only.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19);
    }
}

impl StateMachineStore {
    /// Opens the store, restoring the latest persisted snapshot if any, with a watch
    /// hub of default limits.
    pub fn open(db: &sled::Db, dir: &Path) -> Result<Self, OpenError> {
        Self::open_with(db, dir, Hub::default())
    }

    /// Opens the store feeding `hub`: its history starts after the restored
    /// snapshot and is rebuilt from the log tail openraft re-applies.
    pub fn open_with(db: &sled::Db, dir: &Path, hub: Hub) -> Result<Self, OpenError> {
        let sled_error = |source| OpenError::Sled {
            path: String::new(),
            source,
        };
        let snapshots = db.open_tree("snapshot").map_err(sled_error)?;
        let mut applied = AppliedState::default();
        let mut persisted = None;
        let stored = read_stored(db, dir).map_err(|message| OpenError::Sled {
            path: dir.display().to_string(),
            source: sled::Error::Io(std::io::Error::other(message)),
        })?;
        if let Some(bytes) = stored {
            let corrupt = |source| OpenError::Corrupt {
                path: String::from("snapshot"),
                source,
            };
            let stored: StoredSnapshot = codec::decode(&bytes).map_err(corrupt)?;
            applied = AppliedState {
                last_applied: stored.meta.last_log_id,
                membership: stored.meta.last_membership.clone(),
                state: codec::decode(&stored.data).map_err(corrupt)?,
            };
            persisted = stored.meta.last_log_id;
        }
        let applied_index = applied.last_applied.map_or(0, |log_id| log_id.index);
        hub.reset(applied.state.last_command_index);
        let formats = crate::raft_types::Formats::default();
        formats.set_active(applied.state.active_format());
        Ok(Self {
            shared: Arc::new(Shared {
                applied: RwLock::new(applied),
                snapshots,
                db: db.clone(),
                dir: dir.to_path_buf(),
                persisted: tokio::sync::Mutex::new(persisted),
                applied_index: watch::channel(applied_index).0,
                builds: AtomicU64::new(0),
                hub,
                formats,
                observer: None,
                durable: None,
            }),
        })
    }

    /// The store, showing `observer` every apply and snapshot build (before it is
    /// shared with anyone).
    pub fn observed_by(mut self, observer: Option<Arc<dyn super::ApplyObserver>>) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.observer = observer;
        }
        self
    }

    /// Applies an entry only once `durable` covers it (`super::durable`, rule 1).
    /// Call before the store is shared (it panics otherwise: a store that skipped
    /// the wait would apply a leader's entries before its flush).
    pub fn applying_when_durable(mut self, durable: Arc<super::durable::Durable>) -> Self {
        Arc::get_mut(&mut self.shared)
            .expect("applying_when_durable before the store is cloned")
            .durable = Some(durable);
        self
    }

    /// Read access to the applied state (hold it briefly; apply waits for it).
    pub fn read(&self) -> RwLockReadGuard<'_, AppliedState> {
        self.shared
            .applied
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `backup::export` of this node's storage up to its applied index.
    pub fn export_log(&self) -> Result<Vec<u8>, String> {
        let applied = self.read().last_applied.map_or(0, |log_id| log_id.index);
        super::backup::export(&self.shared.db, &self.shared.dir, applied)
    }

    /// The cluster's format as last applied here, and what peers speak.
    pub fn formats(&self) -> crate::raft_types::Formats {
        self.shared.formats.clone()
    }

    /// The watch hub this store feeds.
    pub fn hub(&self) -> &Hub {
        &self.shared.hub
    }

    /// A receiver of the applied Raft log index, updated after every apply.
    pub fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.shared.applied_index.subscribe()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, AppliedState> {
        self.shared
            .applied
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Persists `stored` as the current snapshot unless a newer one is already
    /// there; gives it back.
    async fn persist(&self, stored: StoredSnapshot) -> Result<StoredSnapshot, StorageError> {
        let mut persisted = self.shared.persisted.lock().await;
        if *persisted >= stored.meta.last_log_id && persisted.is_some() {
            return Ok(stored);
        }
        let signature = Some(stored.meta.signature());
        let write_error =
            |e: openraft::AnyError| StorageIOError::write_snapshot(signature.clone(), e);
        // Encoding and writing copy the whole snapshot: in the background, into a
        // file of its own (`snapshot_file`: why not sled).
        let dir = self.shared.dir.clone();
        let (stored, written) = in_background(move || {
            let written = codec::encode(&stored)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    // FSYNC (in `snapshot_file::write`): the snapshot is durable
                    // before openraft may purge the log behind it.
                    super::snapshot_file::write(&dir, &bytes).map_err(|e| e.to_string())
                });
            (stored, written)
        })
        .await
        .map_err(|e| write_error(openraft::AnyError::new(&e)))?;
        written.map_err(|e| write_error(openraft::AnyError::error(e)))?;
        // A previous release's copy in sled is now stale (the file wins on open):
        // dropped without a flush of its own; the next log append's flushes it.
        if self
            .shared
            .snapshots
            .contains_key(CURRENT_SNAPSHOT_KEY)
            .unwrap_or(false)
        {
            self.shared
                .snapshots
                .remove(CURRENT_SNAPSHOT_KEY)
                .map_err(|e| write_error(openraft::AnyError::new(&e)))?;
        }
        *persisted = stored.meta.last_log_id;
        Ok(stored)
    }

    /// The stored snapshot (read off the runtime: it may be tens of megabytes).
    async fn load_current(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        let (db, dir) = (self.shared.db.clone(), self.shared.dir.clone());
        let bytes = in_background(move || read_stored(&db, &dir))
            .await
            .map_err(read_error)?
            .map_err(|e| read_error(std::io::Error::other(e)))?;
        match bytes {
            Some(bytes) => Ok(Some(codec::decode(&bytes).map_err(read_error)?)),
            None => Ok(None),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        // The node's clock, for the observer only: nothing in the snapshot depends on it.
        let started = std::time::Instant::now();
        // Under the read lock only long enough to copy the state. Apply waits for the
        // lock, and every reader waits behind a waiting writer (std's RwLock), each
        // blocking a runtime worker: held for a whole encode (0.3–1.5 s with 100,000
        // request ids, on every node at once since all snapshot at the same index) it
        // froze the node, heartbeats included, and followers campaigned under load
        // (#16). The copy is the state at exactly `last_applied`.
        let (meta, state) = {
            let applied = self.read();
            let build = self.shared.builds.fetch_add(1, Ordering::Relaxed);
            let snapshot_id = match applied.last_applied {
                Some(log_id) => format!("{}-{}-{}", log_id.leader_id.term, log_id.index, build),
                None => format!("0-0-{build}"),
            };
            let meta = SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.membership.clone(),
                snapshot_id,
            };
            (meta, applied.state.clone())
        };
        let copied = started.elapsed();
        // The encode is seconds of CPU with a large state: off the runtime's workers,
        // at the lowest priority, so heartbeats and client requests go first.
        let data = in_background(move || codec::encode(&state))
            .await
            .map_err(read_error)?
            .map_err(read_error)?;
        let stored = self.persist(StoredSnapshot { meta, data }).await?;
        tracing::debug!(
            bytes = stored.data.len(),
            copy_ms = copied.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "snapshot built"
        );
        if let Some(observer) = &self.shared.observer {
            observer.snapshot_built(stored.data.len(), started.elapsed());
        }
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.read();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if let (Some(durable), Some(last)) = (&self.shared.durable, entries.last()) {
            // A leader's own entries may be committed before its background flush
            // ends; they are applied (and so answered) only once on its disk.
            durable.wait_for(last.log_id).await;
        }
        let mut responses = Vec::new();
        let mut events = Vec::new();
        let last_index = {
            let mut applied = self.write();
            for entry in entries {
                applied.last_applied = Some(entry.log_id);
                let response = match entry.payload {
                    EntryPayload::Blank => BatchResponse::default(),
                    EntryPayload::Normal(batch) => applied.state.apply_batch(&batch),
                    EntryPayload::Membership(membership) => {
                        let voters = membership.voter_ids().collect();
                        let learners = membership.learner_ids().collect();
                        applied.state.apply_membership(voters, learners);
                        applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                        BatchResponse::default()
                    }
                };
                responses.push(response);
                // Shown entry by entry, so it sees each entry's events with the
                // state (and cluster time) right after that entry.
                if let Some(observer) = &self.shared.observer {
                    let mut fresh = applied.state.take_events();
                    observer.applied(&fresh, &applied.state);
                    events.append(&mut fresh);
                }
            }
            events.append(&mut applied.state.take_events());
            self.shared
                .hub
                .push(events, applied.state.last_command_index);
            self.shared
                .formats
                .set_active(applied.state.active_format());
            applied.last_applied.map_or(0, |log_id| log_id.index)
        };
        self.shared.applied_index.send_replace(last_index);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let state: State = codec::decode(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        // Persist first: if we crash after this, the restart restores this snapshot;
        // if before, the old state and the old snapshot are still consistent.
        self.persist(StoredSnapshot {
            meta: meta.clone(),
            data,
        })
        .await?;
        if let (Some(durable), Some(last)) = (&self.shared.durable, meta.last_log_id) {
            // Everything up to the snapshot is on disk now, in the snapshot: a node
            // that leads next sends its commit index without waiting for a flush.
            durable.advance(last);
        }
        let last_index = {
            let mut applied = self.write();
            // The commands up to the snapshot were skipped here: no history of them.
            self.shared.hub.reset(state.last_command_index);
            self.shared.formats.set_active(state.active_format());
            *applied = AppliedState {
                last_applied: meta.last_log_id,
                membership: meta.last_membership.clone(),
                state,
            };
            meta.last_log_id.map_or(0, |log_id| log_id.index)
        };
        self.shared.applied_index.send_replace(last_index);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.load_current().await?.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data directory of the previous release keeps its snapshot in sled's tree:
    /// it is restored from there, and the next build moves it into the file.
    #[tokio::test]
    async fn a_snapshot_kept_in_sled_by_the_previous_release_is_restored_then_moved_to_the_file() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let options = super::super::StoreOptions {
            cache_capacity_bytes: 16 * 1024 * 1024,
        };
        let db = super::super::open_db(dir.path(), &options).expect("open");
        let mut state = State::default();
        crate::sm::kv::put(&mut state.kv, "k", "\"v\"", None, None, 4);
        let log_id = LogId::new(openraft::CommittedLeaderId::new(1, 1), 5);
        let stored = StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: Some(log_id),
                last_membership: StoredMembership::default(),
                snapshot_id: "1-5-0".into(),
            },
            data: codec::encode(&state).expect("encode"),
        };
        let tree = db.open_tree("snapshot").expect("tree");
        tree.insert(
            CURRENT_SNAPSHOT_KEY,
            codec::encode(&stored).expect("encode"),
        )
        .expect("insert");

        let mut store = StateMachineStore::open(&db, dir.path()).expect("open the store");
        assert_eq!(store.read().last_applied, Some(log_id));
        assert!(store.read().state.kv.contains_key("k"));
        assert!(!super::super::snapshot_file::path(dir.path()).exists());

        // A build at the restored index is already stored; one entry later it is not.
        let next = LogId::new(openraft::CommittedLeaderId::new(1, 1), 6);
        let blank = Entry {
            log_id: next,
            payload: EntryPayload::Blank,
        };
        store.apply(vec![blank]).await.expect("apply");
        store.build_snapshot().await.expect("build");
        assert!(super::super::snapshot_file::path(dir.path()).exists());
        assert!(!tree.contains_key(CURRENT_SNAPSHOT_KEY).expect("read"));
        let reopened = StateMachineStore::open(&db, dir.path()).expect("reopen");
        assert_eq!(reopened.read().last_applied, Some(next));
        assert!(reopened.read().state.kv.contains_key("k"));
        let (exported, _) = read_snapshot(&db, dir.path()).expect("read").expect("some");
        assert_eq!(exported, Some(next));
    }
}
