//! Every size, count and wait Conclave bounds, by name, in one place.
//!
//! Two kinds live here. [`Replicated`] limits are part of the state machine's
//! semantics: every replica must use the same values, so they are constants compiled
//! into the binary and never read from a node's config. [`Limits`] bound what one node
//! accepts and holds (request sizes, waits, batches); the config may lower them.

use serde::Deserialize;

/// Limits that are part of the replicated semantics (identical on every node).
pub struct Replicated;

impl Replicated {
    /// How long a `request_id` is remembered after it was applied, in cluster time.
    pub const REQUEST_ID_RETENTION_MS: u64 = 10 * 60 * 1000;
    /// How many `request_id`s are remembered at most; the oldest is forgotten first.
    pub const REQUEST_ID_CAPACITY: usize = 100_000;
    /// Live sessions at most; a create beyond it is refused (429).
    pub const MAX_SESSIONS: usize = 100_000;
    /// Tasks stored at most (all states). A submit that would exceed it evicts the
    /// oldest terminal task (by the time it became terminal, then id) instead; only
    /// when every stored task is live is it refused (429).
    pub const MAX_TASKS: usize = 1_000_000;
    /// How long a terminal task (succeeded, dead or cancelled) is kept after it
    /// became terminal, in cluster time; then it is removed.
    pub const TASK_RETENTION_MS: u64 = 24 * 60 * 60 * 1000;
    /// Most expired terminal tasks removed when cluster time advances once; the rest
    /// go on the next advance, so one batch never stalls the apply loop.
    pub const TASK_GC_BATCH: usize = 10_000;
    /// The first retry of a failed task waits this long; each next one twice as long.
    pub const TASK_RETRY_BACKOFF_BASE_MS: u64 = 1_000;
    /// The longest retry backoff.
    pub const TASK_RETRY_BACKOFF_MAX_MS: u64 = 60_000;
    /// Keys stored at most; a put of a new key beyond it is refused (429).
    pub const MAX_KEYS: usize = 1_000_000;
    /// Locks, semaphores, barriers and elections in use at most, each room counted
    /// on its own; an acquire, arrival or campaign that would add one more is
    /// refused (429). (A lock, semaphore or election nobody holds or awaits is
    /// dropped at once; a barrier nobody has arrived at after
    /// `IDLE_RECORD_RETENTION_MS`.)
    pub const MAX_RESOURCES_PER_ROOM: usize = 100_000;
    /// Waiters queued at most on one lock or semaphore, candidates standing in one
    /// election; one more is refused (429). Barrier arrivals are bounded by
    /// `parties`.
    pub const MAX_WAITERS: usize = 10_000;
    /// How many ended generations a barrier remembers (for waiters to read).
    pub const BARRIER_HISTORY: usize = 64;
    /// Most proposals kept at once (open, or decided and within retention).
    pub const MAX_PROPOSALS: usize = 100_000;
    /// How long a decided proposal is kept when its creator did not say.
    pub const PROPOSAL_RETENTION_MS: u64 = 24 * 60 * 60 * 1000;
    /// Most proposals one step expires, and most it removes after retention.
    pub const PROPOSAL_GC_BATCH: usize = 10_000;
    /// Most two-phase transactions kept at once: a record stays until every
    /// participant acked, so past this a new one is refused (429), never an old
    /// one dropped.
    pub const MAX_TWO_PHASE: usize = 10_000;
    /// Most two-phase transactions one step aborts at their timeout.
    pub const TWO_PHASE_TIMEOUT_BATCH: usize = 10_000;
    /// How long a barrier nobody has arrived at is kept (with how its recent
    /// generations ended), in cluster time; then it is removed (`sm::retention`,
    /// from format 8).
    pub const IDLE_RECORD_RETENTION_MS: u64 = 60 * 60 * 1000;
    /// Most idle records one step removes; the rest go on the next.
    pub const IDLE_REMOVALS_PER_STEP: usize = 10_000;
}

/// Per-node limits; each may be lowered (never raised past its default) by the
/// `[limits]` table of the config.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest HTTP request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Longest key, in bytes.
    pub max_key_bytes: usize,
    /// Largest KV value (its JSON text), in bytes.
    pub max_value_bytes: usize,
    /// Longest `request_id`, in bytes.
    pub max_request_id_bytes: usize,
    /// Most entries a list request returns.
    pub max_list_limit: usize,
    /// Longest blocking wait a request may ask for (`wait_ms`).
    pub max_wait_ms: u64,
    /// Most commands coalesced into one Raft log entry.
    pub max_batch_commands: usize,
    /// Most encoded command bytes coalesced into one Raft log entry.
    pub max_batch_bytes: usize,
    /// Most batches proposed to Raft and not yet answered, per leader.
    pub max_inflight_batches: usize,
    /// Most commands waiting for a place in a batch before new writes get 429.
    pub max_queued_commands: usize,
    /// Most linearizable reads waiting for a read-index round before new ones get 429.
    pub max_queued_reads: usize,
    /// How long a proposed write may take before the caller gets 504 `indeterminate`.
    pub write_timeout_ms: u64,
    /// How long a forwarded request may take at the leader before the caller gets an
    /// error (503 for a connection that never opened, else 504 for a write).
    pub forward_timeout_ms: u64,
    /// How long a linearizable read may wait for its read-index round.
    pub read_timeout_ms: u64,
    /// How long a request that needs the leader waits for an election to produce
    /// one before it is answered 503 `no_leader`.
    pub leader_wait_ms: u64,
    /// How long a member added as a voter may take to replicate the log (as a
    /// learner) before it is promoted; past it the request is refused with 409.
    pub learner_catch_up_ms: u64,
    /// Longest session name or task kind, in bytes.
    pub max_name_bytes: usize,
    /// Most capabilities a session offers or a task requires.
    pub max_capabilities: usize,
    /// Longest capability, in bytes.
    pub max_capability_bytes: usize,
    /// Largest session capacity (tasks at once).
    pub max_session_capacity: u32,
    /// Longest session TTL and task lease.
    pub max_ttl_ms: u64,
    /// Most attempts a task may be given.
    pub max_task_attempts: u32,
    /// Most dependencies one task may have.
    pub max_depends_on: usize,
    /// Longest submission delay (`not_before_ms`).
    pub max_not_before_ms: u64,
    /// How often the leader replicates the keepalives it accepted (one log entry
    /// per flush, however many sessions). A leader crash loses at most the
    /// keepalives of its last flush interval.
    pub keepalive_flush_ms: u64,
    /// Largest semaphore `limit` (permits in all).
    pub max_semaphore_limit: u32,
    /// Largest barrier `parties`.
    pub max_barrier_parties: u32,
    /// Largest snapshot a node receives over `/raft/snapshot` (all chunks of one
    /// snapshot together, held in memory until installed), in bytes.
    pub max_snapshot_bytes: usize,
    /// Client connections served at once; a new one past it is closed at once.
    pub max_connections: usize,
    /// Peer-listener connections served at once.
    pub max_peer_connections: usize,
    /// How long a connection may take to send a request's headers, counted from
    /// when it is ready for the next request (so also the keep-alive idle timeout).
    pub header_read_timeout_ms: u64,
    /// How long a request's whole body may take to arrive (408 `body_timeout`).
    pub body_read_timeout_ms: u64,
    /// Requests a follower forwards to the leader at once; past it, 429 `overloaded`
    /// (not sent, so not applied).
    pub max_inflight_forwards: usize,
    /// Most voters of a proposal, participants of a two-phase transaction.
    pub max_voters: usize,
    /// Longest proposal title, in bytes.
    pub max_title_bytes: usize,
    /// Longest proposal `deadline_ms` and two-phase `timeout_ms`.
    pub max_decision_ms: u64,
    /// Longest `retention_ms` of a decided proposal.
    pub max_retention_ms: u64,
    /// Most ops in one branch of a transaction (`POST /v1/txn`).
    pub max_txn_ops: usize,
    /// Most compares of one transaction.
    pub max_txn_compares: usize,
    /// Most bytes of keys, values and payloads one transaction carries in all.
    pub max_txn_bytes: usize,
    /// Watch streams (`GET /v1/watch`) one node serves at once; one more is 429.
    pub max_watchers: usize,
    /// Events a node keeps for watches to replay (`from_index`), at most...
    pub watch_history_events: usize,
    /// ...and at most this many bytes of them (estimated); the oldest go first. A
    /// watch whose next event is dropped is sent `lagged` and closed: the history
    /// is how far a consumer may fall behind.
    pub watch_history_bytes: usize,
    /// A watch with nothing to send sends an SSE comment this often.
    pub watch_keepalive_ms: u64,
}

/// Most token subjects `[admission] rate_per_subject` keeps a bucket for on one node
/// (past it, refilled buckets are forgotten first).
pub const MAX_RATE_SUBJECTS: usize = 10_000;

/// How deeply a client-supplied JSON value (KV value, metadata, payload, result,
/// election value) may nest. serde_json refuses to build values deeper than 128
/// levels, and a response wraps a stored value in a few levels of its own, so a
/// value near that bound would be stored but could not be listed.
pub const MAX_JSON_DEPTH: usize = 64;

/// The longest lock-delay a lock may have (`lock_delay_ms` of an acquire).
pub const MAX_LOCK_DELAY_MS: u64 = 60_000;

/// How long one membership change (a joint-consensus round) may take.
pub const MEMBERSHIP_CHANGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// The most a membership request may take in all (forwarding allows this much):
/// two changes plus the largest learner catch-up wait (`Limits::learner_catch_up_ms`).
pub const MEMBERSHIP_REQUEST_TIMEOUT: std::time::Duration =
    std::time::Duration::from_secs(20 + 30 + 20 + 5);

/// How long `POST /v1/cluster/snapshot` waits for the snapshot to be built.
pub const SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The shortest session TTL or task lease accepted (shorter ones cannot be kept
/// alive reliably across a network round trip).
pub const MIN_TTL_MS: u64 = 100;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_key_bytes: 512,
            max_value_bytes: 512 * 1024,
            max_request_id_bytes: 128,
            max_list_limit: 1000,
            max_wait_ms: 60_000,
            max_batch_commands: 1024,
            max_batch_bytes: 2 * 1024 * 1024,
            max_inflight_batches: 4,
            max_queued_commands: 100_000,
            max_queued_reads: 100_000,
            write_timeout_ms: 5_000,
            forward_timeout_ms: 6_000,
            read_timeout_ms: 5_000,
            leader_wait_ms: 3_000,
            learner_catch_up_ms: 30_000,
            max_name_bytes: 256,
            max_capabilities: 64,
            max_capability_bytes: 128,
            max_session_capacity: 10_000,
            max_ttl_ms: 24 * 60 * 60 * 1000,
            max_task_attempts: 1_000,
            max_depends_on: 1_000,
            max_not_before_ms: 30 * 24 * 60 * 60 * 1000,
            keepalive_flush_ms: 200,
            max_semaphore_limit: 10_000,
            max_barrier_parties: 10_000,
            max_snapshot_bytes: 4 * 1024 * 1024 * 1024,
            max_connections: 4_096,
            max_peer_connections: 256,
            header_read_timeout_ms: 30_000,
            body_read_timeout_ms: 30_000,
            max_inflight_forwards: 1_024,
            max_voters: 1_000,
            max_title_bytes: 1_024,
            max_decision_ms: 7 * 24 * 60 * 60 * 1000,
            max_retention_ms: 30 * 24 * 60 * 60 * 1000,
            max_txn_ops: 128,
            max_txn_compares: 128,
            max_txn_bytes: 512 * 1024,
            max_watchers: 1_024,
            watch_history_events: 100_000,
            watch_history_bytes: 64 * 1024 * 1024,
            watch_keepalive_ms: 5_000,
        }
    }
}

impl Limits {
    /// Checks that no limit is zero or above its default; returns the offending name.
    pub fn validate(&self) -> Result<(), String> {
        let defaults = Limits::default();
        let values = self.named();
        for ((name, value), (_, max)) in values.iter().zip(defaults.named()) {
            if *value == 0 || *value > max {
                return Err(format!(
                    "limits.{name} must be between 1 and {max}, got {value}"
                ));
            }
        }
        Ok(())
    }

    fn named(&self) -> [(&'static str, u64); 44] {
        [
            ("max_body_bytes", self.max_body_bytes as u64),
            ("max_key_bytes", self.max_key_bytes as u64),
            ("max_value_bytes", self.max_value_bytes as u64),
            ("max_request_id_bytes", self.max_request_id_bytes as u64),
            ("max_list_limit", self.max_list_limit as u64),
            ("max_wait_ms", self.max_wait_ms),
            ("max_batch_commands", self.max_batch_commands as u64),
            ("max_batch_bytes", self.max_batch_bytes as u64),
            ("max_inflight_batches", self.max_inflight_batches as u64),
            ("max_queued_commands", self.max_queued_commands as u64),
            ("max_queued_reads", self.max_queued_reads as u64),
            ("write_timeout_ms", self.write_timeout_ms),
            ("forward_timeout_ms", self.forward_timeout_ms),
            ("read_timeout_ms", self.read_timeout_ms),
            ("leader_wait_ms", self.leader_wait_ms),
            ("learner_catch_up_ms", self.learner_catch_up_ms),
            ("max_name_bytes", self.max_name_bytes as u64),
            ("max_capabilities", self.max_capabilities as u64),
            ("max_capability_bytes", self.max_capability_bytes as u64),
            ("max_session_capacity", u64::from(self.max_session_capacity)),
            ("max_ttl_ms", self.max_ttl_ms),
            ("max_task_attempts", u64::from(self.max_task_attempts)),
            ("max_depends_on", self.max_depends_on as u64),
            ("max_not_before_ms", self.max_not_before_ms),
            ("keepalive_flush_ms", self.keepalive_flush_ms),
            ("max_semaphore_limit", u64::from(self.max_semaphore_limit)),
            ("max_barrier_parties", u64::from(self.max_barrier_parties)),
            ("max_snapshot_bytes", self.max_snapshot_bytes as u64),
            ("max_connections", self.max_connections as u64),
            ("max_peer_connections", self.max_peer_connections as u64),
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("body_read_timeout_ms", self.body_read_timeout_ms),
            ("max_inflight_forwards", self.max_inflight_forwards as u64),
            ("max_voters", self.max_voters as u64),
            ("max_title_bytes", self.max_title_bytes as u64),
            ("max_decision_ms", self.max_decision_ms),
            ("max_retention_ms", self.max_retention_ms),
            ("max_txn_ops", self.max_txn_ops as u64),
            ("max_txn_compares", self.max_txn_compares as u64),
            ("max_txn_bytes", self.max_txn_bytes as u64),
            ("max_watchers", self.max_watchers as u64),
            ("watch_history_events", self.watch_history_events as u64),
            ("watch_history_bytes", self.watch_history_bytes as u64),
            ("watch_keepalive_ms", self.watch_keepalive_ms),
        ]
    }
}

/// How many times an abandoned waiter's withdrawal is proposed while the node
/// answers `overloaded` (its proposer queue is full), and the first pause between
/// tries (doubling each time): a withdrawal dropped under load leaves a ghost waiter.
pub const WITHDRAW_ATTEMPTS: u32 = 8;
pub const WITHDRAW_RETRY_BASE_MS: u64 = 50;

/// Most events a watch reads from the hub per wake-up (one write to its
/// connection); the rest follow at once.
pub const WATCH_EVENTS_PER_WRITE: usize = 1_024;
/// A watch's write stops growing past this many bytes (plus one event): what one
/// watcher holds beyond the shared history, however far behind its reader is.
pub const WATCH_BYTES_PER_WRITE: usize = 256 * 1024;
/// How often at most a node's `cluster` view is republished to watchers only
/// because indexes or lag moved (a new leader, term or membership goes at once).
pub const CLUSTER_VIEW_REFRESH_MS: u64 = 1_000;

/// A leadership transfer (`POST /v1/cluster/leader`, SIGTERM) gives up after this
/// long, and waits this much past the followers' leader lease before the target
/// calls its election.
pub const TRANSFER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
pub const TRANSFER_LEASE_MARGIN: std::time::Duration = std::time::Duration::from_millis(50);

/// `serve --join`: how many times a node asks to be added while the answer is
/// "not now" (no leader, a change in progress, unreachable), and the pause between
/// tries, doubling from the base up to the max.
pub const JOIN_ATTEMPTS: u32 = 30;
pub const JOIN_RETRY_BASE_MS: u64 = 200;
pub const JOIN_RETRY_MAX_MS: u64 = 5_000;

/// Shortest accepted auth (token signing) key, in bytes: HS256 wants at least the
/// hash's 256 bits.
pub const MIN_AUTH_KEY_BYTES: usize = 32;
/// Longest bearer token accepted, in bytes (a larger `Authorization` header is
/// refused before any decoding).
pub const MAX_TOKEN_BYTES: usize = 4_096;
/// Verified tokens a node remembers (`auth::Verified`), so an agent's next request
/// skips decoding and the signature check; past it the memory is emptied.
pub const MAX_VERIFIED_TOKENS: usize = 4_096;
/// Clock skew tolerated when checking a token's expiry, in seconds.
pub const TOKEN_LEEWAY_S: u64 = 30;
/// Longest token lifetime `conclave token issue` mints.
pub const MAX_TOKEN_TTL_S: u64 = 366 * 86_400;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every per-node limit (by its config name) and every named constant of this
    /// file appears in docs/security.md's Limits section.
    #[test]
    fn every_limit_is_in_the_security_doc() {
        let doc = include_str!("../docs/security.md");
        let mut missing = Vec::new();
        for (name, _) in Limits::default().named() {
            if !doc.contains(&format!("`{name}`")) {
                missing.push(name.to_owned());
            }
        }
        for line in include_str!("limits.rs").lines() {
            let Some(rest) = line.trim().strip_prefix("pub const ") else {
                continue;
            };
            let name = &rest[..rest.find(':').expect("a typed const")];
            if !doc.contains(name) {
                missing.push(name.to_owned());
            }
        }
        assert!(missing.is_empty(), "docs/security.md lacks {missing:?}");
    }
}
