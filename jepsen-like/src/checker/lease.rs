//! Lease checkers for the lock and semaphore workloads: how long a client may count
//! itself a holder, whether such holds ever exceed what the primitive allows, whether
//! fencing tokens are unique and ordered, and whether a fenced resource lost an update.
//!
//! # How long a hold is surely valid ([`SessionEvidence::live_until_ns`])
//!
//! A client holds a lock (or permits) from the moment its grant is acknowledged until
//! its release applies or its session ends. Every checker here uses a *sub*-interval
//! of that, built only from evidence, so a correct server can never be blamed:
//!
//! - start: the acknowledgement of the grant (the grant applied before it);
//! - end: the earliest of the release's *invocation* (the release applies after it),
//!   the `DELETE` of the session's *invocation*, the invocation of the first request
//!   answered "no such session" (only ever shortens), and the session's *surely
//!   alive until* instant below.
//!
//! The server expires a session at the first log entry whose cluster time (the
//! leader's clock at proposal, never behind the applied cluster time) is past
//! its replicated `expires_at_ms`. Cluster time follows the leader's wall clock but
//! runs at most [`SERVER_SLEW_PPM`] (1 %) faster than the leader's monotonic clock
//! however far that wall clock jumps (`src/proposer/clock.rs`), so a TTL lasts at
//! least 99 % of itself in real time; the `clock-jump` nemesis exercises exactly this. A keepalive accepted by the leader sets
//! `expires_at_ms = leader_now + ttl`, and the leader accepts it after the client
//! invoked it, on the same machine's clock; so once that renewal is *in the log*, the
//! session outlives `keepalive invoke + ttl`. The create is the same argument (its
//! cluster time is read after its invocation, and a `200` means it is in the log).
//!
//! **Why a keepalive's `200` alone is not enough (the brief's rule, adjusted).** The
//! leader answers a keepalive from memory and replicates renewals in batches: if it
//! crashes or loses leadership before its flush, the renewal is lost and the session
//! expires on the earlier schedule (docs/api.md, keepalive). Counting a hold valid
//! until `last 200 keepalive + ttl` would then blame a correct server under the kill
//! and pause nemeses. So a renewal counts only once it is **confirmed**: a
//! linearizable `GET /v1/sessions/{id}` (the replicated state) returned the session
//! live with `expires_at_ms` at least the one that keepalive was answered with. Since
//! a live session's expiry never decreases and a session never comes back, that read
//! proves the session lives until at least that expiry, hence past `invoke + ttl`.
//! Only comparisons between the server's own `expires_at_ms` values are made; the
//! intervals themselves stay on the harness's monotonic clock. The surely-alive
//! instant is `invoke + ttl × (1 − 1 %) − CLOCK_MARGIN_NS`: the 1 % is the server's
//! slew bound above, [`CLOCK_MARGIN_NS`] absorbs millisecond truncation. An expiry
//! any earlier (e.g. cluster time jumping with one node's wall clock) shows up as
//! overlapping valid holds.
//!
//! # Checkers
//!
//! - [`overlap_violations`]: at no instant may the weights of valid holds of one
//!   resource exceed its limit (1 for an exclusive lock).
//! - [`token_violations`]: acknowledged grants of one resource carry distinct tokens,
//!   and a grant acknowledged before another's first attempt was invoked has the
//!   smaller token (the server assigns tokens increasing in apply order, and such a
//!   pair was applied in that order).
//! - [`fenced_log_violations`]: the writes a resource accepted, in acceptance order,
//!   carry non-decreasing tokens, and each was computed from the value just before it
//!   (no lost update: no two accepted read-modify-write sections overlapped).
//! - [`lock_view_violations`] / [`semaphore_view_violations`]: one server snapshot of
//!   a primitive is self-consistent (one exclusive holder; permits within the limit,
//!   `used` their sum, tokens distinct).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};

use crate::workloads::{Check, CheckVerdict};

/// Absorbs the millisecond truncation of the server's `expires_at_ms` (expiry at
/// cluster time ≥ `expires_at_ms`: at most 1 ms early) and a slewing wall clock
/// against the monotonic one (≤ 500 ppm: 1 ms over a 2 s TTL).
pub const CLOCK_MARGIN_NS: u64 = 5_000_000;

/// How much faster than real time the server's cluster time may run, in parts per
/// million: mirrors conclave's `replica::clock::MAX_SLEW_PPM` (the harness does not
/// link the server crate). A TTL may end this fraction of itself early.
pub const SERVER_SLEW_PPM: u64 = 10_000;

/// What a client learned about one of its sessions.
#[derive(Debug, Clone, Serialize)]
pub struct SessionEvidence {
    pub session: u64,
    pub ttl_ms: u64,
    /// Invocation of the create that answered `200`.
    pub created_invoke_ns: u64,
    /// Keepalives answered `200`: (invocation, `expires_at_ms` in the answer).
    pub renewals: Vec<(u64, u64)>,
    /// The largest `expires_at_ms` a linearizable read of the session returned.
    pub read_expiry_ms: Option<u64>,
    /// The earliest invocation after which the session may be gone: its `DELETE`, or
    /// a request answered `session_not_found`.
    pub gone_ns: Option<u64>,
}

impl SessionEvidence {
    pub fn new(session: u64, ttl_ms: u64, created_invoke_ns: u64) -> SessionEvidence {
        SessionEvidence {
            session,
            ttl_ms,
            created_invoke_ns,
            renewals: Vec::new(),
            read_expiry_ms: None,
            gone_ns: None,
        }
    }

    /// Records that the session may be gone after `at_ns` (keeps the earliest).
    pub fn gone(&mut self, at_ns: u64) {
        self.gone_ns = Some(self.gone_ns.map_or(at_ns, |g| g.min(at_ns)));
    }

    /// Records a linearizable read of the session answering `expires_at_ms`.
    pub fn read_expiry(&mut self, expires_at_ms: u64) {
        self.read_expiry_ms = Some(
            self.read_expiry_ms
                .map_or(expires_at_ms, |e| e.max(expires_at_ms)),
        );
    }

    /// Until when (harness clock) the session surely lived, from confirmed renewals
    /// only (see the module documentation), cut at [`Self::gone_ns`].
    pub fn live_until_ns(&self) -> u64 {
        let ttl_ns = self.ttl_ms * 1_000_000;
        let mut base = self.created_invoke_ns;
        if let Some(read) = self.read_expiry_ms {
            for &(invoke_ns, expires_at_ms) in &self.renewals {
                if expires_at_ms <= read {
                    base = base.max(invoke_ns);
                }
            }
        }
        let slew_ns = ttl_ns / 1_000_000 * SERVER_SLEW_PPM;
        let until = (base + ttl_ns).saturating_sub(slew_ns + CLOCK_MARGIN_NS);
        self.gone_ns.map_or(until, |gone| until.min(gone))
    }
}

/// A hold a client may count as valid over `[start_ns, end_ns)`.
#[derive(Debug, Clone, Serialize)]
pub struct Hold {
    pub resource: String,
    pub process: u64,
    pub session: u64,
    pub token: u64,
    pub weight: u64,
    pub start_ns: u64,
    pub end_ns: u64,
    /// The end is the session's surely-alive instant, not the release.
    pub ended_by_lease: bool,
}

/// An acknowledged grant.
#[derive(Debug, Clone, Serialize)]
pub struct Grant {
    pub resource: String,
    pub process: u64,
    pub session: u64,
    pub token: u64,
    /// The invocation of the first acquire that may have made this grant: a retry
    /// after a `503` resumes a waiter an earlier attempt queued, and can be answered
    /// with a grant made before the retry was invoked.
    pub invoke_ns: u64,
    pub ack_ns: u64,
}

/// A write a fenced resource accepted (in acceptance order).
#[derive(Debug, Clone, Serialize)]
pub struct ResourceWrite {
    pub process: u64,
    pub token: u64,
    /// The counter the section read (under the same token).
    pub read: u64,
    /// The counter it wrote (`read + 1`).
    pub wrote: u64,
    pub at_ns: u64,
}

/// Instants at which the valid holds of one resource weigh more than `limit`; each
/// witness lists the holds valid at that instant.
pub fn overlap_violations(holds: &[Hold], limit: u64) -> Vec<Value> {
    let mut by_resource: BTreeMap<&str, Vec<&Hold>> = BTreeMap::new();
    for hold in holds.iter().filter(|h| h.start_ns < h.end_ns) {
        by_resource.entry(&hold.resource).or_default().push(hold);
    }
    let mut violations = Vec::new();
    for (resource, holds) in by_resource {
        // Half-open intervals: at equal instants an end comes before a start.
        let mut events: Vec<(u64, bool, usize)> = Vec::new();
        for (i, hold) in holds.iter().enumerate() {
            events.push((hold.start_ns, true, i));
            events.push((hold.end_ns, false, i));
        }
        events.sort_by_key(|&(at, is_start, i)| (at, is_start, i));
        let mut active: Vec<usize> = Vec::new();
        let mut weight = 0u64;
        for (at, is_start, i) in events {
            if is_start {
                active.push(i);
                weight += holds[i].weight;
                if weight > limit {
                    violations.push(json!({
                        "resource": resource,
                        "at_ns": at,
                        "weight": weight,
                        "limit": limit,
                        "holds": active.iter().map(|&a| holds[a]).collect::<Vec<_>>(),
                    }));
                }
            } else {
                active.retain(|&a| a != i);
                weight -= holds[i].weight;
            }
        }
    }
    violations
}

/// The largest weight of valid holds of one resource at any instant (coverage: a
/// limit check that never saw the limit reached proves little).
pub fn peak_weight(holds: &[Hold]) -> u64 {
    let mut events: Vec<(&str, u64, bool, u64)> = Vec::new();
    for hold in holds.iter().filter(|h| h.start_ns < h.end_ns) {
        events.push((&hold.resource, hold.start_ns, true, hold.weight));
        events.push((&hold.resource, hold.end_ns, false, hold.weight));
    }
    // Per resource, by time; at equal instants an end comes before a start.
    events.sort_by_key(|&(resource, at, is_start, _)| (resource, at, is_start));
    let (mut peak, mut weight) = (0, 0);
    for (_, _, is_start, w) in events {
        if is_start {
            weight += w;
            peak = peak.max(weight);
        } else {
            weight -= w;
        }
    }
    peak
}

/// How tight the exclusion check was: per kind of handover (`"release"`, or
/// `"lease"` when the earlier hold ended with its session's surely-alive instant),
/// the smallest gap in ms between a valid hold's end and the next valid hold's start
/// on the same resource (negative: an overlap), and how many handovers there were.
pub fn handover_gaps(holds: &[Hold]) -> Value {
    let mut by_resource: BTreeMap<&str, Vec<&Hold>> = BTreeMap::new();
    for hold in holds.iter().filter(|h| h.start_ns < h.end_ns) {
        by_resource.entry(&hold.resource).or_default().push(hold);
    }
    let mut gaps: BTreeMap<&str, (usize, Option<f64>)> = BTreeMap::new();
    for holds in by_resource.values_mut() {
        holds.sort_by_key(|h| h.start_ns);
        for pair in holds.windows(2) {
            let gap_ms = (pair[1].start_ns as f64 - pair[0].end_ns as f64) / 1e6;
            let kind = if pair[0].ended_by_lease {
                "lease"
            } else {
                "release"
            };
            let entry = gaps.entry(kind).or_insert((0, None));
            entry.0 += 1;
            entry.1 = Some(entry.1.map_or(gap_ms, |g: f64| g.min(gap_ms)));
        }
    }
    gaps.into_iter()
        .map(|(kind, (n, min))| {
            (
                kind.to_string(),
                json!({ "handovers": n, "closest_ms": min }),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Duplicate tokens among grants of one resource, and pairs where a grant
/// acknowledged before another was invoked has a token not smaller than it.
pub fn token_violations(grants: &[Grant]) -> Vec<Value> {
    let mut by_resource: BTreeMap<&str, Vec<&Grant>> = BTreeMap::new();
    for grant in grants {
        by_resource.entry(&grant.resource).or_default().push(grant);
    }
    let mut violations = Vec::new();
    for (resource, mut grants) in by_resource {
        let mut by_token: BTreeMap<u64, Vec<&Grant>> = BTreeMap::new();
        for grant in &grants {
            by_token.entry(grant.token).or_default().push(grant);
        }
        for (token, same) in by_token.into_iter().filter(|(_, same)| same.len() > 1) {
            violations.push(json!({
                "resource": resource,
                "kind": "duplicate token",
                "token": token,
                "grants": same,
            }));
        }
        grants.sort_by_key(|g| g.ack_ns);
        // prefix_max[i]: the grant with the largest token among grants[..=i].
        let mut prefix_max: Vec<usize> = Vec::with_capacity(grants.len());
        for i in 0..grants.len() {
            let best = match prefix_max.last() {
                Some(&b) if grants[b].token >= grants[i].token => b,
                _ => i,
            };
            prefix_max.push(best);
        }
        for later in &grants {
            let before = grants.partition_point(|g| g.ack_ns < later.invoke_ns);
            if before == 0 {
                continue;
            }
            let earlier = grants[prefix_max[before - 1]];
            if earlier.token > later.token {
                violations.push(json!({
                    "resource": resource,
                    "kind": "token not increasing in real-time order",
                    "earlier": earlier,
                    "later": later,
                }));
            }
        }
    }
    violations
}

/// Lost updates and token regressions in a fenced resource's accepted writes.
pub fn fenced_log_violations(
    resource: &str,
    accepted: &[ResourceWrite],
    final_counter: u64,
) -> Vec<Value> {
    let mut violations = Vec::new();
    let mut counter = 0u64;
    let mut highest: Option<&ResourceWrite> = None;
    for write in accepted {
        if write.read != counter {
            violations.push(json!({
                "resource": resource,
                "kind": "lost update",
                "write": write,
                "counter_before": counter,
            }));
        }
        if let Some(previous) = highest {
            if write.token < previous.token {
                violations.push(json!({
                    "resource": resource,
                    "kind": "token went back",
                    "write": write,
                    "after": previous,
                }));
            }
        }
        if highest.is_none_or(|h| write.token >= h.token) {
            highest = Some(write);
        }
        counter = write.wrote;
    }
    if final_counter != accepted.len() as u64 {
        violations.push(json!({
            "resource": resource,
            "kind": "final counter is not the number of accepted increments",
            "final_counter": final_counter,
            "accepted_increments": accepted.len(),
        }));
    }
    violations
}

/// One `GET /v1/locks/{name}` answer: at most one holder, and exclusive.
pub fn lock_view_violations(name: &str, at_ns: u64, view: &Value) -> Option<Value> {
    let holders = view["holders"].as_array()?;
    let exclusive = holders.iter().filter(|h| h["mode"] == "exclusive").count();
    (holders.len() > 1 && exclusive > 0).then(|| {
        json!({ "resource": name, "at_ns": at_ns, "kind": "several holders of an exclusive lock", "view": view })
    })
}

/// One `GET /v1/semaphores/{name}` answer: permits within `limit`, `used` their sum,
/// distinct tokens, and the limit the workload uses (or 0 when idle).
pub fn semaphore_view_violations(
    name: &str,
    at_ns: u64,
    view: &Value,
    limit: u64,
) -> Option<Value> {
    let holders = view["holders"].as_array()?;
    let sum: u64 = holders.iter().filter_map(|h| h["permits"].as_u64()).sum();
    let mut tokens: Vec<u64> = holders
        .iter()
        .filter_map(|h| h["fencing_token"].as_u64())
        .collect();
    tokens.sort_unstable();
    let duplicate = tokens.windows(2).any(|w| w[0] == w[1]);
    let view_limit = view["limit"].as_u64();
    let mut problems = Vec::new();
    if sum > limit {
        problems.push("holders' permits exceed the limit");
    }
    if view["used"].as_u64() != Some(sum) {
        problems.push("`used` is not the sum of the holders' permits");
    }
    if duplicate {
        problems.push("two holders share a fencing token");
    }
    if !holders.is_empty() && view_limit != Some(limit) {
        problems.push("the semaphore's limit is not the workload's");
    }
    (!problems.is_empty())
        .then(|| json!({ "resource": name, "at_ns": at_ns, "kind": problems, "view": view }))
}

/// A check from its violations, with `counts` (coverage) in the detail either way.
pub fn check(name: &str, what: &str, violations: Vec<Value>, counts: Value) -> Check {
    let n = violations.len();
    let (verdict, summary) = if n == 0 {
        (CheckVerdict::Pass, format!("no {what}"))
    } else {
        (CheckVerdict::Fail, format!("{n} {what}"))
    };
    let shown: Vec<Value> = violations.into_iter().take(20).collect();
    Check::new(
        name,
        verdict,
        summary,
        json!({ "counts": counts, "violations": shown }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(resource: &str, session: u64, weight: u64, start_ms: u64, end_ms: u64) -> Hold {
        Hold {
            resource: resource.into(),
            process: session,
            session,
            token: session,
            weight,
            start_ns: start_ms * 1_000_000,
            end_ns: end_ms * 1_000_000,
            ended_by_lease: false,
        }
    }

    fn grant(resource: &str, token: u64, invoke_ms: u64, ack_ms: u64) -> Grant {
        Grant {
            resource: resource.into(),
            process: token,
            session: token,
            token,
            invoke_ns: invoke_ms * 1_000_000,
            ack_ns: ack_ms * 1_000_000,
        }
    }

    fn write(token: u64, read: u64) -> ResourceWrite {
        ResourceWrite {
            process: 0,
            token,
            read,
            wrote: read + 1,
            at_ns: 0,
        }
    }

    #[test]
    fn a_session_counts_only_confirmed_renewals() {
        let mut s = SessionEvidence::new(7, 2_000, 1_000_000_000);
        // 1 % of the 2 s TTL: the server's slew bound.
        let slew = 20_000_000;
        let created = 1_000_000_000 + 2_000_000_000 - slew - CLOCK_MARGIN_NS;
        assert_eq!(s.live_until_ns(), created);
        // Two renewals answered, not yet read back: not counted.
        s.renewals.push((1_500_000_000, 10_500));
        s.renewals.push((2_000_000_000, 11_000));
        assert_eq!(s.live_until_ns(), created);
        // A read shows the first one replicated (the second was lost with its leader).
        s.read_expiry(10_700);
        assert_eq!(s.live_until_ns(), 3_500_000_000 - slew - CLOCK_MARGIN_NS);
        s.read_expiry(11_000);
        assert_eq!(s.live_until_ns(), 4_000_000_000 - slew - CLOCK_MARGIN_NS);
        // Evidence it is gone only shortens.
        s.gone(3_000_000_000);
        s.gone(3_200_000_000);
        assert_eq!(s.live_until_ns(), 3_000_000_000);
    }

    #[test]
    fn overlapping_exclusive_holds_are_caught_and_touching_ones_are_not() {
        let ok = [
            hold("a", 1, 1, 0, 10),
            hold("a", 2, 1, 10, 20),
            hold("b", 3, 1, 5, 15),
        ];
        assert!(overlap_violations(&ok, 1).is_empty());
        let bad = [hold("a", 1, 1, 0, 10), hold("a", 2, 1, 9, 20)];
        let v = overlap_violations(&bad, 1);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0]["holds"].as_array().unwrap().len(), 2);
        // Empty intervals (a grant acknowledged after its session surely ended) hold nothing.
        let empty = [hold("a", 1, 1, 0, 10), hold("a", 2, 1, 12, 5)];
        assert!(overlap_violations(&empty, 1).is_empty());
    }

    #[test]
    fn weighted_holds_respect_the_limit() {
        let ok = [
            hold("s", 1, 2, 0, 10),
            hold("s", 2, 1, 0, 10),
            hold("s", 3, 2, 10, 20),
        ];
        assert!(overlap_violations(&ok, 3).is_empty());
        assert_eq!(peak_weight(&ok), 3);
        let bad = [
            hold("s", 1, 2, 0, 10),
            hold("s", 2, 1, 0, 10),
            hold("s", 3, 1, 9, 20),
            hold("t", 4, 2, 9, 20),
        ];
        assert_eq!(overlap_violations(&bad, 3).len(), 1);
        assert_eq!(peak_weight(&bad), 4);
    }

    #[test]
    fn tokens_must_be_unique_and_follow_real_time() {
        let ok = [
            grant("a", 10, 0, 5),
            grant("a", 8, 1, 6),
            grant("a", 12, 7, 9),
        ];
        assert!(
            token_violations(&ok).is_empty(),
            "{:?}",
            token_violations(&ok)
        );
        let duplicate = [
            grant("a", 10, 0, 5),
            grant("a", 10, 6, 9),
            grant("b", 10, 0, 1),
        ];
        let v = token_violations(&duplicate);
        assert!(v.iter().any(|v| v["kind"] == "duplicate token"), "{v:?}");
        let backwards = [grant("a", 10, 0, 5), grant("a", 9, 6, 9)];
        let v = token_violations(&backwards);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0]["earlier"]["token"], 10);
    }

    #[test]
    fn a_lost_update_and_a_token_regression_are_caught() {
        let serial = [write(5, 0), write(5, 1), write(9, 2)];
        assert!(fenced_log_violations("r", &serial, 3).is_empty());
        // Two sections read 1; the stalled one (token 5) wrote after token 9.
        let lost = [write(5, 0), write(9, 1), write(5, 1)];
        let v = fenced_log_violations("r", &lost, 2);
        let kinds: Vec<&str> = v.iter().filter_map(|v| v["kind"].as_str()).collect();
        assert!(kinds.contains(&"lost update"), "{kinds:?}");
        assert!(kinds.contains(&"token went back"), "{kinds:?}");
        assert!(kinds.contains(&"final counter is not the number of accepted increments"));
    }

    #[test]
    fn server_views_are_judged() {
        let one = json!({"holders": [{"mode": "exclusive", "session_id": 1, "fencing_token": 3}]});
        assert!(lock_view_violations("l", 0, &one).is_none());
        let two = json!({"holders": [{"mode": "exclusive"}, {"mode": "exclusive"}]});
        assert!(lock_view_violations("l", 0, &two).is_some());
        let fine = json!({"limit": 3, "used": 3, "holders": [
            {"permits": 2, "fencing_token": 4}, {"permits": 1, "fencing_token": 5}]});
        assert!(semaphore_view_violations("s", 0, &fine, 3).is_none());
        let over = json!({"limit": 3, "used": 4, "holders": [
            {"permits": 2, "fencing_token": 4}, {"permits": 2, "fencing_token": 4}]});
        let v = semaphore_view_violations("s", 0, &over, 3).unwrap();
        assert_eq!(v["kind"].as_array().unwrap().len(), 2);
        let idle = json!({"limit": 0, "used": 0, "holders": []});
        assert!(semaphore_view_violations("s", 0, &idle, 3).is_none());
    }
}
