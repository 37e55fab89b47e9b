//! Linearizability checker for register histories: the Wing–Gong/Lowe (WGL) search
//! with P-compositionality and state caching, as Porcupine's `checkSingle` does it
//! (see `shared/CHAOS.md` §2.4).
//!
//! # Algorithm
//!
//! 1. **Partition by key.** Every operation touches one register, so by locality
//!    (Herlihy & Wing) the history is linearizable iff every per-key sub-history is.
//!    [`check`] splits the history by key and checks each part with [`check_key`],
//!    each under its own deadline.
//! 2. **Entries.** Each kept operation becomes a call entry at `invoke_ns` and a
//!    return entry at `complete_ns` (+∞ for an indeterminate operation). Entries are
//!    sorted by time with calls before returns on ties, so intervals are closed: two
//!    operations that merely touch may be ordered either way.
//! 3. **Linked list.** The sorted entries form a doubly linked list between a head
//!    and a tail sentinel, kept as index vectors; each call knows its return.
//! 4. **Search.** With `e` the first entry after the head:
//!    * if `e` is the call of operation `o`, `o` is minimal (invoked before every
//!      remaining return), so it may be linearized next. If the model accepts it from
//!      the current state and the pair (linearized set ∪ {o}, new state) is not yet in
//!      the cache, the pair is cached, `(o, old state)` is pushed, and `o` is *lifted*
//!      (its call and return are unlinked in O(1)); the scan restarts at the head.
//!      Otherwise the scan moves on to `e.next`;
//!    * if `e` is a return, the operation it belongs to must be linearized before
//!      anything later and every candidate has failed: backtrack. Pop `(c, state)`,
//!      restore the state, *unlift* `c` (relink its entries, in reverse order of the
//!      unlinking) and resume the scan at the entry after `c`'s call. An empty stack
//!      means no linearization exists;
//!    * an empty list means every operation is linearized: the stack is a witness.
//!
//!    The cache is sound because the future of the search depends only on *which*
//!    operations are linearized and on the resulting state, never on their order.
//!    The linearized set is a bitset; its hash is a Zobrist hash (the xor of one
//!    fixed pseudo-random word per operation) updated in O(1) on every lift and
//!    unlift, combined with the hash of the state. Collisions are resolved by
//!    comparing the full `(bitset, state)` pairs.
//! 5. **Diagnostics.** On every backtrack whose stack is longer than any seen before,
//!    the stack (a partial linearization) and the operation of the return entry that
//!    forced the backtrack are recorded. At that moment no longer prefix has ever
//!    existed, so no extension was skipped as a cache hit: every candidate, including
//!    that operation, was *illegal* after the prefix. A failed check reports the
//!    longest such prefix and that operation ([`Witness`]).
//! 6. **Budgets.** The clock is read every 1024 iterations (and on the first); a
//!    search past its deadline yields [`Verdict::Unknown`], never a pass. So does a
//!    search whose cache outgrows [`MAX_CACHE_BYTES`] (estimated from its entry
//!    count), so one pathological key cannot take the machine's memory; and [`check`]
//!    has a deadline for the whole history, after which the keys not yet checked are
//!    `unknown` too.
//!
//! # Model and outcomes
//!
//! Each key is a register whose state is `Option<i64>` (`None` = absent), initially
//! `None`. Values are unique per key, but nothing here depends on that.
//!
//! | operation | `Ok` | `Fail` | `Unknown` |
//! | --- | --- | --- | --- |
//! | read `v` | legal iff state = `v` | dropped | dropped |
//! | write `v` | state := `v` | dropped | return at +∞; always legal, state := `v` |
//! | CAS `e → v` | legal iff state = `e`; state := `v` | legal iff state ≠ `e`; state unchanged | return at +∞; if state = `e` then state := `v`, else unchanged; always legal |
//!
//! * A failed or indeterminate read has no effect and tells nothing: dropped.
//! * A failed write was definitely not applied: dropped.
//! * A failed CAS is the server's refusal because the precondition did not hold, so
//!   it is kept as an ordinary checkable operation: "the value was not `e` at some
//!   point within the interval" is information.
//! * An indeterminate write or CAS may or may not have taken effect, at any time
//!   after its invocation. Its return is placed at +∞, so the search may linearize it
//!   at any point after its call, including after every other operation, which is
//!   indistinguishable from "never happened" since nothing observes the state after
//!   the last operation.
//! * Why the indeterminate CAS step (apply whenever the precondition holds) is both
//!   sound and complete: if the real CAS applied at some instant, its precondition
//!   held then, and linearizing it there with the forced application reproduces that
//!   execution; if it never applied, linearizing it last reproduces that. Conversely
//!   every linearization the step accepts is a legal sequential execution: either the
//!   CAS applied with its precondition true, or it was a refused CAS with its
//!   precondition false. Nothing else (applying with a false precondition, or a no-op
//!   with a true one mid-history) is ever needed.
//! * An `Ok` or `Fail` operation without `complete_ns` (which the history format does
//!   not produce) is given a return at +∞ too, the weaker constraint; a `complete_ns`
//!   earlier than `invoke_ns` is clamped to `invoke_ns`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::history::{Operation, Outcome, RegisterOp};

/// The outcome of checking one key.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// A linearization of every kept operation exists.
    Linearizable,
    /// No linearization exists; `witness` shows where the search got furthest.
    NotLinearizable { key: String, witness: Witness },
    /// The search was cut short (deadline); this is never a pass.
    Unknown { key: String, reason: String },
}

/// Why a key is not linearizable.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Witness {
    /// The longest partial linearization the search found, in linearization order.
    pub linearized: Vec<Operation>,
    /// The first operation that could not be linearized after `linearized`: every
    /// other candidate was illegal too, and this one had to come before the rest.
    pub failed_at: Option<Operation>,
}

/// The result for one key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyResult {
    pub key: String,
    pub verdict: Verdict,
    /// Operations that entered the search (failed and indeterminate reads and failed
    /// writes are dropped and not counted).
    pub operations: usize,
    /// Distinct (linearized set, state) pairs the search visited.
    pub states_explored: u64,
}

/// Checks a whole history: partitions it by key (in key order) and checks each key
/// with its own deadline of `per_key_timeout` from the moment its check starts, all
/// within `total_timeout` from the call: keys not reached by then are `unknown`.
pub fn check(
    history: &[Operation],
    per_key_timeout: Duration,
    total_timeout: Duration,
) -> Vec<KeyResult> {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let total_deadline = Instant::now().checked_add(total_timeout);
    by_key
        .into_iter()
        .map(|(key, ops)| {
            let now = Instant::now();
            if total_deadline.is_some_and(|d| now >= d) {
                return KeyResult {
                    key: key.to_string(),
                    verdict: Verdict::Unknown {
                        key: key.to_string(),
                        reason: "not checked: the whole history's time budget was used".to_string(),
                    },
                    operations: ops.len(),
                    states_explored: 0,
                };
            }
            let deadline = match (now.checked_add(per_key_timeout), total_deadline) {
                (Some(key), Some(total)) => Some(key.min(total)),
                (key, total) => key.or(total),
            };
            check_partition(key, &ops, deadline)
        })
        .collect()
}

/// Checks the operations of one key (all of `ops` must have the same key; the key
/// of the first one names the result) against the register model.
pub fn check_key(ops: &[Operation], deadline: Instant) -> KeyResult {
    let key = ops.first().map_or("", |op| op.key.as_str());
    debug_assert!(ops.iter().all(|op| op.key == key), "check_key: mixed keys");
    let refs: Vec<&Operation> = ops.iter().collect();
    check_partition(key, &refs, Some(deadline))
}

/// A register state: the value, or `None` when the key is absent.
type State = Option<i64>;

/// What an operation kept for the search does to the register.
#[derive(Debug, Clone, Copy)]
enum Effect {
    /// An acknowledged read: legal iff the state is `value`.
    Read { value: State },
    /// An acknowledged or indeterminate write: always legal.
    Write { value: i64 },
    /// An acknowledged CAS: legal iff the state is `expected`.
    Cas { expected: State, value: i64 },
    /// A refused CAS: legal iff the state is not `expected`; no change.
    RefusedCas { expected: State },
    /// An indeterminate CAS: always legal, applied iff the state is `expected`.
    MaybeCas { expected: State, value: i64 },
}

impl Effect {
    /// The effect of `op`, or `None` if it is dropped (it has no effect).
    fn of(op: &Operation) -> Option<Effect> {
        match (&op.op, op.outcome) {
            (RegisterOp::Read { value }, Outcome::Ok) => Some(Effect::Read { value: *value }),
            (RegisterOp::Read { .. }, Outcome::Fail | Outcome::Unknown) => None,
            (RegisterOp::Write { value }, Outcome::Ok | Outcome::Unknown) => {
                Some(Effect::Write { value: *value })
            }
            (RegisterOp::Write { .. }, Outcome::Fail) => None,
            (RegisterOp::Cas { expected, value }, Outcome::Ok) => Some(Effect::Cas {
                expected: *expected,
                value: *value,
            }),
            (RegisterOp::Cas { expected, .. }, Outcome::Fail) => Some(Effect::RefusedCas {
                expected: *expected,
            }),
            (RegisterOp::Cas { expected, value }, Outcome::Unknown) => Some(Effect::MaybeCas {
                expected: *expected,
                value: *value,
            }),
        }
    }

    /// The model's step: the state after this operation, or `None` if it is illegal
    /// in `state`.
    fn step(self, state: State) -> Option<State> {
        match self {
            Effect::Read { value } => (state == value).then_some(state),
            Effect::Write { value } => Some(Some(value)),
            Effect::Cas { expected, value } => (state == expected).then_some(Some(value)),
            Effect::RefusedCas { expected } => (state != expected).then_some(state),
            Effect::MaybeCas { expected, value } => Some(if state == expected {
                Some(value)
            } else {
                state
            }),
        }
    }
}

/// The return time of `op`, `u64::MAX` standing for +∞.
fn return_time(op: &Operation) -> u64 {
    match (op.outcome, op.complete_ns) {
        (Outcome::Ok | Outcome::Fail, Some(t)) => t.max(op.invoke_ns),
        _ => u64::MAX,
    }
}

/// SplitMix64's finalizer: a cheap, well-mixing bijection on `u64`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The Zobrist word of operation `id` in the linearized-set hash.
fn op_hash(id: usize) -> u64 {
    mix(id as u64 ^ 0x5bd1_e995_0000_0000)
}

fn state_hash(state: State) -> u64 {
    match state {
        None => mix(0x0123_4567_89ab_cdef),
        Some(v) => mix(mix(v as u64)),
    }
}

/// The call/return entries of one partition as a doubly linked list over indices:
/// node 0 is the head sentinel, node `len - 1` the tail sentinel.
struct EntryList {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// The operation of each entry node (unused for the sentinels).
    op: Vec<usize>,
    is_call: Vec<bool>,
    call_node: Vec<usize>,
    return_node: Vec<usize>,
}

const HEAD: usize = 0;

impl EntryList {
    /// Builds the list for `ops`: entries in time order, calls before returns on ties.
    fn new(ops: &[(&Operation, Effect)]) -> EntryList {
        let mut entries: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * ops.len());
        for (id, (op, _)) in ops.iter().enumerate() {
            entries.push((op.invoke_ns, false, id));
            entries.push((return_time(op), true, id));
        }
        // `false < true`: calls sort before returns at the same time.
        entries.sort_unstable();

        let nodes = entries.len() + 2;
        let tail = nodes - 1;
        let mut list = EntryList {
            // Each sentinel links to itself on its outer side.
            next: (1..=nodes).map(|i| i.min(tail)).collect(),
            prev: (0..nodes).map(|i| i.saturating_sub(1)).collect(),
            op: vec![usize::MAX; nodes],
            is_call: vec![false; nodes],
            call_node: vec![0; ops.len()],
            return_node: vec![0; ops.len()],
        };
        for (i, &(_, is_return, id)) in entries.iter().enumerate() {
            let node = i + 1;
            list.op[node] = id;
            list.is_call[node] = !is_return;
            if is_return {
                list.return_node[id] = node;
            } else {
                list.call_node[id] = node;
            }
        }
        list
    }

    fn tail(&self) -> usize {
        self.next.len() - 1
    }

    fn is_empty(&self) -> bool {
        self.next[HEAD] == self.tail()
    }

    fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    /// Relinks a node unlinked by [`EntryList::unlink`]; unlinks must be undone in
    /// reverse order (dancing links).
    fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        self.prev[n] = node;
    }

    /// Removes both entries of operation `id`.
    fn lift(&mut self, id: usize) {
        self.unlink(self.call_node[id]);
        self.unlink(self.return_node[id]);
    }

    /// Restores both entries of operation `id`, the most recently lifted one.
    fn unlift(&mut self, id: usize) {
        self.relink(self.return_node[id]);
        self.relink(self.call_node[id]);
    }
}

/// The set of linearized operations.
#[derive(Clone, PartialEq, Eq)]
struct Bitset(Vec<u64>);

impl Bitset {
    fn new(len: usize) -> Bitset {
        Bitset(vec![0; len.div_ceil(64)])
    }

    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// The (linearized set, state) pairs already explored, by combined hash.
#[derive(Default)]
struct Cache {
    buckets: HashMap<u64, Vec<(Bitset, State)>>,
    len: u64,
}

impl Cache {
    /// Inserts the pair; returns `false` if it was already there.
    fn insert(&mut self, hash: u64, linearized: &Bitset, state: State) -> bool {
        let bucket = self.buckets.entry(hash).or_default();
        if bucket.iter().any(|(l, s)| *s == state && l == linearized) {
            return false;
        }
        bucket.push((linearized.clone(), state));
        self.len += 1;
        true
    }
}

/// How often (in loop iterations) the deadline and the memory budget are checked.
const DEADLINE_CHECK_EVERY: u32 = 1024;

/// The most memory the cache of one key's search may take (estimated) before the key
/// is reported `unknown`.
pub const MAX_CACHE_BYTES: u64 = 1 << 30;

/// Estimated bytes per cache entry for `ops` operations: the bitset's words and
/// allocation, the `(Bitset, State)` slot, and the hash map's share.
fn cache_entry_bytes(ops: usize) -> u64 {
    8 * ops.div_ceil(64) as u64 + 96
}

/// The WGL search over the operations of one key, within [`MAX_CACHE_BYTES`].
fn check_partition(key: &str, ops: &[&Operation], deadline: Option<Instant>) -> KeyResult {
    check_partition_within(key, ops, deadline, MAX_CACHE_BYTES)
}

/// The WGL search over the operations of one key, within `max_cache_bytes`.
fn check_partition_within(
    key: &str,
    ops: &[&Operation],
    deadline: Option<Instant>,
    max_cache_bytes: u64,
) -> KeyResult {
    let kept: Vec<(&Operation, Effect)> = ops
        .iter()
        .filter_map(|op| Effect::of(op).map(|effect| (*op, effect)))
        .collect();
    let n = kept.len();
    let mut list = EntryList::new(&kept);

    let mut state: State = None;
    let mut linearized = Bitset::new(n);
    let mut set_hash: u64 = 0;
    let mut stack: Vec<(usize, State)> = Vec::with_capacity(n);
    let mut cache = Cache::default();
    // The longest partial linearization seen at a backtrack, and the operation whose
    // return forced that backtrack.
    let mut longest: Option<(Vec<usize>, usize)> = None;

    let result = |verdict: Verdict, cache: &Cache| KeyResult {
        key: key.to_string(),
        verdict,
        operations: n,
        states_explored: cache.len,
    };

    let mut entry = list.next[HEAD];
    // Iterations left before the next look at the clock; the first one looks.
    let mut until_clock: u32 = 0;
    loop {
        if list.is_empty() {
            return result(Verdict::Linearizable, &cache);
        }
        if until_clock == 0 {
            until_clock = DEADLINE_CHECK_EVERY;
            let over = if cache.len.saturating_mul(cache_entry_bytes(n)) > max_cache_bytes {
                Some(format!("memory budget of {} KiB", max_cache_bytes >> 10))
            } else if deadline.is_some_and(|d| Instant::now() >= d) {
                Some("deadline".to_string())
            } else {
                None
            };
            if let Some(limit) = over {
                let reason = format!(
                    "{limit} reached after exploring {} states ({} of {} operations linearized)",
                    cache.len,
                    stack.len(),
                    n
                );
                let verdict = Verdict::Unknown {
                    key: key.to_string(),
                    reason,
                };
                return result(verdict, &cache);
            }
        }
        until_clock -= 1;

        let id = list.op[entry];
        if list.is_call[entry] {
            if let Some(next_state) = kept[id].1.step(state) {
                linearized.set(id);
                let hash = set_hash ^ op_hash(id) ^ state_hash(next_state);
                if cache.insert(hash, &linearized, next_state) {
                    stack.push((id, state));
                    state = next_state;
                    set_hash ^= op_hash(id);
                    list.lift(id);
                    entry = list.next[HEAD];
                    continue;
                }
                linearized.clear(id);
            }
            entry = list.next[entry];
        } else {
            // The return of a pending operation: every candidate has been tried.
            if longest
                .as_ref()
                .is_none_or(|(prefix, _)| stack.len() > prefix.len())
            {
                longest = Some((stack.iter().map(|&(op, _)| op).collect(), id));
            }
            let Some((undone, previous)) = stack.pop() else {
                let (prefix, failed) = longest.unwrap_or_default();
                let witness = Witness {
                    linearized: prefix.into_iter().map(|i| kept[i].0.clone()).collect(),
                    failed_at: Some(kept[failed].0.clone()),
                };
                let verdict = Verdict::NotLinearizable {
                    key: key.to_string(),
                    witness,
                };
                return result(verdict, &cache);
            };
            state = previous;
            linearized.clear(undone);
            set_hash ^= op_hash(undone);
            list.unlift(undone);
            entry = list.next[list.call_node[undone]];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NO_DEADLINE: Duration = Duration::from_secs(60);

    fn op(
        key: &str,
        process: u64,
        op: RegisterOp,
        outcome: Outcome,
        span: (u64, u64),
    ) -> Operation {
        Operation {
            process,
            key: key.to_string(),
            op,
            outcome,
            invoke_ns: span.0,
            complete_ns: (outcome != Outcome::Unknown).then_some(span.1),
            node: 0,
        }
    }

    fn read(process: u64, value: Option<i64>, span: (u64, u64)) -> Operation {
        op("k", process, RegisterOp::Read { value }, Outcome::Ok, span)
    }

    fn write(process: u64, value: i64, outcome: Outcome, span: (u64, u64)) -> Operation {
        op("k", process, RegisterOp::Write { value }, outcome, span)
    }

    fn cas(
        process: u64,
        expected: Option<i64>,
        value: i64,
        outcome: Outcome,
        span: (u64, u64),
    ) -> Operation {
        op(
            "k",
            process,
            RegisterOp::Cas { expected, value },
            outcome,
            span,
        )
    }

    fn verdict(history: &[Operation]) -> Verdict {
        check_key(history, Instant::now() + NO_DEADLINE).verdict
    }

    fn witness(history: &[Operation]) -> Witness {
        match verdict(history) {
            Verdict::NotLinearizable { witness, .. } => witness,
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn an_empty_history_is_linearizable() {
        assert_eq!(verdict(&[]), Verdict::Linearizable);
        assert!(check(&[], NO_DEADLINE, NO_DEADLINE).is_empty());
    }

    #[test]
    fn a_write_then_a_read_of_it_is_linearizable() {
        let history = [
            write(1, 1, Outcome::Ok, (0, 10)),
            read(2, Some(1), (20, 30)),
        ];
        assert_eq!(verdict(&history), Verdict::Linearizable);
    }

    #[test]
    fn a_read_of_absent_before_any_write_is_linearizable() {
        let history = [read(1, None, (0, 10)), write(1, 1, Outcome::Ok, (20, 30))];
        assert_eq!(verdict(&history), Verdict::Linearizable);
    }

    #[test]
    fn a_read_of_a_never_written_value_is_not_linearizable_and_the_witness_names_it() {
        let w = write(1, 1, Outcome::Ok, (0, 10));
        let r = read(2, Some(7), (20, 30));
        let found = witness(&[w.clone(), r.clone()]);
        assert_eq!(found.linearized, vec![w]);
        assert_eq!(found.failed_at, Some(r));
    }

    #[test]
    fn a_read_overlapping_a_write_may_see_the_old_or_the_new_value() {
        for seen in [None, Some(1)] {
            let history = [write(1, 1, Outcome::Ok, (0, 100)), read(2, seen, (20, 30))];
            assert_eq!(
                verdict(&history),
                Verdict::Linearizable,
                "read saw {seen:?}"
            );
        }
    }

    #[test]
    fn intervals_that_touch_may_be_ordered_either_way() {
        // The read is invoked exactly when the write returns: closed intervals.
        let history = [write(1, 1, Outcome::Ok, (0, 10)), read(2, None, (10, 20))];
        assert_eq!(verdict(&history), Verdict::Linearizable);
    }

    #[test]
    fn a_stale_read_after_a_newer_write_is_not_linearizable() {
        let w1 = write(1, 1, Outcome::Ok, (0, 10));
        let w2 = write(1, 2, Outcome::Ok, (20, 30));
        let r = read(2, Some(1), (40, 50));
        let found = witness(&[w1.clone(), w2.clone(), r.clone()]);
        assert_eq!(found.linearized, vec![w1, w2]);
        assert_eq!(found.failed_at, Some(r));
    }

    #[test]
    fn two_reads_disagreeing_on_the_order_of_two_writes_are_not_linearizable() {
        let history = [
            write(1, 1, Outcome::Ok, (0, 100)),
            write(2, 2, Outcome::Ok, (0, 100)),
            read(3, Some(1), (10, 20)),
            read(3, Some(2), (30, 40)),
            read(4, Some(2), (10, 20)),
            read(4, Some(1), (30, 40)),
        ];
        assert!(matches!(verdict(&history), Verdict::NotLinearizable { .. }));
    }

    #[test]
    fn the_same_operations_linearized_in_another_order_are_a_different_search_state() {
        // Both writes linearized reach state 2 first (w1, w2); the read needs w2, w1.
        let history = [
            write(1, 1, Outcome::Ok, (0, 10)),
            write(2, 2, Outcome::Ok, (0, 10)),
            read(3, Some(1), (20, 30)),
        ];
        assert_eq!(verdict(&history), Verdict::Linearizable);
    }

    #[test]
    fn an_unknown_write_whose_value_is_later_read_is_linearizable() {
        let history = [
            write(1, 1, Outcome::Unknown, (0, 0)),
            read(2, Some(1), (500, 510)),
        ];
        assert_eq!(verdict(&history), Verdict::Linearizable);
    }

    #[test]
    fn an_unknown_write_never_read_is_linearizable() {
        let history = [
            write(1, 1, Outcome::Unknown, (0, 0)),
            read(2, None, (500, 510)),
            write(2, 2, Outcome::Ok, (520, 530)),
            read(2, Some(2), (540, 550)),
        ];
        assert_eq!(verdict(&history), Verdict::Linearizable);
    }

    #[test]
    fn an_unknown_write_cannot_take_effect_before_it_was_invoked() {
        let history = [
            read(2, Some(1), (0, 10)),
            write(1, 1, Outcome::Unknown, (20, 0)),
        ];
        assert!(matches!(verdict(&history), Verdict::NotLinearizable { .. }));
    }

    #[test]
    fn a_read_of_a_value_whose_only_write_failed_is_not_linearizable() {
        let w = write(1, 1, Outcome::Fail, (0, 10));
        let r = read(2, Some(1), (20, 30));
        let found = witness(&[w, r.clone()]);
        assert!(found.linearized.is_empty());
        assert_eq!(found.failed_at, Some(r));
    }

    #[test]
    fn failed_and_unknown_reads_are_ignored() {
        let history = [
            write(1, 1, Outcome::Ok, (0, 10)),
            op(
                "k",
                2,
                RegisterOp::Read { value: Some(9) },
                Outcome::Fail,
                (20, 30),
            ),
            op(
                "k",
                3,
                RegisterOp::Read { value: Some(8) },
                Outcome::Unknown,
                (20, 0),
            ),
        ];
        let result = check_key(&history, Instant::now() + NO_DEADLINE);
        assert_eq!(result.verdict, Verdict::Linearizable);
        assert_eq!(result.operations, 1);
    }

    #[test]
    fn an_ok_cas_with_the_current_value_as_expected_is_linearizable() {
        let history = [
            cas(1, None, 1, Outcome::Ok, (0, 10)),
            cas(2, Some(1), 2, Outcome::Ok, (20, 30)),
            read(3, Some(2), (40, 50)),
        ];
        assert_eq!(verdict(&history), Verdict::Linearizable);
    }

    #[test]
    fn an_ok_cas_whose_expected_value_could_not_be_current_is_not_linearizable() {
        let w = write(1, 1, Outcome::Ok, (0, 10));
        let c = cas(2, Some(2), 3, Outcome::Ok, (20, 30));
        let found = witness(&[w.clone(), c.clone()]);
        assert_eq!(found.linearized, vec![w]);
        assert_eq!(found.failed_at, Some(c));
    }

    #[test]
    fn a_refused_cas_whose_expected_value_was_the_only_possible_state_is_not_linearizable() {
        let history = [
            write(1, 1, Outcome::Ok, (0, 10)),
            cas(2, Some(1), 2, Outcome::Fail, (20, 30)),
        ];
        assert!(matches!(verdict(&history), Verdict::NotLinearizable { .. }));
    }

    #[test]
    fn a_refused_cas_with_a_stale_expected_value_is_linearizable() {
        let history = [
            write(1, 1, Outcome::Ok, (0, 10)),
            write(1, 2, Outcome::Ok, (20, 30)),
            cas(2, Some(1), 3, Outcome::Fail, (40, 50)),
            read(2, Some(2), (60, 70)),
        ];
        assert_eq!(verdict(&history), Verdict::Linearizable);
    }

    #[test]
    fn an_unknown_cas_may_have_applied_or_not() {
        for seen in [1, 2] {
            let history = [
                write(1, 1, Outcome::Ok, (0, 10)),
                cas(2, Some(1), 2, Outcome::Unknown, (20, 0)),
                read(3, Some(seen), (40, 50)),
            ];
            assert_eq!(verdict(&history), Verdict::Linearizable, "read saw {seen}");
        }
    }

    #[test]
    fn an_unknown_cas_whose_precondition_never_held_cannot_have_applied() {
        let history = [
            write(1, 1, Outcome::Ok, (0, 10)),
            cas(2, Some(5), 2, Outcome::Unknown, (20, 0)),
            read(3, Some(2), (40, 50)),
        ];
        assert!(matches!(verdict(&history), Verdict::NotLinearizable { .. }));
    }

    #[test]
    fn a_violation_on_key_b_is_reported_under_b_while_a_is_fine() {
        let history = [
            op("b", 1, RegisterOp::Write { value: 1 }, Outcome::Ok, (0, 10)),
            op("a", 2, RegisterOp::Write { value: 1 }, Outcome::Ok, (0, 10)),
            op(
                "b",
                1,
                RegisterOp::Read { value: Some(2) },
                Outcome::Ok,
                (20, 30),
            ),
            op(
                "a",
                2,
                RegisterOp::Read { value: Some(1) },
                Outcome::Ok,
                (20, 30),
            ),
        ];
        let results = check(&history, NO_DEADLINE, NO_DEADLINE);
        assert_eq!(results.len(), 2);
        assert_eq!(results[0].key, "a");
        assert_eq!(results[0].verdict, Verdict::Linearizable);
        assert_eq!(results[1].key, "b");
        match &results[1].verdict {
            Verdict::NotLinearizable { key, witness } => {
                assert_eq!(key, "b");
                assert_eq!(witness.failed_at.as_ref(), Some(&history[2]));
            }
            other => panic!("expected a violation on b, got {other:?}"),
        }
    }

    #[test]
    fn a_deadline_already_past_yields_unknown_and_never_a_pass() {
        let history = concurrent_history(7, 200, 1, 5);
        let result = check_key(&history, Instant::now() - Duration::from_millis(1));
        assert!(
            matches!(&result.verdict, Verdict::Unknown { key, .. } if key == "k0"),
            "{:?}",
            result.verdict
        );
        assert!(matches!(
            check(&history, Duration::ZERO, NO_DEADLINE)[0].verdict,
            Verdict::Unknown { .. }
        ));
    }

    #[test]
    fn a_spent_total_budget_leaves_every_key_unknown() {
        let history = concurrent_history(7, 200, 3, 5);
        let results = check(&history, NO_DEADLINE, Duration::ZERO);
        assert_eq!(results.len(), 3);
        for result in &results {
            match &result.verdict {
                Verdict::Unknown { reason, .. } => assert!(reason.contains("budget"), "{reason}"),
                other => panic!("expected unknown, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_search_past_its_memory_budget_yields_unknown_and_never_a_pass() {
        // `writes` indeterminate writes no read ever sees, each concurrent with the
        // rest, then reads of the absent key: the search tries every subset of the
        // writes before it finds that none may come first (2^writes states).
        let history = |writes: u64| -> Vec<Operation> {
            let mut history: Vec<Operation> = (0..writes)
                .map(|i| write(i, 100 + i as i64, Outcome::Unknown, (i, 0)))
                .collect();
            history
                .extend((0..writes).map(|i| read(100 + i, None, (1_000 + 10 * i, 1_005 + 10 * i))));
            history
        };
        let big = history(40);
        let refs: Vec<&Operation> = big.iter().collect();
        let result = check_partition_within("k", &refs, None, 1 << 20);
        match &result.verdict {
            Verdict::Unknown { reason, .. } => assert!(reason.contains("memory"), "{reason}"),
            other => panic!("expected unknown, got {other:?}"),
        }
        // A small one of the same shape is decided within the same budget.
        let small = history(6);
        let refs: Vec<&Operation> = small.iter().collect();
        let result = check_partition_within("k", &refs, None, 1 << 20);
        assert_eq!(result.verdict, Verdict::Linearizable);
    }

    #[test]
    fn verdicts_serialize_with_a_tag() {
        let json = serde_json::to_value(Verdict::Linearizable).unwrap();
        assert_eq!(json, serde_json::json!({ "verdict": "linearizable" }));
        let history = [read(1, Some(3), (0, 10))];
        let result = check_key(&history, Instant::now() + NO_DEADLINE);
        let json = serde_json::to_value(&result).unwrap();
        assert_eq!(json["verdict"]["verdict"], "not_linearizable");
        assert_eq!(json["verdict"]["witness"]["failed_at"]["op"]["f"], "read");
    }

    #[test]
    fn a_concurrent_history_of_two_thousand_operations_checks_quickly() {
        let history = concurrent_history(42, 2_000, 5, 10);
        let results = check(&history, Duration::from_secs(30), NO_DEADLINE);
        assert_eq!(results.len(), 5);
        for result in &results {
            assert_eq!(result.verdict, Verdict::Linearizable, "key {}", result.key);
        }
        let checked: usize = results.iter().map(|r| r.operations).sum();
        assert!(checked > 1_500, "only {checked} operations were checked");
    }

    /// A tiny deterministic generator (SplitMix64) for the simulated executions.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(1);
            mix(self.0)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// What a simulated process is doing.
    enum Phase {
        Idle,
        /// Invoked at `invoke`; takes effect at a later step unless `lost`.
        Invoked {
            key: String,
            op: RegisterOp,
            invoke: u64,
            unknown: bool,
            lost: bool,
        },
        /// Took effect (or was lost); completes at a later step.
        Applied {
            key: String,
            op: RegisterOp,
            outcome: Outcome,
            invoke: u64,
            unknown: bool,
        },
    }

    /// A linearizable history: `processes` clients issue `count` operations on `keys`
    /// registers; each operation is invoked, takes effect atomically and completes at
    /// three separate random steps, so intervals overlap. About 2% of writes and CAS
    /// end `Unknown` (and half of those were never applied); their client then retires.
    fn concurrent_history(seed: u64, count: usize, keys: u64, processes: usize) -> Vec<Operation> {
        let mut rng = Rng(seed);
        let mut registers: BTreeMap<String, Option<i64>> = BTreeMap::new();
        let mut clients: Vec<(u64, Phase)> =
            (0..processes as u64).map(|p| (p, Phase::Idle)).collect();
        let mut next_process = processes as u64;
        let mut next_value = 1;
        let mut history = Vec::with_capacity(count);
        let mut invoked = 0;
        let mut clock = 0;
        while history.len() < count {
            clock += 1 + rng.below(10);
            let client = rng.below(processes as u64) as usize;
            let (process, phase) = &mut clients[client];
            *phase = match std::mem::replace(phase, Phase::Idle) {
                Phase::Idle if invoked < count => {
                    invoked += 1;
                    let key = format!("k{}", rng.below(keys));
                    let current = registers.get(&key).copied().flatten();
                    let op = match rng.below(3) {
                        0 => RegisterOp::Read { value: None },
                        1 => {
                            next_value += 1;
                            RegisterOp::Write { value: next_value }
                        }
                        _ => {
                            next_value += 1;
                            // Usually the value now, sometimes a stale guess.
                            let expected = if rng.below(3) == 0 {
                                Some(rng.below(next_value as u64) as i64).filter(|&v| v > 0)
                            } else {
                                current
                            };
                            RegisterOp::Cas {
                                expected,
                                value: next_value,
                            }
                        }
                    };
                    let unknown = !matches!(op, RegisterOp::Read { .. }) && rng.below(50) == 0;
                    let lost = unknown && rng.below(2) == 0;
                    Phase::Invoked {
                        key,
                        op,
                        invoke: clock,
                        unknown,
                        lost,
                    }
                }
                Phase::Idle => Phase::Idle,
                Phase::Invoked {
                    key,
                    mut op,
                    invoke,
                    unknown,
                    lost,
                } => {
                    let register = registers.entry(key.clone()).or_default();
                    let mut outcome = Outcome::Ok;
                    match &mut op {
                        RegisterOp::Read { value } => *value = *register,
                        RegisterOp::Write { value } if !lost => *register = Some(*value),
                        RegisterOp::Cas { expected, value } if !lost => {
                            if *register == *expected {
                                *register = Some(*value);
                            } else {
                                outcome = Outcome::Fail;
                            }
                        }
                        _ => {}
                    }
                    Phase::Applied {
                        key,
                        op,
                        outcome,
                        invoke,
                        unknown,
                    }
                }
                Phase::Applied {
                    key,
                    op,
                    outcome,
                    invoke,
                    unknown,
                } => {
                    let outcome = if unknown { Outcome::Unknown } else { outcome };
                    history.push(Operation {
                        process: *process,
                        key,
                        op,
                        outcome,
                        invoke_ns: invoke,
                        complete_ns: (!unknown).then_some(clock),
                        node: 0,
                    });
                    if unknown {
                        *process = next_process;
                        next_process += 1;
                    }
                    Phase::Idle
                }
            };
        }
        history
    }

    /// One step of a generated sequential execution.
    #[derive(Debug, Clone)]
    enum Step {
        Read {
            outcome: Outcome,
        },
        Write {
            outcome: Outcome,
            applied: bool,
        },
        Cas {
            stale: bool,
            outcome: Outcome,
            applied: bool,
        },
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            6 => Just(Outcome::Ok),
            1 => Just(Outcome::Fail),
            2 => Just(Outcome::Unknown),
        ]
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            outcome().prop_map(|outcome| Step::Read { outcome }),
            (outcome(), any::<bool>())
                .prop_map(|(outcome, applied)| Step::Write { outcome, applied }),
            (any::<bool>(), outcome(), any::<bool>()).prop_map(|(stale, outcome, applied)| {
                Step::Cas {
                    stale,
                    outcome,
                    applied,
                }
            }),
        ]
    }

    /// Runs `steps` one after another on a true register (non-overlapping intervals).
    /// Failed operations are not applied; an `Unknown` write or CAS is applied iff
    /// `applied` (and, for a CAS, its precondition holds).
    fn sequential_history(steps: &[Step]) -> Vec<Operation> {
        let mut register: Option<i64> = None;
        let mut written: Vec<i64> = Vec::new();
        let mut history = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            let value = i as i64 + 1;
            let span = (10 * i as u64, 10 * i as u64 + 5);
            let (register_op, outcome) = match *step {
                Step::Read { outcome } => {
                    // A failed or unknown read may report anything.
                    let seen = if outcome == Outcome::Ok {
                        register
                    } else {
                        Some(-value)
                    };
                    (RegisterOp::Read { value: seen }, outcome)
                }
                Step::Write { outcome, applied } => {
                    if outcome == Outcome::Ok || (outcome == Outcome::Unknown && applied) {
                        register = Some(value);
                    }
                    written.push(value);
                    (RegisterOp::Write { value }, outcome)
                }
                Step::Cas {
                    stale,
                    outcome,
                    applied,
                } => {
                    let expected = if stale {
                        written.iter().rev().copied().find(|&v| Some(v) != register)
                    } else {
                        register
                    };
                    let holds = register == expected;
                    let outcome = match outcome {
                        Outcome::Ok | Outcome::Fail if holds => Outcome::Ok,
                        Outcome::Ok | Outcome::Fail => Outcome::Fail,
                        Outcome::Unknown => Outcome::Unknown,
                    };
                    let applies = match outcome {
                        Outcome::Ok => true,
                        Outcome::Fail => false,
                        Outcome::Unknown => holds && applied,
                    };
                    if applies {
                        register = Some(value);
                    }
                    written.push(value);
                    (RegisterOp::Cas { expected, value }, outcome)
                }
            };
            history.push(op("k", i as u64, register_op, outcome, span));
        }
        history
    }

    /// The definition, by brute force: some subset of the indeterminate writes and
    /// CAS never executed, and the rest (with the acknowledged reads, writes and CAS
    /// and the refused CAS) execute in some order that respects real time. For small
    /// histories only.
    fn linearizable_by_brute_force(history: &[Operation]) -> bool {
        let executed: Vec<&Operation> = history
            .iter()
            .filter(|o| match (&o.op, o.outcome) {
                (RegisterOp::Read { .. }, outcome) => outcome == Outcome::Ok,
                (RegisterOp::Write { .. }, outcome) => outcome != Outcome::Fail,
                (RegisterOp::Cas { .. }, _) => true,
            })
            .collect();
        let optional: Vec<usize> = (0..executed.len())
            .filter(|&i| executed[i].outcome == Outcome::Unknown)
            .collect();
        (0u32..1 << optional.len()).any(|omitted| {
            let chosen: Vec<&Operation> = (0..executed.len())
                .filter(|i| {
                    optional
                        .iter()
                        .position(|o| o == i)
                        .is_none_or(|bit| omitted & (1 << bit) == 0)
                })
                .map(|i| executed[i])
                .collect();
            some_order_is_legal(&chosen, &mut vec![false; chosen.len()], None)
        })
    }

    fn some_order_is_legal(ops: &[&Operation], done: &mut Vec<bool>, state: Option<i64>) -> bool {
        if done.iter().all(|&d| d) {
            return true;
        }
        let end = |o: &Operation| match o.outcome {
            Outcome::Unknown => u64::MAX,
            _ => o.complete_ns.unwrap(),
        };
        (0..ops.len()).any(|i| {
            // `i` may go next iff no pending operation returned before `i` was invoked.
            let minimal =
                !done[i] && (0..ops.len()).all(|j| done[j] || end(ops[j]) >= ops[i].invoke_ns);
            let next = match (&ops[i].op, ops[i].outcome) {
                _ if !minimal => None,
                (RegisterOp::Read { value }, _) => (*value == state).then_some(state),
                (RegisterOp::Write { value }, _) => Some(Some(*value)),
                (RegisterOp::Cas { expected, .. }, Outcome::Fail) => {
                    (*expected != state).then_some(state)
                }
                (RegisterOp::Cas { expected, value }, Outcome::Ok) => {
                    (*expected == state).then_some(Some(*value))
                }
                // Executed but indeterminate: applied or refused, as the state says.
                (RegisterOp::Cas { expected, value }, Outcome::Unknown) => {
                    Some(if *expected == state {
                        Some(*value)
                    } else {
                        state
                    })
                }
            };
            next.is_some_and(|next| {
                done[i] = true;
                let found = some_order_is_legal(ops, done, next);
                done[i] = false;
                found
            })
        })
    }

    fn small_value() -> impl Strategy<Value = Option<i64>> {
        prop_oneof![Just(None), (1i64..4).prop_map(Some)]
    }

    fn small_operation() -> impl Strategy<Value = Operation> {
        let register_op = prop_oneof![
            small_value().prop_map(|value| RegisterOp::Read { value }),
            (1i64..4).prop_map(|value| RegisterOp::Write { value }),
            (small_value(), 1i64..4)
                .prop_map(|(expected, value)| RegisterOp::Cas { expected, value }),
        ];
        (register_op, outcome(), 0u64..20, 0u64..10).prop_map(
            |(register_op, outcome, start, length)| {
                op("k", 0, register_op, outcome, (start, start + length))
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn the_search_agrees_with_brute_force_on_small_concurrent_histories(
            history in prop::collection::vec(small_operation(), 0..7),
        ) {
            let expected = linearizable_by_brute_force(&history);
            let found = verdict(&history);
            prop_assert_eq!(found == Verdict::Linearizable, expected, "{:?}", found);
            prop_assert!(!matches!(found, Verdict::Unknown { .. }), "timed out");
        }

        #[test]
        fn a_sequential_execution_is_linearizable(steps in prop::collection::vec(step(), 0..60)) {
            let history = sequential_history(&steps);
            prop_assert_eq!(verdict(&history), Verdict::Linearizable);
        }

        #[test]
        fn a_read_of_a_value_never_written_makes_a_sequential_execution_not_linearizable(
            steps in prop::collection::vec(step(), 0..60),
            pick in any::<prop::sample::Index>(),
        ) {
            let mut history = sequential_history(&steps);
            let ok_reads: Vec<usize> = history
                .iter()
                .enumerate()
                .filter(|(_, o)| matches!(o.op, RegisterOp::Read { .. }) && o.outcome == Outcome::Ok)
                .map(|(i, _)| i)
                .collect();
            if ok_reads.is_empty() {
                let t = 10 * history.len() as u64;
                history.push(read(0, None, (t, t + 5)));
            }
            let target = if ok_reads.is_empty() { history.len() - 1 } else { ok_reads[pick.index(ok_reads.len())] };
            history[target].op = RegisterOp::Read { value: Some(1_000_000) };
            match verdict(&history) {
                Verdict::NotLinearizable { witness, .. } => {
                    prop_assert_eq!(witness.failed_at.as_ref(), Some(&history[target]));
                }
                other => prop_assert!(false, "expected a violation, got {:?}", other),
            }
        }

        #[test]
        fn a_concurrent_execution_is_linearizable(seed in any::<u64>(), keys in 1u64..3, processes in 2usize..6) {
            let history = concurrent_history(seed, 60, keys, processes);
            for result in check(&history, NO_DEADLINE, NO_DEADLINE) {
                prop_assert_eq!(result.verdict, Verdict::Linearizable);
            }
        }
    }
}
