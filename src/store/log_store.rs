//! The Raft log and vote on sled (`RaftLogStorage`).
//!
//! Contract (openraft 0.9.25 storage-v2): entries are consecutive with no holes;
//! openraft issues every call here from its single RaftCore task, so writes are
//! serialized. A vote, and an append from another leader, are on disk before
//! openraft is told they are (each `FSYNC` below). A leader's own append is told
//! written at once and flushed in the background (`durable`, which says why that
//! keeps every applied or acknowledged entry on disk on a quorum). Readers are cheap
//! clones used by replication tasks.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{OptionalSend, StorageIOError};

use super::durable::{Durable, Flusher};
use crate::codec;
use crate::raft_types::{Entry, LogId, NodeId, StorageError, TypeConfig, Vote};

const VOTE_KEY: &[u8] = b"vote";
const COMMITTED_KEY: &[u8] = b"committed";
const LAST_PURGED_KEY: &[u8] = b"last_purged";

/// The log store. Cloning shares the same trees.
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    durable: Arc<Durable>,
    flusher: Arc<Flusher>,
    /// This node, once known ([`Self::owned_by`]): only then are its own appends as
    /// leader flushed in the background. `None` (openraft's suite): every append
    /// flushes first.
    node: Option<NodeId>,
    /// The vote last saved, as the role test of `append` needs it.
    vote: Arc<Mutex<Option<Vote>>>,
}

/// How [`LogStore::write_entries`] left an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// On disk (an append from another leader): the durable point covers it.
    Flushed,
    /// This node's own entries as leader: written, flushing in the background.
    Flushing,
    /// Nothing to write.
    Empty,
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn index_of(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(key);
    u64::from_be_bytes(bytes)
}

impl LogStore {
    pub fn new(db: &sled::Db) -> Result<Self, StorageError> {
        let log = db.open_tree("log").map_err(|e| StorageIOError::read(&e))?;
        let meta = db.open_tree("meta").map_err(|e| StorageIOError::read(&e))?;
        // Everything read back from the directory is on disk.
        let durable = Durable::new(last_log_id(&log, &meta)?);
        let vote = read_meta(&meta, VOTE_KEY)?;
        Ok(Self {
            db: db.clone(),
            log,
            meta,
            flusher: Flusher::new(db.clone(), durable.clone()),
            durable,
            node: None,
            vote: Arc::new(Mutex::new(vote)),
        })
    }

    /// The store of node `node`: its own appends as leader are acknowledged before
    /// their flush (module doc, `durable`).
    pub fn owned_by(mut self, node: NodeId) -> Self {
        self.node = Some(node);
        self
    }

    /// The durable point this store advances.
    pub fn durable(&self) -> Arc<Durable> {
        self.durable.clone()
    }

    /// Writes an append's entries and makes them durable: before returning for
    /// another leader's entries, in the background for this node's own as leader
    /// (module doc). `append` tells openraft once this returns.
    pub async fn write_entries(&mut self, entries: Vec<Entry>) -> Result<Written, StorageError> {
        let Some(last) = entries.last().map(|entry| entry.log_id) else {
            return Ok(Written::Empty);
        };
        let mut batch = sled::Batch::default();
        for entry in &entries {
            let bytes = codec::encode(entry)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, &e))?;
            batch.insert(&index_key(entry.log_id.index), bytes);
        }
        // One atomic batch within the log tree: readable as soon as this returns.
        self.log
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        if self.own_leader_entries(&entries) {
            // FSYNC (background, `durable::Flusher`): the leader's own entries go to
            // its followers now, in parallel with its own flush; they are applied
            // (so answered) only once that flush covers them.
            self.flusher.request(last);
            return Ok(Written::Flushing);
        }
        // FSYNC: another leader's entries are durable before this node acks them
        // (the leader counts this ack toward the commit quorum).
        self.flush()
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        self.durable.advance(last);
        Ok(Written::Flushed)
    }

    /// Whether every entry of an append is this node's own, written as the leader
    /// of the vote it holds: only those may be acknowledged before their flush. An
    /// append from another leader (or of this node's entries of an earlier term,
    /// sent back by a later leader) is acknowledged only once on disk.
    fn own_leader_entries(&self, entries: &[Entry]) -> bool {
        let Some(node) = self.node else {
            return false;
        };
        let vote = *self.vote.lock().unwrap_or_else(|e| e.into_inner());
        let Some(vote) = vote else {
            return false;
        };
        vote.is_committed()
            && vote.leader_id().voted_for() == Some(node)
            && entries
                .iter()
                .all(|entry| entry.log_id.leader_id == *vote.leader_id())
    }

    fn write_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> Result<(), StorageError> {
        let bytes = codec::encode(value).map_err(|e| StorageIOError::write(&e))?;
        self.meta
            .insert(key, bytes)
            .map_err(|e| StorageIOError::write(&e))?;
        Ok(())
    }

    async fn flush(&self) -> Result<(), std::io::Error> {
        self.db
            .flush_async()
            .await
            .map(|_| ())
            .map_err(std::io::Error::other)
    }
}

fn read_meta<T: serde::de::DeserializeOwned>(
    meta: &sled::Tree,
    key: &[u8],
) -> Result<Option<T>, StorageError> {
    let bytes = meta.get(key).map_err(|e| StorageIOError::read(&e))?;
    bytes
        .map(|bytes| codec::decode(&bytes).map_err(|e| StorageIOError::read(&e).into()))
        .transpose()
}

/// The last entry's id, or the purge point if the log is empty.
fn last_log_id(log: &sled::Tree, meta: &sled::Tree) -> Result<Option<LogId>, StorageError> {
    let last_entry = match log.last().map_err(|e| StorageIOError::read_logs(&e))? {
        Some((_, bytes)) => {
            let entry: Entry = codec::decode(&bytes).map_err(|e| StorageIOError::read_logs(&e))?;
            Some(entry.log_id)
        }
        None => None,
    };
    Ok(last_entry.or(read_meta(meta, LAST_PURGED_KEY)?))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&i) => Bound::Included(index_key(i)),
            Bound::Excluded(&i) => Bound::Excluded(index_key(i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => Bound::Included(index_key(i)),
            Bound::Excluded(&i) => Bound::Excluded(index_key(i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut entries = Vec::new();
        for item in self.log.range::<[u8; 8], _>((start, end)) {
            let (key, bytes) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let entry: Entry = codec::decode(&bytes)
                .map_err(|e| StorageIOError::read_log_at_index(index_of(&key), &e))?;
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = read_meta(&self.meta, LAST_PURGED_KEY)?;
        let last_log_id = last_log_id(&self.log, &self.meta)?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.write_meta(VOTE_KEY, vote)?;
        // FSYNC: a vote is durable before openraft acts on it.
        self.flush()
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        *self.vote.lock().unwrap_or_else(|e| e.into_inner()) = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        read_meta(&self.meta, VOTE_KEY)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // No fsync of its own: it rides on the next append's or vote's flush. Losing
        // it costs only a later re-apply from the last snapshot, never correctness.
        // Never past the durable point (`durable`, rule 3): a restart must find
        // every entry up to the committed id in its log.
        self.write_meta(
            COMMITTED_KEY,
            &super::durable::clamp_commit(committed, self.durable.get()),
        )
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(read_meta::<Option<LogId>>(&self.meta, COMMITTED_KEY)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        match self.write_entries(entries.into_iter().collect()).await {
            Ok(_) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(error) => {
                callback.log_io_completed(Err(std::io::Error::other(error.to_string())));
                Err(error)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Delete [log_id.index, ∞) from the tail backwards, so a crash midway leaves
        // a shorter log but never a hole.
        let keys: Vec<sled::IVec> = self
            .log
            .range(index_key(log_id.index)..)
            .keys()
            .collect::<Result<_, _>>()
            .map_err(|e| StorageIOError::write_logs(&e))?;
        for key in keys.iter().rev() {
            self.log
                .remove(key)
                .map_err(|e| StorageIOError::write_logs(&e))?;
        }
        // FSYNC: a truncated suffix must not reappear after a crash.
        self.flush()
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The purge point is recorded (and flushed: FSYNC) before anything is deleted;
        // openraft ignores whatever is left at or below it after a crash.
        self.write_meta(LAST_PURGED_KEY, &log_id)?;
        self.flush()
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        let keys: Vec<sled::IVec> = self
            .log
            .range(..=index_key(log_id.index))
            .keys()
            .collect::<Result<_, _>>()
            .map_err(|e| StorageIOError::write_logs(&e))?;
        for key in keys {
            self.log
                .remove(key)
                .map_err(|e| StorageIOError::write_logs(&e))?;
        }
        Ok(())
    }
}
