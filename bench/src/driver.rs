//! The closed loop shared by every workload of both systems: each client sends one
//! operation at a time until the deadline, and the latency of every successful
//! operation is kept. Owns the live progress line (one per second, to stderr) and
//! nothing about either system's protocol: an operation is an opaque future that
//! says whether it succeeded, and if not, what kind of failure it was.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Counters the clients bump as they go, read by the progress line.
#[derive(Default)]
pub struct Progress {
    ops: AtomicU64,
    errors: AtomicU64,
}

impl Progress {
    pub fn record(&self, ok: bool) {
        let counter = if ok { &self.ops } else { &self.errors };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> (u64, u64) {
        (
            self.ops.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }
}

/// Prints `label  Ns ops=… (…/s) errors=…` to stderr once a second until dropped.
pub struct ProgressLine {
    ticker: tokio::task::JoinHandle<()>,
}

impl ProgressLine {
    pub fn start(label: String, progress: Arc<Progress>) -> Self {
        let ticker = tokio::spawn(async move {
            let started = Instant::now();
            let mut interval = tokio::time::interval(Duration::from_secs(1));
            interval.tick().await;
            let mut previous = 0;
            loop {
                interval.tick().await;
                let (ops, errors) = progress.snapshot();
                eprintln!(
                    "[{label}] {:>3}s ops={ops} ({}/s) errors={errors}",
                    started.elapsed().as_secs(),
                    ops - previous
                );
                previous = ops;
            }
        });
        Self { ticker }
    }
}

impl Drop for ProgressLine {
    fn drop(&mut self) {
        self.ticker.abort();
    }
}

/// What one operation came to: success, or a short kind of failure (`http 503`,
/// `timeout`, `grpc Unavailable`, …) that the report counts by kind.
pub type Outcome = Result<(), String>;

/// Latencies and failures as they are recorded, by one client or merged.
#[derive(Default)]
pub struct Tally {
    latencies_us: Vec<u64>,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    /// Records one operation sent at `sent` and finished now.
    pub fn record(&mut self, sent: Instant, outcome: Outcome, progress: &Progress) {
        progress.record(outcome.is_ok());
        match outcome {
            Ok(()) => self.latencies_us.push(sent.elapsed().as_micros() as u64),
            Err(kind) => *self.errors.entry(kind).or_default() += 1,
        }
    }

    pub fn successes(&self) -> usize {
        self.latencies_us.len()
    }

    pub fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_default() += count;
        }
    }

    pub fn finish(mut self, elapsed: Duration) -> Measured {
        self.latencies_us.sort_unstable();
        Measured {
            latencies_us: self.latencies_us,
            errors: self.errors.values().sum(),
            error_kinds: self.errors,
            elapsed,
        }
    }
}

/// What the clients measured together.
pub struct Measured {
    /// Latencies of successful operations, in µs, sorted.
    pub latencies_us: Vec<u64>,
    pub errors: u64,
    /// Failed operations by kind.
    pub error_kinds: BTreeMap<String, u64>,
    pub elapsed: Duration,
}

/// Runs one task per client state for `duration`. `operation(state, sequence)` is
/// one operation; `sequence` counts from 1 per client. Only operations that finish
/// within the window count, so throughput is (operations in the window) / duration
/// and a slow last operation does not stretch the window.
pub async fn closed_loop<S, F, Fut>(
    states: Vec<S>,
    duration: Duration,
    progress: Arc<Progress>,
    operation: F,
) -> anyhow::Result<Measured>
where
    S: Clone + Send + Sync + 'static,
    F: Fn(S, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send,
{
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = states
        .into_iter()
        .map(|state| {
            let (operation, progress) = (operation.clone(), progress.clone());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut sequence = 0u64;
                while Instant::now() < deadline {
                    sequence += 1;
                    let sent = Instant::now();
                    let outcome = operation(state.clone(), sequence).await;
                    if Instant::now() > deadline {
                        // Finished after the window: neither counted nor timed.
                        break;
                    }
                    tally.record(sent, outcome, &progress);
                }
                tally
            })
        })
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        total.merge(task.await?);
    }
    Ok(total.finish(duration))
}
