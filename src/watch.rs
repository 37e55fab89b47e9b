//! The watch hub: this node's bounded history of applied events and the cursor
//! arithmetic that lets a watch replay it and go live with no gap or duplicate.
//!
//! The store's apply pushes the events of each entry here, under the state's write
//! lock, numbering them `<command index>.<seq>` (the SSE id); watchers read them by
//! position. Retention is a ring bounded by count and bytes (`[limits]
//! watch_history_events`, `watch_history_bytes`): the oldest events go first, and
//! `floor` is the oldest command index whose events are all still here. A restart
//! rebuilds the ring from the log tail openraft re-applies after the snapshot, and
//! installing a snapshot empties it (the node skipped those commands), so a resume
//! from before `floor` is told `compacted` rather than given a gap.
//!
//! Positions count every event this process ever pushed, so a watcher whose next
//! event was dropped (it fell behind by more than the history) is detected without
//! scanning. Memory is the ring's, never a watcher's: a watcher holds a position,
//! and copies out a bounded batch at a time (`limits::WATCH_BYTES_PER_WRITE`).
//!
//! Must not depend on the HTTP layer, Raft or storage; filtering by token and
//! query and rendering SSE belong to `server::watch`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::watch;

use crate::sm::events::{Event, EventBody};

/// An SSE id: (command index, sequence within the command).
pub type EventId = (u64, u32);

/// One retained event.
#[derive(Debug)]
pub struct Entry {
    pub index: u64,
    pub seq: u32,
    pub body: EventBody,
    size: usize,
    /// The rendered SSE frame, made once by whichever watcher sends it first.
    pub frame: OnceLock<bytes::Bytes>,
}

impl Entry {
    pub fn id(&self) -> EventId {
        (self.index, self.seq)
    }
}

/// The hub's bounds (from `[limits]`).
#[derive(Debug, Clone, Copy)]
pub struct HubLimits {
    pub history_events: usize,
    pub history_bytes: usize,
}

impl HubLimits {
    pub fn of(limits: &crate::limits::Limits) -> HubLimits {
        HubLimits {
            history_events: limits.watch_history_events,
            history_bytes: limits.watch_history_bytes,
        }
    }
}

impl Default for HubLimits {
    fn default() -> Self {
        HubLimits::of(&crate::limits::Limits::default())
    }
}

#[derive(Debug, Default)]
struct Ring {
    entries: VecDeque<Arc<Entry>>,
    /// The position of `entries[0]`.
    base: u64,
    bytes: usize,
    /// The oldest command index all of whose events are retained.
    floor: u64,
    /// The last command index applied (events or not).
    applied: u64,
    /// The id of the last event pushed, to number the next.
    last: Option<EventId>,
}

impl Ring {
    fn head(&self) -> u64 {
        self.base + self.entries.len() as u64
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct HubStats {
    pub watchers: AtomicU64,
    pub events_sent: AtomicU64,
    pub lagged: AtomicU64,
    pub compacted: AtomicU64,
}

/// See the module doc. Cloning shares it.
#[derive(Clone)]
pub struct Hub {
    ring: Arc<Mutex<Ring>>,
    /// The head position, published after every push.
    head: watch::Sender<u64>,
    limits: HubLimits,
    pub stats: Arc<HubStats>,
    /// Set at shutdown: every watch ends, so the server need not wait for them.
    closed: Arc<std::sync::atomic::AtomicBool>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new(HubLimits::default())
    }
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// With the next event applied.
    Now,
    /// With the first event of command `index` (inclusive).
    FromIndex(u64),
    /// With the event after id (`Last-Event-ID`).
    After(EventId),
}

/// A watcher's place: the next position to read, and the smallest id it may
/// deliver (a start in the future, or mid-command after `After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub position: u64,
    pub from: EventId,
}

/// What a read of the hub gave.
#[derive(Debug)]
pub enum Read {
    /// The events a watcher wants (possibly none yet), the cursor after them, and
    /// whether more are already there.
    Events(Vec<Arc<Entry>>, Cursor, bool),
    /// The watcher's next event is gone (it fell behind by more than the history,
    /// or a snapshot was installed): resume from `cursor.from` (which may then be
    /// `compacted`).
    Lagged,
}

/// A start older than what is retained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// The oldest command index a watch can start from now.
    pub oldest_index: u64,
}

impl Hub {
    pub fn new(limits: HubLimits) -> Hub {
        Hub {
            ring: Arc::new(Mutex::new(Ring {
                floor: 1,
                ..Ring::default()
            })),
            head: watch::channel(0).0,
            limits,
            stats: Arc::default(),
            closed: Arc::default(),
        }
    }

    /// Ends every watch (node shutdown).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.head.send_modify(|_| {});
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets every event: the state now stands at command `applied` with no
    /// history (start-up from a snapshot, or a snapshot installed). The head
    /// position skips one, so every watcher notices the gap (`Read::Lagged`).
    pub fn reset(&self, applied: u64) {
        let head = {
            let mut ring = self.ring();
            let head = ring.head() + 1;
            *ring = Ring {
                entries: VecDeque::new(),
                base: head,
                bytes: 0,
                floor: applied + 1,
                applied,
                last: None,
            };
            head
        };
        self.head.send_replace(head);
    }

    /// Appends the events of the entries just applied, the state now standing at
    /// command `applied`, and wakes the watchers.
    pub fn push(&self, events: Vec<Event>, applied: u64) {
        let head = {
            let mut ring = self.ring();
            for event in events {
                let seq = match ring.last {
                    Some((index, seq)) if index == event.index => seq + 1,
                    _ => 0,
                };
                let size = event.body.size_hint();
                ring.last = Some((event.index, seq));
                ring.bytes += size;
                ring.entries.push_back(Arc::new(Entry {
                    index: event.index,
                    seq,
                    body: event.body,
                    size,
                    frame: OnceLock::new(),
                }));
            }
            ring.applied = ring.applied.max(applied);
            while ring.entries.len() > self.limits.history_events
                || (ring.bytes > self.limits.history_bytes && ring.entries.len() > 1)
            {
                let oldest = ring.entries.pop_front().expect("not empty");
                ring.base += 1;
                ring.bytes -= oldest.size;
                ring.floor = ring.floor.max(oldest.index + 1);
            }
            ring.head()
        };
        self.head.send_replace(head);
    }

    /// A receiver of the head position, to wait for new events.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// The oldest command index a watch can start from, and the last applied.
    pub fn bounds(&self) -> (u64, u64) {
        let ring = self.ring();
        (ring.floor, ring.applied)
    }

    /// Where a watch starting at `start` reads first, or `Compacted`.
    pub fn cursor(&self, start: Start) -> Result<Cursor, Compacted> {
        let ring = self.ring();
        let from = match start {
            Start::Now => (ring.applied + 1, 0),
            Start::FromIndex(index) => (index.max(1), 0),
            Start::After((index, seq)) => (index, seq.saturating_add(1)),
        };
        if from.0 < ring.floor {
            self.stats.compacted.fetch_add(1, Ordering::Relaxed);
            return Err(Compacted {
                oldest_index: ring.floor,
            });
        }
        let skip = ring.entries.partition_point(|entry| entry.id() < from);
        Ok(Cursor {
            position: ring.base + skip as u64,
            from,
        })
    }

    /// The events at `cursor` that `wanted` picks, up to `max` looked at or about
    /// `max_bytes` picked (by their size estimate; plus the one that crossed it).
    /// Holds the ring's lock: `wanted` must be cheap (no rendering).
    pub fn read(
        &self,
        cursor: Cursor,
        max: usize,
        wanted: &dyn Fn(&Entry) -> bool,
        max_bytes: usize,
    ) -> Read {
        let ring = self.ring();
        let head = ring.head();
        if cursor.position < ring.base {
            return Read::Lagged;
        }
        let start = (cursor.position - ring.base) as usize;
        let mut next = cursor;
        let mut out = Vec::new();
        let mut bytes = 0;
        for entry in ring.entries.range(start..).take(max) {
            next.position += 1;
            if entry.id() < next.from {
                continue;
            }
            next.from = (entry.index, entry.seq + 1);
            if wanted(entry) {
                out.push(entry.clone());
                bytes += entry.size;
                if bytes >= max_bytes {
                    break;
                }
            }
        }
        Read::Events(out, next, next.position < head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(index: u64, key: &str) -> Event {
        Event {
            index,
            body: EventBody::KvDeleted {
                key: key.into(),
                previous_version: 0,
            },
        }
    }

    fn ids(read: Read) -> (Vec<EventId>, Cursor) {
        match read {
            Read::Events(entries, cursor, _) => (entries.iter().map(|e| e.id()).collect(), cursor),
            Read::Lagged => panic!("lagged"),
        }
    }

    fn read_all(hub: &Hub, cursor: Cursor, max: usize) -> Read {
        hub.read(cursor, max, &|_| true, usize::MAX)
    }

    fn small_hub(history_events: usize) -> Hub {
        Hub::new(HubLimits {
            history_events,
            history_bytes: usize::MAX,
        })
    }

    #[test]
    fn events_of_one_command_are_numbered_in_order_and_a_new_command_starts_at_zero() {
        let hub = small_hub(100);
        hub.push(vec![put(3, "a"), put(3, "b")], 3);
        hub.push(vec![put(3, "c"), put(5, "d")], 5);
        let cursor = hub.cursor(Start::FromIndex(1)).unwrap();
        let (got, _) = ids(read_all(&hub, cursor, 100));
        assert_eq!(got, vec![(3, 0), (3, 1), (3, 2), (5, 0)]);
    }

    #[test]
    fn a_start_picks_the_exact_event_and_replay_then_live_has_no_gap_or_duplicate() {
        let hub = small_hub(100);
        hub.push(vec![put(1, "a"), put(2, "b"), put(2, "c"), put(4, "d")], 4);
        let (got, _) = ids(read_all(
            &hub,
            hub.cursor(Start::FromIndex(2)).unwrap(),
            100,
        ));
        assert_eq!(got, vec![(2, 0), (2, 1), (4, 0)]);
        let (got, _) = ids(read_all(
            &hub,
            hub.cursor(Start::After((2, 0))).unwrap(),
            100,
        ));
        assert_eq!(got, vec![(2, 1), (4, 0)]);
        // Read in pieces while new events arrive: each exactly once, in order.
        let mut cursor = hub.cursor(Start::FromIndex(1)).unwrap();
        let mut all = Vec::new();
        for round in 0..4 {
            let (got, next) = ids(read_all(&hub, cursor, 2));
            all.extend(got);
            cursor = next;
            hub.push(vec![put(10 + round, "x")], 10 + round);
        }
        loop {
            let (got, next) = ids(read_all(&hub, cursor, 2));
            if got.is_empty() {
                break;
            }
            all.extend(got);
            cursor = next;
        }
        let mut sorted = all.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(all, sorted);
        assert_eq!(all.len(), 8);
    }

    #[test]
    fn now_starts_after_the_last_applied_command_and_a_future_index_waits_for_it() {
        let hub = small_hub(100);
        hub.push(vec![put(1, "a")], 3);
        let now = hub.cursor(Start::Now).unwrap();
        assert_eq!(now.from, (4, 0));
        let future = hub.cursor(Start::FromIndex(6)).unwrap();
        hub.push(vec![put(4, "b"), put(6, "c")], 6);
        assert_eq!(ids(read_all(&hub, now, 10)).0, vec![(4, 0), (6, 0)]);
        assert_eq!(ids(read_all(&hub, future, 10)).0, vec![(6, 0)]);
    }

    #[test]
    fn history_beyond_the_bound_is_compacted_and_says_the_oldest_index() {
        let hub = small_hub(3);
        hub.push((1..=5).map(|i| put(i, "k")).collect(), 5);
        assert_eq!(hub.bounds(), (3, 5));
        assert_eq!(
            hub.cursor(Start::FromIndex(2)),
            Err(Compacted { oldest_index: 3 })
        );
        assert_eq!(
            ids(read_all(&hub, hub.cursor(Start::FromIndex(3)).unwrap(), 10)).0,
            vec![(3, 0), (4, 0), (5, 0)]
        );
    }

    #[test]
    fn a_watcher_whose_next_event_is_gone_is_lagged() {
        let hub = small_hub(2);
        let cursor = hub.cursor(Start::FromIndex(1)).unwrap();
        hub.push(vec![put(1, "a"), put(2, "b")], 2);
        assert!(matches!(read_all(&hub, cursor, 10), Read::Events(..)));
        hub.push(vec![put(3, "c")], 3);
        assert!(matches!(read_all(&hub, cursor, 10), Read::Lagged));
        // After a reset (a snapshot installed) even a caught-up watcher notices.
        let hub2 = small_hub(100);
        hub2.push(vec![put(1, "a")], 1);
        let (_, caught_up) = ids(read_all(
            &hub2,
            hub2.cursor(Start::FromIndex(1)).unwrap(),
            10,
        ));
        hub2.reset(50);
        assert!(matches!(read_all(&hub2, caught_up, 10), Read::Lagged));
        assert_eq!(
            hub2.cursor(Start::After((1, 0))),
            Err(Compacted { oldest_index: 51 })
        );
        assert!(hub2.cursor(Start::FromIndex(51)).is_ok());
    }

    #[test]
    fn byte_bound_drops_the_oldest_events() {
        let hub = Hub::new(HubLimits {
            history_events: 1000,
            history_bytes: 1000,
        });
        hub.push((1..=20).map(|i| put(i, "k")).collect(), 20);
        let (floor, _) = hub.bounds();
        assert!(floor > 1, "bytes bound the history");
        let ring = hub.ring();
        assert!(ring.bytes <= 1000);
    }
}
