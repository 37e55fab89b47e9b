//! Backups: a consistent copy of the applied state (`GET /v1/cluster/backup`,
//! `conclave snapshot save`) and seeding a new single-node cluster's data
//! directory from one (`conclave snapshot restore`), which then grows with
//! `serve --join`.
//!
//! A backup is the encoded [`Backup`]: the format version, the Raft log id the state
//! stands at, and the state. A restore writes it as the directory's current
//! snapshot with a membership of the one restoring node, marks the log purged up to
//! it (the log is empty) and stores a vote in its term, so the node starts as if it
//! had installed that snapshot: it elects itself in a later term and serves the
//! restored state. Each write is FSYNCed before the restore reports success.
//!
//! Must not depend on the HTTP layer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::OpenError;
use crate::codec;
use crate::raft_types::{LogId, Member, NodeId, SnapshotMeta, StoredMembership, Vote};
use crate::sm::State;

/// What a backup file holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct Backup {
    pub format_version: u32,
    /// The Raft log id the state stands at (`None`: nothing applied yet).
    pub last_log_id: Option<LogId>,
    pub state: State,
}

/// What a backup says about itself (printed by the CLI, compared by tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub raft_index: Option<u64>,
    pub command_index: u64,
    /// As `GET /v1/debug/state`'s `state_hash`.
    pub state_hash: String,
}

/// The hash `GET /v1/debug/state` shows for `state`.
pub fn state_hash(state: &State) -> Result<String, codec::CodecError> {
    Ok(format!(
        "{:016x}",
        crate::sm::requests::fnv1a(&codec::encode(state)?)
    ))
}

/// Encodes a backup of `state` at `last_log_id`.
pub fn encode(last_log_id: Option<LogId>, state: &State) -> Result<Vec<u8>, codec::CodecError> {
    #[derive(Serialize)]
    struct BackupRef<'a> {
        format_version: u32,
        last_log_id: Option<LogId>,
        state: &'a State,
    }
    codec::encode(&BackupRef {
        // The format of the state's layout: a cluster not upgraded yet writes
        // backups the previous release restores.
        format_version: state.active_format(),
        last_log_id,
        state,
    })
}

/// Why a restore did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("the backup does not decode: {0}")]
    Corrupt(codec::CodecError),
    #[error("the backup was written with format version {found}; this binary reads {expected}")]
    FormatVersion { found: u32, expected: u32 },
    #[error("{0} is not empty: restore into a new directory")]
    NotEmpty(String),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("writing the restored directory: {0}")]
    Write(String),
}

/// Decodes a backup and says what it holds.
pub fn decode(bytes: &[u8]) -> Result<(Backup, Summary), RestoreError> {
    let backup: Backup = codec::decode(bytes).map_err(RestoreError::Corrupt)?;
    if !codec::reads(backup.format_version) {
        return Err(RestoreError::FormatVersion {
            found: backup.format_version,
            expected: codec::FORMAT_VERSION,
        });
    }
    let summary = Summary {
        raft_index: backup.last_log_id.map(|log_id| log_id.index),
        command_index: backup.state.last_command_index,
        state_hash: state_hash(&backup.state).map_err(RestoreError::Corrupt)?,
    };
    Ok((backup, summary))
}

/// Seeds `data_dir` (new or empty) from `bytes` for node `node_id` (its addresses
/// `member`), the only voter of the restored cluster.
pub fn restore(
    bytes: &[u8],
    data_dir: &Path,
    node_id: NodeId,
    member: Member,
    options: &super::StoreOptions,
) -> Result<Summary, RestoreError> {
    let (backup, summary) = decode(bytes)?;
    let shown = data_dir.display().to_string();
    if std::fs::read_dir(data_dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(RestoreError::NotEmpty(shown));
    }
    let db = super::open_db(data_dir, options)?;
    let write = |e: &dyn std::fmt::Display| RestoreError::Write(e.to_string());
    let membership = openraft::Membership::new(
        vec![BTreeSet::from([node_id])],
        BTreeMap::from([(node_id, member)]),
    );
    let meta = SnapshotMeta {
        last_log_id: backup.last_log_id,
        last_membership: StoredMembership::new(backup.last_log_id, membership),
        snapshot_id: format!(
            "restored-{}",
            backup.last_log_id.map_or(0, |log_id| log_id.index)
        ),
    };
    let data = codec::encode(&backup.state).map_err(|e| write(&e))?;
    super::state_machine::write_snapshot(data_dir, meta, data).map_err(|e| write(&e))?;
    let meta_tree = db.open_tree("meta").map_err(|e| write(&e))?;
    if let Some(log_id) = backup.last_log_id {
        // The log is empty and purged up to the snapshot; the vote is in its term,
        // so the node's first election is in a later one.
        let vote = Vote::new(log_id.leader_id.term, node_id);
        let put = |key: &[u8], bytes: Vec<u8>| meta_tree.insert(key, bytes).map(|_| ());
        put(
            b"last_purged",
            codec::encode(&log_id).map_err(|e| write(&e))?,
        )
        .map_err(|e| write(&e))?;
        put(
            b"committed",
            codec::encode(&Some(log_id)).map_err(|e| write(&e))?,
        )
        .map_err(|e| write(&e))?;
        put(b"vote", codec::encode(&vote).map_err(|e| write(&e))?).map_err(|e| write(&e))?;
    }
    // FSYNC: the restored directory is durable before the restore reports success.
    db.flush().map_err(|e| write(&e))?;
    Ok(summary)
}

/// A snapshot's log id and its encoded state.
pub type SnapshotData = (Option<LogId>, Vec<u8>);

/// What `GET /v1/cluster/log` (`conclave log export`) holds: this node's latest
/// snapshot and every log entry after it up to an applied index — the committed
/// commands, enough to rebuild the state offline (`replay`).
#[derive(Debug, Serialize, Deserialize)]
pub struct LogExport {
    pub format_version: u32,
    /// The snapshot's log id and its encoded state, if the node has one.
    pub snapshot: Option<SnapshotData>,
    /// The entries after the snapshot, each as stored (an encoded `Entry`).
    pub entries: Vec<Vec<u8>>,
}

/// Exports the snapshot (of `db` and data directory `dir`) and the log after it up to index `up_to`. A purge between
/// reading the snapshot and the log (a newer snapshot) is retried.
pub fn export(db: &sled::Db, dir: &Path, up_to: u64) -> Result<Vec<u8>, String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    for _ in 0..EXPORT_ATTEMPTS {
        let snapshot = super::state_machine::read_snapshot(db, dir)?;
        let from = snapshot
            .as_ref()
            .and_then(|(log_id, _)| log_id.map(|l| l.index + 1))
            .unwrap_or(0);
        let log = db.open_tree("log").map_err(|e| err(&e))?;
        let mut entries = Vec::new();
        let mut expected = from;
        let mut gap = false;
        for item in log.range(from.to_be_bytes()..=up_to.to_be_bytes()) {
            let (key, value) = item.map_err(|e| err(&e))?;
            let mut index = [0u8; 8];
            index.copy_from_slice(&key);
            let index = u64::from_be_bytes(index);
            if entries.is_empty() && from == 0 {
                expected = index;
            }
            if index != expected {
                gap = true;
                break;
            }
            expected += 1;
            entries.push(value.to_vec());
        }
        if !gap {
            let export = LogExport {
                format_version: codec::FORMAT_VERSION,
                snapshot,
                entries,
            };
            return codec::encode(&export).map_err(|e| err(&e));
        }
    }
    Err("the log kept being purged while it was read".into())
}

/// How many times [`export`] reads again after the log was purged under it.
const EXPORT_ATTEMPTS: usize = 3;

/// Rebuilds the state from an export, offline: the snapshot's state, then every
/// entry applied as a node applies it.
pub fn replay(bytes: &[u8]) -> Result<(Summary, usize), RestoreError> {
    let export: LogExport = codec::decode(bytes).map_err(RestoreError::Corrupt)?;
    if !codec::reads(export.format_version) {
        return Err(RestoreError::FormatVersion {
            found: export.format_version,
            expected: codec::FORMAT_VERSION,
        });
    }
    let (mut last, mut state) = match export.snapshot {
        Some((log_id, data)) => (
            log_id.map(|l| l.index),
            codec::decode::<State>(&data).map_err(RestoreError::Corrupt)?,
        ),
        None => (None, State::default()),
    };
    for bytes in &export.entries {
        let entry: crate::raft_types::Entry =
            codec::decode(bytes).map_err(RestoreError::Corrupt)?;
        match entry.payload {
            openraft::EntryPayload::Blank => {}
            openraft::EntryPayload::Normal(batch) => {
                state.apply_batch(&batch);
            }
            openraft::EntryPayload::Membership(membership) => {
                let voters = membership.voter_ids().collect();
                let learners = membership.learner_ids().collect();
                state.apply_membership(voters, learners);
            }
        }
        state.take_events();
        last = Some(entry.log_id.index);
    }
    let summary = Summary {
        raft_index: last,
        command_index: state.last_command_index,
        state_hash: state_hash(&state).map_err(RestoreError::Corrupt)?,
    };
    Ok((summary, export.entries.len()))
}
