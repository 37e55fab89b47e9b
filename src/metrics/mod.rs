//! This node's metrics: one `prometheus-client` registry holding every counter,
//! gauge and histogram `/metrics` shows (`docs/observability.md` lists them), the
//! handles the layers that feed them hold, and the Prometheus text encoding.
//!
//! Three kinds of feeding, each cheap on its path:
//! - **events**: the layers that see something happen hold a clone of a handle and
//!   bump it (the proposer's batch sizes, the HTTP middleware's requests, a lock
//!   acquire's wait); an increment is an atomic add, a labelled one a read-locked
//!   map lookup with `&'static str` labels (no allocation);
//! - **applied events** ([`applied`]): the store's apply hands every entry's events
//!   to [`Metrics`] as an observer, which counts them; node-local, after the fact,
//!   read-only: the state machine never knows it is observed;
//! - **scrape time**: the `/metrics` handler (`server::metrics`) sets the gauges
//!   of what is a level (Raft positions, state sizes, queue depths) just before
//!   encoding, so nothing is kept up to date that nobody reads.
//!
//! Labels are bounded by construction: route templates (never raw paths), methods
//! from a fixed list, status codes, member ids, names from fixed lists.
//!
//! Must not depend on the HTTP layer, Raft, storage or the state machine's
//! internals beyond reading its events and state; nothing depends on it to decide
//! anything (a metric is never read back to act on).

pub mod applied;
pub mod raft;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The `Content-Type` of `/metrics` (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A gauge of a whole number (positions, counts).
pub type IntGauge = Gauge<i64>;

/// A histogram family's constructor.
pub type HistogramOf = fn() -> Histogram;

/// Labels of one HTTP request: method, route template, status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: &'static str,
    pub route: &'static str,
    pub status: u16,
}

/// Labels of a request's latency: method and route template.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: &'static str,
    pub route: &'static str,
}

/// Labels of a Raft follower's lag (on the leader).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FollowerLabels {
    pub follower: u64,
}

/// One label from a fixed list (`type`, `state`, `primitive`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    pub r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PrimitiveLabels {
    pub primitive: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LostLabels {
    pub primitive: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub kind: &'static str,
    pub outcome: &'static str,
}

/// Raft's view from this node, set at scrape time except the two counters.
pub struct RaftMetrics {
    pub node_id: IntGauge,
    pub term: IntGauge,
    pub is_leader: IntGauge,
    pub leader_id: IntGauge,
    pub last_log_index: IntGauge,
    pub commit_index: IntGauge,
    pub applied_index: IntGauge,
    pub apply_lag: IntGauge,
    pub snapshot_index: IntGauge,
    pub replication_lag: Family<FollowerLabels, IntGauge>,
    /// Fed by [`raft::count_changes`].
    pub term_changes: Counter,
    pub leader_changes: Counter,
    /// Fed by the store's snapshot builds ([`applied`]).
    pub snapshot_bytes: IntGauge,
    pub snapshot_build_seconds: Histogram,
}

/// The write batcher (`replica::proposer`).
#[derive(Clone)]
pub struct ProposerMetrics {
    pub batches: Counter,
    pub commands: Counter,
    /// Commands per proposed batch.
    pub batch_commands: Histogram,
    /// Set at scrape time.
    pub queue_depth: IntGauge,
    /// Kept by the batch task: up when a batch goes to Raft, down when it returns.
    pub inflight_batches: IntGauge,
    /// From handing a batch to Raft (`client_write`) to its applied results: the
    /// leader's append and fsync, one replication round with a follower's fsync, the
    /// apply. Set against the request duration it bounds the HTTP layer's share.
    pub commit_seconds: Histogram,
}

impl Default for ProposerMetrics {
    fn default() -> Self {
        ProposerMetrics {
            batches: Counter::default(),
            commands: Counter::default(),
            batch_commands: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            queue_depth: IntGauge::default(),
            inflight_batches: IntGauge::default(),
            // 0.1 ms to ~1.1 s by factors of 1.5: fine enough for a sub-ms p50.
            commit_seconds: Histogram::new(exponential_buckets(0.0001, 1.5, 24)),
        }
    }
}

/// The client API (`server::observe`, `server::forward`).
pub struct HttpMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub duration_seconds: Family<RouteLabels, Histogram, HistogramOf>,
    /// Requests this node forwarded to the leader.
    pub forwarded: Counter,
    /// Kept in `server::admission`, copied at scrape time.
    pub forwards_inflight: IntGauge,
    pub admission_refused: Counter,
}

/// The replicated state and its primitives: sizes set at scrape time, counters
/// fed by applied events ([`applied`]), and acquire waits by the handlers.
pub struct StateMetrics {
    pub command_index: IntGauge,
    pub kv_keys: IntGauge,
    pub request_ids: IntGauge,
    pub sessions_live: IntGauge,
    pub tasks: Family<StateLabels, IntGauge>,
    pub events_applied: Family<TypeLabels, Counter>,
    pub sessions_expired: Counter,
    pub task_lease_expirations: Counter,
    pub task_assignment_latency_seconds: Histogram,
    pub holds_lost: Family<LostLabels, Counter>,
    pub decisions: Family<DecisionLabels, Counter>,
    /// Lock, semaphore and election acquires that queued and were then granted.
    pub acquire_wait_seconds: Family<PrimitiveLabels, Histogram, HistogramOf>,
}

/// The watch hub's counters (`watch::HubStats`), copied at scrape time.
#[derive(Default)]
pub struct WatchMetrics {
    pub watchers: IntGauge,
    pub events_sent: Counter,
    pub lagged: Counter,
    pub compacted: Counter,
    pub oldest_index: IntGauge,
}

/// See the module doc. Built once by `node::run`, shared by `Arc`.
pub struct Metrics {
    registry: Registry,
    pub build_test_switches: IntGauge,
    pub raft: RaftMetrics,
    pub proposer: ProposerMetrics,
    pub http: HttpMetrics,
    pub state: StateMetrics,
    pub watch: WatchMetrics,
    /// Held while the scrape-time gauges are set and the text encoded, so two
    /// scrapes do not interleave their copies of the counters kept elsewhere.
    pub scrape: tokio::sync::Mutex<()>,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms … 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

fn wait_histogram() -> Histogram {
    // 1 ms … 131 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 18))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric, registered under its name (a counter's `_total` is added by
    /// the encoding).
    pub fn new() -> Metrics {
        let raft = RaftMetrics {
            node_id: IntGauge::default(),
            term: IntGauge::default(),
            is_leader: IntGauge::default(),
            leader_id: IntGauge::default(),
            last_log_index: IntGauge::default(),
            commit_index: IntGauge::default(),
            applied_index: IntGauge::default(),
            apply_lag: IntGauge::default(),
            snapshot_index: IntGauge::default(),
            replication_lag: Family::default(),
            term_changes: Counter::default(),
            leader_changes: Counter::default(),
            snapshot_bytes: IntGauge::default(),
            // 1 ms … 262 s.
            snapshot_build_seconds: Histogram::new(exponential_buckets(0.001, 4.0, 10)),
        };
        let http = HttpMetrics {
            requests: Family::default(),
            duration_seconds: Family::new_with_constructor(latency_histogram),
            forwarded: Counter::default(),
            forwards_inflight: IntGauge::default(),
            admission_refused: Counter::default(),
        };
        let state = StateMetrics {
            command_index: IntGauge::default(),
            kv_keys: IntGauge::default(),
            request_ids: IntGauge::default(),
            sessions_live: IntGauge::default(),
            tasks: Family::default(),
            events_applied: Family::default(),
            sessions_expired: Counter::default(),
            task_lease_expirations: Counter::default(),
            task_assignment_latency_seconds: wait_histogram(),
            holds_lost: Family::default(),
            decisions: Family::default(),
            acquire_wait_seconds: Family::new_with_constructor(wait_histogram),
        };
        let mut metrics = Metrics {
            registry: Registry::default(),
            build_test_switches: IntGauge::default(),
            raft,
            proposer: ProposerMetrics::default(),
            http,
            state,
            watch: WatchMetrics::default(),
            scrape: tokio::sync::Mutex::new(()),
        };
        metrics.register();
        metrics.zeros();
        metrics
            .build_test_switches
            .set(i64::from(crate::config::TEST_SWITCHES_BUILT));
        metrics
    }

    fn register(&mut self) {
        let r = &mut self.registry;
        r.register(
            "conclave_build_test_switches",
            "1 if this build has the test-only [debug] switches (never in production)",
            self.build_test_switches.clone(),
        );
        let raft = &self.raft;
        r.register(
            "conclave_node_id",
            "This node's Raft id",
            raft.node_id.clone(),
        );
        r.register("conclave_raft_term", "Current Raft term", raft.term.clone());
        let help = "1 if this node is the leader";
        r.register("conclave_raft_is_leader", help, raft.is_leader.clone());
        let help = "The leader this node knows of (0: none)";
        r.register("conclave_raft_leader_id", help, raft.leader_id.clone());
        let help = "Last Raft log index";
        r.register(
            "conclave_raft_last_log_index",
            help,
            raft.last_log_index.clone(),
        );
        let help = "Raft commit index this node knows";
        r.register(
            "conclave_raft_commit_index",
            help,
            raft.commit_index.clone(),
        );
        let help = "Last applied Raft log index";
        r.register(
            "conclave_raft_applied_index",
            help,
            raft.applied_index.clone(),
        );
        let help = "Entries committed but not yet applied here";
        r.register("conclave_raft_apply_lag", help, raft.apply_lag.clone());
        let help = "Raft log index of the last snapshot";
        r.register(
            "conclave_raft_snapshot_index",
            help,
            raft.snapshot_index.clone(),
        );
        let help = "On the leader: entries each other member is behind the leader's last log index";
        r.register(
            "conclave_raft_replication_lag",
            help,
            raft.replication_lag.clone(),
        );
        let help = "Term changes this node saw (elections, won or not) since start";
        r.register(
            "conclave_raft_term_changes",
            help,
            raft.term_changes.clone(),
        );
        let help = "Leader changes this node saw (including to no leader) since start";
        r.register(
            "conclave_raft_leader_changes",
            help,
            raft.leader_changes.clone(),
        );
        let help = "Size of the last snapshot this node built, in bytes";
        r.register(
            "conclave_raft_snapshot_bytes",
            help,
            raft.snapshot_bytes.clone(),
        );
        let help = "Time to build and persist a snapshot here";
        let build = raft.snapshot_build_seconds.clone();
        r.register("conclave_raft_snapshot_build_seconds", help, build);

        let proposer = &self.proposer;
        let help = "Batches (Raft entries) proposed by this node";
        r.register("conclave_proposer_batches", help, proposer.batches.clone());
        let help = "Commands proposed by this node";
        r.register(
            "conclave_proposer_commands",
            help,
            proposer.commands.clone(),
        );
        let help = "Commands per batch proposed by this node";
        let batch = proposer.batch_commands.clone();
        r.register("conclave_proposer_batch_commands", help, batch);
        let help = "Commands queued for the next batch";
        r.register(
            "conclave_proposer_queue_depth",
            help,
            proposer.queue_depth.clone(),
        );
        let help = "Batches proposed and not yet committed";
        let inflight = proposer.inflight_batches.clone();
        r.register("conclave_proposer_inflight_batches", help, inflight);
        let help = "Time from proposing a batch to Raft to its applied results";
        let commit = proposer.commit_seconds.clone();
        r.register("conclave_proposer_commit_seconds", help, commit);

        let http = &self.http;
        let help = "Client API requests answered here, by method, route template and status";
        r.register("conclave_http_requests", help, http.requests.clone());
        let help = "Time to answer a client API request here (to the response head)";
        let duration = http.duration_seconds.clone();
        r.register("conclave_http_request_duration_seconds", help, duration);
        let help = "Requests this node forwarded to the leader";
        r.register("conclave_http_forwarded", help, http.forwarded.clone());
        let help = "Requests this node is forwarding to the leader now";
        let inflight = http.forwards_inflight.clone();
        r.register("conclave_forwards_inflight", help, inflight);
        let help = "Requests refused 429 by admission control here (forward limit, subject rate)";
        let refused = http.admission_refused.clone();
        r.register("conclave_admission_refused", help, refused);

        self.register_state();
        self.register_watch();
    }

    fn register_state(&mut self) {
        let (r, state) = (&mut self.registry, &self.state);
        let help = "Last applied command index";
        r.register(
            "conclave_state_command_index",
            help,
            state.command_index.clone(),
        );
        r.register(
            "conclave_state_kv_keys",
            "Keys in the KV store",
            state.kv_keys.clone(),
        );
        let help = "Remembered request ids";
        r.register(
            "conclave_state_request_ids",
            help,
            state.request_ids.clone(),
        );
        let help = "Live sessions";
        r.register("conclave_sessions_live", help, state.sessions_live.clone());
        let help = "Stored tasks by state";
        r.register("conclave_tasks", help, state.tasks.clone());
        let help = "Events applied here since start, by type";
        r.register(
            "conclave_events_applied",
            help,
            state.events_applied.clone(),
        );
        let help = "Sessions expired (missed keepalives) applied here since start";
        let expired = state.sessions_expired.clone();
        r.register("conclave_sessions_expired", help, expired);
        let help = "Task attempts ended by an expired lease, applied here since start";
        let leases = state.task_lease_expirations.clone();
        r.register("conclave_task_lease_expirations", help, leases);
        let help = "Cluster time from a task becoming runnable to its assignment (tasks without dependencies)";
        let latency = state.task_assignment_latency_seconds.clone();
        r.register("conclave_task_assignment_latency_seconds", help, latency);
        let help = "Locks, permits and leaderships lost without release, by primitive and reason";
        r.register("conclave_holds_lost", help, state.holds_lost.clone());
        let help = "Proposals and two-phase transactions decided, by kind and outcome";
        r.register("conclave_decisions", help, state.decisions.clone());
        let help = "On the node serving it: time a lock, semaphore or election acquire queued before its grant";
        let waits = state.acquire_wait_seconds.clone();
        r.register("conclave_acquire_wait_seconds", help, waits);
    }

    fn register_watch(&mut self) {
        let (r, watch) = (&mut self.registry, &self.watch);
        let help = "Watch streams this node serves now";
        r.register("conclave_watchers", help, watch.watchers.clone());
        let help = "Events this node sent to watchers";
        r.register(
            "conclave_watch_events_sent",
            help,
            watch.events_sent.clone(),
        );
        let help = "Watchers sent `lagged` and disconnected for falling behind";
        r.register("conclave_watch_lagged", help, watch.lagged.clone());
        let help = "Watches refused 410 compacted (asked for history no longer retained)";
        r.register("conclave_watch_compacted", help, watch.compacted.clone());
        let help = "The oldest command index a watch can start from on this node";
        r.register(
            "conclave_watch_oldest_index",
            help,
            watch.oldest_index.clone(),
        );
    }

    /// Every series of the small fixed label sets, at zero, so each shows (and
    /// `rate()` works) before its first event.
    fn zeros(&self) {
        let state = &self.state;
        for primitive in ["lock", "semaphore", "election"] {
            let labels = PrimitiveLabels { primitive };
            drop(state.acquire_wait_seconds.get_or_create(&labels));
            for reason in ["session_expired", "session_ended"] {
                let labels = LostLabels { primitive, reason };
                drop(state.holds_lost.get_or_create(&labels));
            }
        }
        let decisions = [
            ("proposal", "accepted"),
            ("proposal", "rejected"),
            ("proposal", "expired"),
            ("2pc", "committed"),
            ("2pc", "aborted"),
        ];
        for (kind, outcome) in decisions {
            let labels = DecisionLabels { kind, outcome };
            drop(state.decisions.get_or_create(&labels));
        }
    }

    /// The Prometheus text of every metric as they stand.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

/// Brings `counter` up to `total`, a count kept elsewhere that only grows (a
/// `Counter` only goes up; call it under [`Metrics::scrape`]).
pub fn catch_up(counter: &Counter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

/// A position or count as a gauge value.
pub fn level(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_their_total_suffix_and_families_encode_their_labels() {
        let metrics = Metrics::new();
        metrics.proposer.batches.inc();
        metrics
            .http
            .requests
            .get_or_create(&RequestLabels {
                method: "GET",
                route: "/v1/kv/{*key}",
                status: 200,
            })
            .inc();
        let text = metrics.encode();
        assert!(
            text.contains("# TYPE conclave_proposer_batches_total counter"),
            "{text}"
        );
        assert!(
            text.contains("\nconclave_proposer_batches_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"conclave_http_requests_total{method="GET",route="/v1/kv/{*key}",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE conclave_raft_term gauge"), "{text}");
    }

    #[test]
    fn catch_up_follows_a_total_kept_elsewhere() {
        let counter = Counter::default();
        catch_up(&counter, 5);
        catch_up(&counter, 5);
        catch_up(&counter, 7);
        assert_eq!(counter.get(), 7);
    }
}
