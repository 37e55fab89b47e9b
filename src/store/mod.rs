//! Durable storage on one sled `Db` per node: the Raft log, the vote, the committed
//! id, the purge point, and state-machine snapshots.
//!
//! Layout (all values encoded by `codec`):
//! - tree `log`: big-endian `u64` log index → `Entry` (big-endian so keys sort by index);
//! - tree `meta`: `format_version`, `cluster_id` ([`identity`]), `vote`, `committed`,
//!   `last_purged`;
//! - tree `snapshot`: `current` → the latest built or installed snapshot (meta + data).
//!
//! The state machine itself lives in memory (`state_machine`); it is rebuilt at start
//! from the latest snapshot plus the committed log tail, which openraft re-applies
//! (`save_committed`). Durability: sled's `flush_async` flushes the whole `Db` (all
//! trees), and every flush point is marked `FSYNC` in the code.
//!
//! A directory of `codec::PREVIOUS_FORMAT_VERSION` is migrated on open ([`open_db`]);
//! any other format is refused.

// openraft's storage traits fix the error type (`StorageError`, ~224 bytes); the
// helpers here return it as the traits do rather than boxing and unboxing it.
pub mod backup;
pub mod durable;
pub mod identity;
#[allow(clippy::result_large_err)]
pub mod log_store;
mod snapshot_file;
#[allow(clippy::result_large_err)]
pub mod state_machine;

/// What a node-local observer (its metrics) is shown of the store's work: each
/// applied entry's events with the state right after that entry, under the state's write lock
/// (so it must be quick and must not block), and every snapshot built. It sees,
/// never changes: the state machine neither knows of it nor waits for anything but
/// the call.
pub trait ApplyObserver: Send + Sync {
    /// The events of the entry just applied, and the state after it.
    fn applied(&self, events: &[crate::sm::events::Event], state: &crate::sm::State);
    /// A snapshot of `bytes` built and persisted in `took`.
    fn snapshot_built(&self, bytes: usize, took: std::time::Duration);
}

use std::path::Path;

use crate::codec;

pub use identity::ClusterIdentity;
pub use log_store::LogStore;
pub use state_machine::StateMachineStore;

/// Opening the data directory failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("opening sled at {path}: {source}")]
    Sled { path: String, source: sled::Error },
    #[error("data directory {path} was written with format version {found}; this binary reads {expected}")]
    FormatVersion {
        path: String,
        found: u32,
        expected: u32,
    },
    #[error("data directory {path} belongs to cluster {stored:?}, but this node is configured for cluster {configured:?}: point data_dir at this cluster's directory (or an empty one), or fix cluster_id")]
    OtherCluster {
        path: String,
        stored: String,
        configured: String,
    },
    #[error("reading the Raft log in {path}: {reason}")]
    Storage { path: String, reason: String },
    #[error("data directory {path}: {source}")]
    Corrupt {
        path: String,
        source: codec::CodecError,
    },
}

/// Storage settings from the config.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// sled page cache size in bytes (sled's default is 1 GiB; we always set it).
    pub cache_capacity_bytes: u64,
}

const FORMAT_VERSION_KEY: &[u8] = b"format_version";

/// Opens (or creates) the node's sled database and checks its format version.
pub fn open_db(path: &Path, options: &StoreOptions) -> Result<sled::Db, OpenError> {
    let shown = path.display().to_string();
    let sled_error = |source| OpenError::Sled {
        path: shown.clone(),
        source,
    };
    let db = sled::Config::new()
        .path(path)
        .cache_capacity(options.cache_capacity_bytes)
        .mode(sled::Mode::LowSpace)
        .open()
        .map_err(sled_error)?;
    let meta = db.open_tree("meta").map_err(sled_error)?;
    match meta.get(FORMAT_VERSION_KEY).map_err(sled_error)? {
        Some(bytes) => {
            let found: u32 = codec::decode(&bytes).map_err(|source| OpenError::Corrupt {
                path: shown.clone(),
                source,
            })?;
            if !codec::reads(found) {
                return Err(OpenError::FormatVersion {
                    path: shown,
                    found,
                    expected: codec::FORMAT_VERSION,
                });
            }
            if found != codec::FORMAT_VERSION {
                migrate(&db, &meta, found).map_err(sled_error)?;
            }
        }
        None => {
            let bytes = codec::encode(&codec::FORMAT_VERSION).expect("a u32 always encodes");
            meta.insert(FORMAT_VERSION_KEY, bytes).map_err(sled_error)?;
            // FSYNC: the format marker is durable before anything else is written.
            db.flush().map_err(sled_error)?;
        }
    }
    Ok(db)
}

/// Migrates a directory of the previous format to this one, in place. From 7 to 8
/// nothing but the marker changes: the log's entries encode alike, and the stored
/// snapshot's state (the format-7 layout) is read as it is (`sm::format`) until
/// the cluster upgrades and the next snapshot writes format 8.
fn migrate(db: &sled::Db, meta: &sled::Tree, found: u32) -> Result<(), sled::Error> {
    tracing::warn!(
        from = found,
        to = codec::FORMAT_VERSION,
        "migrating the data directory to format {} (written by format {found})",
        codec::FORMAT_VERSION
    );
    let bytes = codec::encode(&codec::FORMAT_VERSION).expect("a u32 always encodes");
    meta.insert(FORMAT_VERSION_KEY, bytes)?;
    // FSYNC: the migrated marker is durable before the node uses the directory.
    db.flush()?;
    Ok(())
}

/// Opens both halves of the Raft storage over one `Db` (opened in data directory
/// `dir`, which also holds the snapshot file); applied events go to `hub`.
pub fn open(
    db: &sled::Db,
    dir: &Path,
    hub: crate::watch::Hub,
    observer: Option<std::sync::Arc<dyn ApplyObserver>>,
) -> Result<(LogStore, StateMachineStore), OpenError> {
    let log = LogStore::new(db).map_err(|error| OpenError::Storage {
        path: dir.display().to_string(),
        reason: error.to_string(),
    })?;
    let state_machine = StateMachineStore::open_with(db, dir, hub)?.observed_by(observer);
    Ok((log, state_machine))
}

#[cfg(test)]
mod tests;
