//! Property tests of the scheduler: generated operations (sessions, submissions,
//! claims, heartbeats, completions, failures, cancels, retries, time) run by
//! [`Run`], which checks every invariant after each command.

use std::ops::{Range, RangeInclusive};

use proptest::prelude::*;
use proptest::sample::Index;

use super::invariants::Run;
use crate::sm::tasks::{task_limits, TaskLimits};

// ----- property test --------------------------------------------------------------

const CAPABILITIES: [&str; 4] = ["a", "b", "c", "d"];

pub(super) fn capability_subset(mask: u8) -> Vec<&'static str> {
    CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1 << bit) != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// A session or task: a live session or assigned task, any one created so far, or
/// an id that never existed.
#[derive(Debug, Clone, Copy)]
pub(super) enum Target {
    Active(Index),
    Known(Index),
    Unknown(u64),
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Token {
    /// The task's token when the batch is built.
    Current,
    /// One the task had before (or the current one if it never had another).
    Old(Index),
    Any(u64),
}

#[derive(Debug, Clone)]
pub(super) enum Op {
    CreateSession {
        capabilities: u8,
        capacity: u32,
        ttl_ms: u64,
    },
    Submit {
        required: u8,
        priority: i32,
        max_attempts: u32,
        lease_ms: u64,
        depends_on: Option<Index>,
    },
    Claim(Target),
    Heartbeat(Target, Token),
    Complete(Target, Token),
    Fail(Target, Token, bool),
    Cancel(Target),
    Retry(Target),
    EndSession(Target),
    /// An empty batch this much later.
    Advance(u64),
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        4 => any::<Index>().prop_map(Target::Active),
        2 => any::<Index>().prop_map(Target::Known),
        1 => (900_000u64..900_004).prop_map(Target::Unknown),
    ]
}

fn token() -> impl Strategy<Value = Token> {
    prop_oneof![
        3 => Just(Token::Current),
        2 => any::<Index>().prop_map(Token::Old),
        1 => (0u64..200).prop_map(Token::Any),
    ]
}

/// A session create: a capability mask from `masks`, room for 0 to 3 tasks, a TTL
/// from `ttls`.
fn create_session(masks: Range<u8>, ttls: RangeInclusive<u64>) -> impl Strategy<Value = Op> {
    (masks, 0u32..=3, ttls).prop_map(|(capabilities, capacity, ttl_ms)| Op::CreateSession {
        capabilities,
        capacity,
        ttl_ms,
    })
}

/// A submit: a required-capability mask from `masks`, a priority from `priorities`,
/// 1 to 3 attempts, a 0.2 to 2 s lease, and maybe a dependency (kept only where
/// `keep_dependency` says so).
fn submission(
    masks: Range<u8>,
    priorities: RangeInclusive<i32>,
    keep_dependency: fn(&Index) -> bool,
) -> impl Strategy<Value = Op> {
    (
        masks,
        priorities,
        1u32..=3,
        200u64..=2_000,
        proptest::option::of(any::<Index>()),
    )
        .prop_map(
            move |(required, priority, max_attempts, lease_ms, depends_on)| Op::Submit {
                required,
                priority,
                max_attempts,
                lease_ms,
                depends_on: depends_on.filter(keep_dependency),
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => create_session(0..8, 500..=3_000),
        3 => submission(0..8, -1..=2, |_| true),
        2 => target().prop_map(Op::Claim),
        1 => (target(), token()).prop_map(|(task, token)| Op::Heartbeat(task, token)),
        2 => (target(), token()).prop_map(|(task, token)| Op::Complete(task, token)),
        2 => (target(), token(), any::<bool>())
            .prop_map(|(task, token, retryable)| Op::Fail(task, token, retryable)),
        1 => target().prop_map(Op::Cancel),
        1 => target().prop_map(Op::Retry),
        1 => target().prop_map(Op::EndSession),
        2 => (0u64..=2_000).prop_map(Op::Advance),
    ]
}

/// Sequences of `len` operations from `op`, each paired with whether (with
/// probability `ends_batch`) the batch ends after it.
fn sequences(
    op: impl Strategy<Value = Op>,
    ends_batch: f64,
    len: Range<usize>,
) -> impl Strategy<Value = Vec<(Op, bool)>> {
    proptest::collection::vec((op, proptest::bool::weighted(ends_batch)), len)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_operations_keep_the_scheduler_invariants(
        ops in sequences(op(), 0.4, 1..60)
    ) {
        Run::execute(&ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Every batch gives the same outcomes and the same state (assignments, loads,
    /// fencing tokens) as the original full-scan assignment, and the capability-set
    /// queues and room indexes stay consistent with the records.
    #[test]
    fn indexed_assignment_matches_the_full_scan_reference(ops in sequences(busy_op(), 0.3, 1..150)) {
        Run::execute(&ops);
    }
}

/// Operations weighted towards a long mixed queue: many submissions over 16
/// capability sets and a wide priority range, sessions coming and going, and
/// completions and failures that free room.
fn busy_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => create_session(0..16, 500..=5_000),
        // Mostly independent tasks, so most of them queue at once.
        6 => submission(0..16, -3..=3, |index| index.index(4) == 0),
        2 => (target(), token()).prop_map(|(task, token)| Op::Complete(task, token)),
        1 => (target(), token(), any::<bool>())
            .prop_map(|(task, token, retryable)| Op::Fail(task, token, retryable)),
        1 => target().prop_map(Op::Cancel),
        1 => target().prop_map(Op::EndSession),
        1 => (0u64..=2_000).prop_map(Op::Advance),
    ]
}

/// Task limits small enough for a short run to fill the store and outlive retention
/// (a GC batch no run can exceed, so every time step removes everything expired).
const SMALL_TASK_LIMITS: TaskLimits = TaskLimits {
    max_tasks: 8,
    retention_ms: 3_000,
    gc_batch: 1_000,
};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The same invariants with terminal tasks removed after their retention and
    /// evicted from a full store: only terminal tasks go, only when due (or the
    /// oldest, to make room), every index (the terminal one included) stays
    /// consistent, and a snapshot round trip rebuilds them.
    #[test]
    fn random_operations_with_retention_and_eviction_keep_the_scheduler_invariants(ops in sequences(op(), 0.4, 1..100)) {
        task_limits::with(SMALL_TASK_LIMITS, || Run::execute(&ops));
    }
}
