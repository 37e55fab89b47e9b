//! The `[raft]` table of a node config: Raft timing and log-compaction policy, with
//! the defaults a node runs with (`config` turns it into openraft's `Config`).
//! Must not depend on Raft, storage or the HTTP layer.

use serde::Deserialize;

/// Raft timing and log-compaction policy.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSettings {
    /// Leader heartbeat period; also openraft's timeout for each AppendEntries.
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Timeout for sending one snapshot chunk (the last includes the install).
    pub install_snapshot_timeout_ms: u64,
    pub snapshot_max_chunk_bytes: u64,
    /// Most log entries (each a batch of commands) per AppendEntries.
    pub max_payload_entries: u64,
    /// Build a snapshot after this many log entries since the last one.
    pub snapshot_logs_since_last: u64,
    /// Log entries kept behind a snapshot (so slightly lagging followers need no snapshot).
    pub max_in_snapshot_log_to_keep: u64,
    /// Purge the log only once this many entries are purgeable.
    pub purge_batch_size: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
            install_snapshot_timeout_ms: 5_000,
            snapshot_max_chunk_bytes: 4 * 1024 * 1024,
            max_payload_entries: 64,
            snapshot_logs_since_last: 10_000,
            max_in_snapshot_log_to_keep: 1_000,
            purge_batch_size: 256,
        }
    }
}
