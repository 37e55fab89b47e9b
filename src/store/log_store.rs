//! The Raft log and vote on sled (`RaftLogStorage`).
//!
//! Contract (openraft 0.9.25 storage-v2): entries are consecutive with no holes;
//! openraft issues every call here from its single RaftCore task, so writes are
//! serialized. An append or a vote is on disk before openraft is told it is
//! (each `FSYNC` below). Readers are cheap clones used by replication tasks.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{OptionalSend, StorageIOError};

use crate::codec;
use crate::raft_types::{Entry, LogId, StorageError, TypeConfig, Vote};

const VOTE_KEY: &[u8] = b"vote";
const COMMITTED_KEY: &[u8] = b"committed";
const LAST_PURGED_KEY: &[u8] = b"last_purged";

/// The log store. Cloning shares the same trees.
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
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
    pub fn new(db: &sled::Db) -> Result<Self, sled::Error> {
        Ok(Self {
            db: db.clone(),
            log: db.open_tree("log")?,
            meta: db.open_tree("meta")?,
        })
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        let bytes = self.meta.get(key).map_err(|e| StorageIOError::read(&e))?;
        bytes
            .map(|bytes| codec::decode(&bytes).map_err(|e| StorageIOError::read(&e).into()))
            .transpose()
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

    fn last_entry_log_id(&self) -> Result<Option<LogId>, StorageError> {
        match self.log.last().map_err(|e| StorageIOError::read_logs(&e))? {
            Some((_, bytes)) => {
                let entry: Entry =
                    codec::decode(&bytes).map_err(|e| StorageIOError::read_logs(&e))?;
                Ok(Some(entry.log_id))
            }
            None => Ok(None),
        }
    }
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
        let last_purged_log_id: Option<LogId> = self.read_meta(LAST_PURGED_KEY)?;
        let last_log_id = self.last_entry_log_id()?.or(last_purged_log_id);
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
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_meta(VOTE_KEY)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // No fsync of its own: it rides on the next append's or vote's flush. Losing
        // it costs only a later re-apply from the last snapshot, never correctness.
        self.write_meta(COMMITTED_KEY, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.read_meta::<Option<LogId>>(COMMITTED_KEY)?.flatten())
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
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = codec::encode(&entry)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, &e))?;
            batch.insert(&index_key(entry.log_id.index), bytes);
        }
        // One atomic batch within the log tree: readable as soon as this returns.
        self.log
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        // FSYNC: the entries are durable before openraft counts them (the leader
        // counts its own append toward the commit quorum; a follower acks after this).
        match self.flush().await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let error = StorageIOError::write_logs(&e);
                callback.log_io_completed(Err(e));
                Err(error.into())
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
