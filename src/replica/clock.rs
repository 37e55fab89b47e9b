//! The leader's clock: the time this node stamps on what it proposes while it leads
//! (batches, ticks, accepted keepalives).
//!
//! One node's wall clock must not be able to move cluster time by more than a small
//! rate (issue #10, bug 6): the state machine keeps `max(cluster time, stamp)`, so
//! a stamp an hour ahead would expire every session and lease at once, for good.
//! The rule ([`next_time_us`]) bounds each new reading by the monotonic time
//! elapsed since the previous one (TigerBeetle's cluster time does the same):
//!
//! `reading = max(applied, clamp(wall, last + elapsed - slew, last + elapsed + slew))`
//!
//! where `last` is the previous reading or the latest cluster time this node
//! observed being applied (whichever projects later), `elapsed` the monotonic time
//! since then, and `slew = elapsed * MAX_SLEW_PPM / 10^6` (1 %). A wall clock that
//! is ahead pulls cluster time forward at 101 % of real time at most (a small loss
//! at a failover is absorbed in seconds; an hour's jump would take 100 hours, and
//! a TTL never ends more than 1 % early); one that is behind holds it back to
//! 99 % (expiry only gets later, and never stops). The very first reading of a
//! cluster (cluster time 0) takes the wall clock. A node with no reading and no
//! observation yet resumes from the applied cluster time, so after a whole-cluster
//! outage cluster time goes on from where it stopped (TTLs are durations; nothing
//! expires because the cluster was down).
//!
//! It owns: the anchor (last reading or observation and its monotonic instant), the
//! test-only wall-clock offset (`[debug] clock_offset_endpoint`), and the warning
//! when the wall clock and the reading disagree. It must not be read by the state
//! machine (`src/sm` takes the stamp from the log) and depends on nothing but std
//! and `tracing`; time comes through a [`TimeSource`] so the rule is unit-tested
//! without a real clock.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The most cluster time may run faster or slower than the leader's monotonic
/// clock, in parts per million of the elapsed time (10,000 = 1 %). Not a tunable:
/// it is what bounds how early a TTL can end when a leader's wall clock is ahead.
pub const MAX_SLEW_PPM: u64 = 10_000;
/// A reading this far from the (offset) wall clock logs a warning.
pub const WARN_DIFFERENCE_MS: u64 = 1_000;
/// At most one such warning per this much monotonic time.
pub const WARN_INTERVAL_MS: u64 = 60_000;
/// The largest test-only offset `POST /v1/debug/clock` accepts (either sign).
pub const MAX_DEBUG_OFFSET_MS: i64 = 10 * 365 * 24 * 60 * 60 * 1000;

/// Where readings come from: the wall clock (µs since the Unix epoch) and a
/// monotonic clock (µs since an arbitrary start; never goes back).
pub trait TimeSource: Send + Sync + 'static {
    fn wall_us(&self) -> u64;
    fn monotonic_us(&self) -> u64;
}

/// The real clocks: `SystemTime` and `Instant`.
pub struct SystemClocks {
    start: Instant,
}

impl Default for SystemClocks {
    fn default() -> Self {
        Self {
            start: Instant::now(),
        }
    }
}

impl TimeSource for SystemClocks {
    fn wall_us(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
    }

    fn monotonic_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
}

/// A cluster time (`time_us`) and the monotonic instant it held at (`at_us`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    pub time_us: u64,
    pub at_us: u64,
}

impl Anchor {
    /// Where this anchor puts cluster time at monotonic `now_us`, at 100 % rate.
    fn projected_us(self, now_us: u64) -> u64 {
        self.time_us
            .saturating_add(now_us.saturating_sub(self.at_us))
    }
}

/// The rule: the next reading from the previous `anchor`, the wall clock, the
/// monotonic now and the applied cluster time (`floor_us`). Pure.
pub fn next_time_us(anchor: Option<Anchor>, wall_us: u64, now_us: u64, floor_us: u64) -> u64 {
    let bounded = match anchor {
        // The first reading of a new cluster.
        None if floor_us == 0 => wall_us,
        // Nothing observed since this process started: resume where the log stopped.
        None => floor_us,
        Some(anchor) => {
            let elapsed = now_us.saturating_sub(anchor.at_us);
            let projected = anchor.projected_us(now_us);
            let slew = (u128::from(elapsed) * u128::from(MAX_SLEW_PPM) / 1_000_000) as u64;
            wall_us.clamp(
                projected.saturating_sub(slew).max(anchor.time_us),
                projected.saturating_add(slew),
            )
        }
    };
    bounded.max(floor_us)
}

/// The anchor after observing cluster time `time_us` applied at monotonic `at_us`:
/// whichever of the two projects later.
pub fn observe_anchor(anchor: Option<Anchor>, time_us: u64, at_us: u64) -> Anchor {
    let observed = Anchor { time_us, at_us };
    match anchor {
        Some(anchor) if anchor.projected_us(at_us) >= time_us => anchor,
        _ => observed,
    }
}

#[derive(Default)]
struct ClockState {
    anchor: Option<Anchor>,
    last_warning_us: Option<u64>,
}

/// The test-only offset endpoint is off on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OffsetError {
    #[error("the debug clock offset is disabled on this node")]
    Disabled,
    #[error("the offset is at most {MAX_DEBUG_OFFSET_MS} ms either way")]
    TooLarge,
}

/// This node's leader clock. Share it (`Arc`); every reading is monotonic.
pub struct LeaderClock {
    source: Box<dyn TimeSource>,
    offset_settable: bool,
    offset_ms: AtomicI64,
    /// `[debug] inject_bug = "unbounded-clock"`: readings follow the wall clock
    /// wherever it jumps (the behaviour of issue #10, bug 6), so the chaos harness
    /// can prove its lease checkers see early expiry.
    unbounded_bug: bool,
    state: Mutex<ClockState>,
}

impl LeaderClock {
    /// The real clocks; `offset_settable` is `[debug] clock_offset_endpoint`.
    pub fn new(offset_settable: bool) -> Self {
        Self::with_source(Box::new(SystemClocks::default()), offset_settable)
    }

    pub fn with_source(source: Box<dyn TimeSource>, offset_settable: bool) -> Self {
        Self {
            source,
            offset_settable,
            offset_ms: AtomicI64::new(0),
            unbounded_bug: false,
            state: Mutex::new(ClockState::default()),
        }
    }

    /// Plants the test-only unbounded-clock bug (see the field).
    pub fn with_unbounded_bug(mut self, planted: bool) -> Self {
        self.unbounded_bug = planted;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClockState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The wall clock plus the test-only offset, in µs since the epoch.
    fn wall_us(&self) -> u64 {
        let offset_us = self.offset_ms.load(Ordering::Relaxed).saturating_mul(1000);
        self.source.wall_us().saturating_add_signed(offset_us)
    }

    /// The wall clock this node reads (offset included), in ms since the epoch.
    pub fn wall_ms(&self) -> u64 {
        self.wall_us() / 1000
    }

    /// The leader's time now, never behind `applied_ms` (the applied cluster time)
    /// nor behind any earlier reading.
    pub fn now_ms(&self, applied_ms: u64) -> u64 {
        let mut state = self.lock();
        let wall_us = self.wall_us();
        let now_us = self.source.monotonic_us();
        let time_us = if crate::config::TEST_SWITCHES_BUILT && self.unbounded_bug {
            let last_us = state.anchor.map_or(0, |anchor| anchor.time_us);
            wall_us.max(applied_ms * 1000).max(last_us)
        } else {
            next_time_us(state.anchor, wall_us, now_us, applied_ms * 1000)
        };
        state.anchor = Some(Anchor {
            time_us,
            at_us: now_us,
        });
        let difference_ms = wall_us.abs_diff(time_us) / 1000;
        let warn_due = state
            .last_warning_us
            .is_none_or(|at| now_us.saturating_sub(at) >= WARN_INTERVAL_MS * 1000);
        if difference_ms > WARN_DIFFERENCE_MS && warn_due {
            state.last_warning_us = Some(now_us);
            let direction = if wall_us > time_us {
                "ahead of"
            } else {
                "behind"
            };
            tracing::warn!(
                wall_ms = wall_us / 1000,
                leader_time_ms = time_us / 1000,
                difference_ms,
                "this node's wall clock is {direction} cluster time; cluster time follows it \
                 at most {} % faster or slower than the monotonic clock",
                MAX_SLEW_PPM as f64 / 10_000.0
            );
        }
        time_us / 1000
    }

    /// Records that cluster time `cluster_time_ms` was applied just now (a new
    /// leader continues from it plus the monotonic time since).
    pub fn observe(&self, cluster_time_ms: u64) {
        if cluster_time_ms == 0 {
            return;
        }
        let mut state = self.lock();
        let at_us = self.source.monotonic_us();
        state.anchor = Some(observe_anchor(state.anchor, cluster_time_ms * 1000, at_us));
    }

    pub fn offset_settable(&self) -> bool {
        self.offset_settable
    }

    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }

    /// Sets the test-only offset added to this node's wall clock.
    pub fn set_offset_ms(&self, offset_ms: i64) -> Result<(), OffsetError> {
        if !self.offset_settable {
            return Err(OffsetError::Disabled);
        }
        if offset_ms.unsigned_abs() > MAX_DEBUG_OFFSET_MS.unsigned_abs() {
            return Err(OffsetError::TooLarge);
        }
        self.offset_ms.store(offset_ms, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    const HOUR_MS: u64 = 60 * 60 * 1000;
    const EPOCH_MS: u64 = 1_700_000_000_000;

    /// Clocks the test moves by hand.
    #[derive(Default)]
    struct Manual {
        wall_us: AtomicU64,
        monotonic_us: AtomicU64,
    }

    impl Manual {
        /// Real time passes: both clocks move by `ms`.
        fn advance(&self, ms: u64) {
            self.wall_us.fetch_add(ms * 1000, Ordering::Relaxed);
            self.monotonic_us.fetch_add(ms * 1000, Ordering::Relaxed);
        }
    }

    impl TimeSource for Arc<Manual> {
        fn wall_us(&self) -> u64 {
            self.wall_us.load(Ordering::Relaxed)
        }
        fn monotonic_us(&self) -> u64 {
            self.monotonic_us.load(Ordering::Relaxed)
        }
    }

    fn clock(settable: bool) -> (Arc<Manual>, LeaderClock) {
        let manual = Arc::new(Manual::default());
        manual.wall_us.store(EPOCH_MS * 1000, Ordering::Relaxed);
        (
            manual.clone(),
            LeaderClock::with_source(Box::new(manual), settable),
        )
    }

    #[test]
    fn the_first_reading_of_a_new_cluster_is_the_wall_clock() {
        let (_, clock) = clock(false);
        assert_eq!(clock.now_ms(0), EPOCH_MS);
    }

    #[test]
    fn with_a_correct_wall_clock_readings_follow_it() {
        let (manual, clock) = clock(false);
        let mut applied = clock.now_ms(0);
        for step in 1..=100 {
            manual.advance(37);
            applied = clock.now_ms(applied);
            assert_eq!(applied, EPOCH_MS + step * 37);
        }
    }

    /// Issue #10 bug 6: a leader whose wall clock jumps an hour ahead moved cluster
    /// time an hour ahead at once, expiring every session and lease.
    #[test]
    fn one_leader_s_clock_jump_moves_cluster_time_by_at_most_one_percent() {
        let (manual, clock) = clock(true);
        let start = clock.now_ms(0);
        clock.set_offset_ms(HOUR_MS as i64).unwrap();
        let mut applied = start;
        // Ten minutes of readings every 100 ms (6,000 counted steps).
        for _ in 0..6_000 {
            manual.advance(100);
            applied = clock.now_ms(applied);
        }
        let advanced = applied - start;
        let real = 10 * 60 * 1000;
        assert!(advanced >= real, "cluster time fell behind: {advanced}");
        assert!(
            advanced <= real + real / 100,
            "cluster time ran more than 1 % fast: {advanced} ms in {real} ms"
        );
        // The offset is still far from absorbed.
        assert!(clock.wall_ms() - applied > HOUR_MS - real / 50);
    }

    #[test]
    fn a_wall_clock_that_falls_behind_slows_cluster_time_to_99_percent_never_back() {
        let (manual, clock) = clock(true);
        let start = clock.now_ms(0);
        clock.set_offset_ms(-(HOUR_MS as i64)).unwrap();
        let mut applied = start;
        for _ in 0..1_000 {
            manual.advance(100);
            let next = clock.now_ms(applied);
            assert!(next >= applied);
            applied = next;
        }
        let real = 100_000;
        let advanced = applied - start;
        assert!(advanced >= real - real / 100 - 1, "{advanced}");
        assert!(advanced < real, "{advanced}");
    }

    #[test]
    fn small_differences_are_absorbed_at_the_slew_rate() {
        // A new leader 500 ms behind the wall clock (time lost at a failover).
        let (manual, clock) = clock(false);
        clock.observe(EPOCH_MS - 500);
        let mut applied = EPOCH_MS - 500;
        // 500 ms at 1 % takes 50 s: after 60 s the reading is the wall clock again.
        for _ in 0..600 {
            manual.advance(100);
            applied = clock.now_ms(applied);
        }
        assert_eq!(applied, clock.wall_ms());
    }

    #[test]
    fn a_new_leader_continues_from_what_it_observed_plus_monotonic_time() {
        let (manual, clock) = clock(true);
        // Observed as a follower; then 9 minutes without any entry.
        clock.observe(EPOCH_MS);
        manual.advance(9 * 60 * 1000);
        // Its wall clock jumped an hour ahead meanwhile: it is not believed.
        clock.set_offset_ms(HOUR_MS as i64).unwrap();
        let reading = clock.now_ms(EPOCH_MS);
        let nine_minutes = 9 * 60 * 1000;
        assert!(reading >= EPOCH_MS + nine_minutes);
        assert!(reading <= EPOCH_MS + nine_minutes + nine_minutes / 100);
    }

    #[test]
    fn after_a_whole_cluster_outage_time_resumes_where_it_stopped() {
        // A fresh process (no anchor), the log stopped an hour before the wall clock.
        let (_, clock) = clock(false);
        let stopped = EPOCH_MS - HOUR_MS;
        assert_eq!(clock.now_ms(stopped), stopped);
    }

    #[test]
    fn readings_never_fall_behind_the_applied_cluster_time() {
        let (manual, clock) = clock(false);
        clock.now_ms(0);
        manual.advance(10);
        // Another leader already applied a later time.
        assert_eq!(clock.now_ms(EPOCH_MS + HOUR_MS), EPOCH_MS + HOUR_MS);
        manual.advance(10);
        assert!(clock.now_ms(0) >= EPOCH_MS + HOUR_MS);
    }

    #[test]
    fn an_older_observation_does_not_move_the_anchor_back() {
        let anchor = Anchor {
            time_us: 5_000,
            at_us: 100,
        };
        assert_eq!(observe_anchor(Some(anchor), 4_000, 200), anchor);
        let later = observe_anchor(Some(anchor), 6_000, 200);
        assert_eq!(
            later,
            Anchor {
                time_us: 6_000,
                at_us: 200
            }
        );
    }

    #[test]
    #[cfg(feature = "test-switches")]
    fn the_planted_unbounded_clock_bug_follows_the_jump() {
        let (manual, clock) = clock(true);
        let clock = clock.with_unbounded_bug(true);
        let start = clock.now_ms(0);
        clock.set_offset_ms(HOUR_MS as i64).unwrap();
        manual.advance(100);
        assert_eq!(clock.now_ms(start), start + HOUR_MS + 100);
    }

    #[test]
    fn the_offset_needs_the_debug_switch_and_is_bounded() {
        let (_, off) = clock(false);
        assert_eq!(off.set_offset_ms(1), Err(OffsetError::Disabled));
        let (_, on) = clock(true);
        assert_eq!(
            on.set_offset_ms(MAX_DEBUG_OFFSET_MS + 1),
            Err(OffsetError::TooLarge)
        );
        on.set_offset_ms(-5).unwrap();
        assert_eq!(on.offset_ms(), -5);
        assert_eq!(on.wall_ms(), EPOCH_MS - 5);
    }
}
