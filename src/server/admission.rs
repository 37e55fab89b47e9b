//! Admission control: what a node refuses at once (`429` with `Retry-After`)
//! rather than queue.
//!
//! Three bounds, each answered before any work is queued:
//! - **in-flight forwards**: a follower forwards at most
//!   `limits.max_inflight_forwards` requests to the leader at once; past it a
//!   request is `429 overloaded` (it was not sent, so not applied);
//! - **the write and read queues** (`max_queued_commands`, `max_queued_reads`,
//!   enforced by `replica::proposer` and `replica::read_index`): a full queue is
//!   `429 overloaded`, and the queue behind the leader's in-flight batches
//!   (`max_inflight_batches` × `max_batch_commands`, the apply backlog) is bounded
//!   by them;
//! - **a rate per token subject** (`[admission] rate_per_subject`, off by
//!   default): a token bucket per subject on this node; past it `429
//!   rate_limited` with the seconds until the next request would be admitted.
//!   `admin` is never rate-limited, so an operator can always reach the cluster.
//!
//! Owns only node-local counters (never replicated state); reads the monotonic
//! clock, which is fine here: nothing of it reaches the state machine. Must not
//! depend on Raft, storage or `transport`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;
use crate::config::AdmissionSettings;
use crate::limits::{Limits, MAX_RATE_SUBJECTS};

/// See the module doc. One per node (`App::admission`).
pub struct Admission {
    forwards: Arc<Semaphore>,
    max_forwards: usize,
    rate: Option<SubjectRate>,
    /// Requests this node refused with 429 here (forwards and rate), for `/metrics`.
    refused: AtomicU64,
}

impl Admission {
    pub fn new(limits: &Limits, settings: &AdmissionSettings) -> Self {
        Self {
            forwards: Arc::new(Semaphore::new(limits.max_inflight_forwards)),
            max_forwards: limits.max_inflight_forwards,
            rate: settings
                .rate_per_subject
                .map(|per_s| SubjectRate::new(per_s, settings.burst(per_s))),
            refused: AtomicU64::new(0),
        }
    }

    /// A place among the in-flight forwards, held until the leader answered.
    pub fn forward_permit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.forwards.clone().try_acquire_owned().map_err(|_| {
            self.refused.fetch_add(1, Ordering::Relaxed);
            ApiError::Overloaded(format!(
                "this node is already forwarding {} requests to the leader; \
                 retry, or send to the leader",
                self.max_forwards
            ))
        })
    }

    /// Requests being forwarded to the leader now.
    pub fn forwards_inflight(&self) -> usize {
        self.max_forwards - self.forwards.available_permits()
    }

    /// Requests refused here with 429 since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Counts one request of `subject` against its rate (if a rate is set).
    pub fn charge(&self, subject: &str) -> Result<(), ApiError> {
        let Some(rate) = &self.rate else {
            return Ok(());
        };
        rate.charge(subject, Instant::now()).map_err(|wait| {
            self.refused.fetch_add(1, Ordering::Relaxed);
            let retry_after_s = wait.as_secs_f64().ceil().max(1.0) as u64;
            ApiError::RateLimited {
                message: format!(
                    "{subject:?} is over its rate of {} requests per second on this node",
                    rate.per_s
                ),
                retry_after_s,
            }
        })
    }
}

/// Token buckets by subject.
struct SubjectRate {
    per_s: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refilled(self, now: Instant, per_s: f64, burst: f64) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * per_s).min(burst)
    }
}

impl SubjectRate {
    fn new(per_s: f64, burst: f64) -> Self {
        Self {
            per_s,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token of `subject`'s bucket, or says how long until one is there.
    fn charge(&self, subject: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(subject) && buckets.len() >= MAX_RATE_SUBJECTS {
            // Full: forget the buckets that have refilled (they hold no debt), and if
            // every one is in debt, one of them. Bounded by MAX_RATE_SUBJECTS.
            let (per_s, burst) = (self.per_s, self.burst);
            buckets.retain(|_, bucket| bucket.refilled(now, per_s, burst) < burst);
            if buckets.len() >= MAX_RATE_SUBJECTS {
                if let Some(any) = buckets.keys().next().cloned() {
                    buckets.remove(&any);
                }
            }
        }
        let bucket = buckets.entry(subject.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let tokens = bucket.refilled(now, self.per_s, self.burst);
        if tokens >= 1.0 {
            *bucket = Bucket {
                tokens: tokens - 1.0,
                at: now,
            };
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - tokens) / self.per_s))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_gets_its_burst_then_one_request_per_interval() {
        let rate = SubjectRate::new(2.0, 3.0);
        let start = Instant::now();
        for _ in 0..3 {
            assert!(rate.charge("alice", start).is_ok());
        }
        let wait = rate.charge("alice", start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Another subject has its own bucket.
        assert!(rate.charge("bob", start).is_ok());
        // Half a second later one token is back, and only one.
        let later = start + Duration::from_millis(500);
        assert!(rate.charge("alice", later).is_ok());
        assert!(rate.charge("alice", later).is_err());
        // Refilling stops at the burst.
        let much_later = later + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(rate.charge("alice", much_later).is_ok());
        }
        assert!(rate.charge("alice", much_later).is_err());
    }

    #[test]
    fn the_buckets_stay_bounded_however_many_subjects_come() {
        let rate = SubjectRate::new(0.001, 1.0);
        let now = Instant::now();
        for i in 0..MAX_RATE_SUBJECTS + 10 {
            assert!(rate.charge(&format!("s{i}"), now).is_ok());
        }
        assert!(rate.buckets.lock().unwrap().len() <= MAX_RATE_SUBJECTS);
    }

    #[test]
    fn forwards_past_the_limit_are_refused_and_a_finished_one_frees_its_place() {
        let limits = Limits {
            max_inflight_forwards: 2,
            ..Limits::default()
        };
        let admission = Admission::new(&limits, &AdmissionSettings::default());
        let first = admission.forward_permit().unwrap();
        let _second = admission.forward_permit().unwrap();
        assert_eq!(admission.forwards_inflight(), 2);
        let refused = admission.forward_permit().unwrap_err();
        assert_eq!(refused.status(), 429);
        assert_eq!(admission.refused(), 1);
        drop(first);
        assert!(admission.forward_permit().is_ok());
        // No rate is set by default: charging never refuses.
        assert!((0..1000).all(|_| admission.charge("alice").is_ok()));
    }
}
