//! Unit tests of transactions: every kind of compare, true and false, choosing the
//! branch; the abort-on-refusal rule (nothing of a refused branch is applied); the
//! shape rules; and, on many random states, that a transaction of random ops on
//! distinct resources is refused exactly when one of its ops, applied alone in
//! order, would be — and otherwise changes the state exactly as those ops would.

use super::*;
use crate::sm::kv::KvCommand;
use crate::sm::locks::{LockCommand, LockMode};
use crate::sm::semaphores::SemaphoreCommand;
use crate::sm::tasks::{TaskCommand, TaskState};
use crate::sm::test_support::{
    acquire_lock, campaign, one, open_sessions, put, run, submit, task_spec, FOREVER_MS,
};
use crate::sm::{KvOutcome, LockOutcome, Outcome, State};

fn txn(compare: Vec<Compare>, success: Vec<Command>, failure: Vec<Command>) -> Command {
    Command::Txn(TxnCommand {
        compare,
        success,
        failure,
    })
}

fn put_value(key: &str, value: &str) -> Command {
    Command::Kv(KvCommand::Put {
        key: key.into(),
        value_json: value.into(),
        if_version: None,
        session_id: None,
    })
}

fn lock(name: &str, session_id: u64) -> Command {
    Command::Lock(LockCommand::Acquire {
        name: name.into(),
        session_id,
        mode: LockMode::Exclusive,
        wait: false,
        lock_delay_ms: 0,
        previous_token: None,
    })
}

/// The parts of a state a transaction can change (not the command index or the
/// request table).
fn rooms(state: &State) -> String {
    format!(
        "{:?}{:?}{:?}{:?}{:?}",
        state.kv, state.locks, state.semaphores, state.tasks, state.sessions
    )
}

/// A state with two sessions, key `a` (version 3, value {"n":1}), lock `L` held by
/// session 1, election `E` led by session 2 and task 7 queued.
fn fixture() -> State {
    let mut state = State::default();
    open_sessions(&mut state, 0, 2, FOREVER_MS);
    one(&mut state, 1, put_value("a", r#"{"n": 1}"#));
    one(
        &mut state,
        1,
        acquire_lock("L", 1, LockMode::Exclusive, false),
    );
    one(&mut state, 1, campaign(2, 0, false));
    one(
        &mut state,
        1,
        Command::Task(TaskCommand::Submit(task_spec(&["none"]))),
    );
    state
}

fn succeeded(outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Txn(TxnOutcome::Applied { succeeded, .. }) => *succeeded,
        other => panic!("not applied: {other:?}"),
    }
}

#[test]
fn each_compare_picks_the_branch_when_it_holds_and_the_other_when_not() {
    let state = fixture();
    let version = state.kv["a"].version;
    let token = state.locks.get("L").unwrap().holders[0].fencing_token;
    let term = state
        .elections
        .get("E")
        .unwrap()
        .leader
        .as_ref()
        .unwrap()
        .term;
    let task = state.tasks.range_from(None).next().unwrap();
    let (task_id, task_state) = (task.id, task.state);
    let cases: Vec<(Compare, Compare)> = vec![
        (
            Compare::KeyVersion {
                key: "a".into(),
                version,
            },
            Compare::KeyVersion {
                key: "a".into(),
                version: version + 1,
            },
        ),
        (
            Compare::KeyVersion {
                key: "absent".into(),
                version: 0,
            },
            Compare::KeyVersion {
                key: "a".into(),
                version: 0,
            },
        ),
        (
            Compare::KeyExists {
                key: "a".into(),
                exists: true,
            },
            Compare::KeyExists {
                key: "absent".into(),
                exists: true,
            },
        ),
        (
            // Compared as parsed JSON: spacing and key order do not matter.
            Compare::KeyValue {
                key: "a".into(),
                value_json: r#"{ "n" :1}"#.into(),
            },
            Compare::KeyValue {
                key: "a".into(),
                value_json: r#"{"n": 2}"#.into(),
            },
        ),
        (
            Compare::LockToken {
                lock: "L".into(),
                fencing_token: token,
            },
            Compare::LockToken {
                lock: "L".into(),
                fencing_token: token + 1,
            },
        ),
        (
            Compare::ElectionTerm {
                election: "E".into(),
                term,
            },
            Compare::ElectionTerm {
                election: "E".into(),
                term: term + 1,
            },
        ),
        (
            Compare::TaskState {
                task_id,
                state: task_state,
            },
            Compare::TaskState {
                task_id,
                state: TaskState::Succeeded,
            },
        ),
    ];
    for (holds, fails) in cases {
        for (compare, expected) in [(holds.clone(), true), (fails.clone(), false)] {
            let mut state = fixture();
            let outcome = one(
                &mut state,
                2,
                txn(
                    vec![compare.clone()],
                    vec![put_value("s", "1")],
                    vec![put_value("f", "1")],
                ),
            );
            assert_eq!(succeeded(&outcome), expected, "{compare:?}");
            assert_eq!(state.kv.contains_key("s"), expected, "{compare:?}");
            assert_eq!(state.kv.contains_key("f"), !expected, "{compare:?}");
        }
        // All must hold.
        let mut state = fixture();
        let outcome = one(&mut state, 2, txn(vec![holds, fails], vec![], vec![]));
        assert!(!succeeded(&outcome));
    }
}

#[test]
fn a_refused_op_aborts_the_whole_branch_and_nothing_of_it_is_applied() {
    let mut state = fixture();
    let before = rooms(&state);
    let outcome = one(
        &mut state,
        2,
        txn(
            vec![],
            vec![
                put_value("b", "1"),
                lock("M", 2),
                lock("L", 2),
                put_value("c", "2"),
            ],
            vec![],
        ),
    );
    assert_eq!(
        outcome,
        Outcome::Txn(TxnOutcome::OpRefused {
            succeeded: true,
            op_index: 2,
            refusal: Box::new(Outcome::Lock(LockOutcome::Held)),
        })
    );
    assert_eq!(rooms(&state), before, "nothing applied");
    // A CAS op refused the same way; the same branch without it applies in full.
    let cas = Command::Kv(KvCommand::Put {
        key: "a".into(),
        value_json: "0".into(),
        if_version: Some(1),
        session_id: None,
    });
    let outcome = one(
        &mut state,
        3,
        txn(vec![], vec![put_value("b", "1"), cas], vec![]),
    );
    assert!(matches!(
        outcome,
        Outcome::Txn(TxnOutcome::OpRefused { op_index: 1, ref refusal, .. })
            if matches!(**refusal, Outcome::Kv(KvOutcome::CasMismatch { .. }))
    ));
    assert_eq!(rooms(&state), before);
    let outcome = one(
        &mut state,
        4,
        txn(vec![], vec![put_value("b", "1"), lock("M", 2)], vec![]),
    );
    let Outcome::Txn(TxnOutcome::Applied { results, .. }) = outcome else {
        panic!("{outcome:?}");
    };
    assert!(matches!(results[0], Outcome::Kv(KvOutcome::Written { .. })));
    assert!(matches!(
        results[1],
        Outcome::Lock(LockOutcome::Granted { .. })
    ));
    // Every op of a transaction shares its command index (as in etcd, one revision).
    assert_eq!(state.kv["b"].version, state.last_command_index);
}

#[test]
fn a_branch_touches_each_resource_once_submits_one_task_and_never_waits() {
    let mut state = fixture();
    let refused = |state: &mut State, ops: Vec<Command>| {
        let outcome = one(state, 2, txn(vec![], ops, vec![]));
        assert!(
            matches!(
                outcome,
                Outcome::Refused(crate::sm::Refusal::InvalidCommand { .. })
            ),
            "{outcome:?}"
        );
    };
    refused(&mut state, vec![put_value("k", "1"), put_value("k", "2")]);
    refused(&mut state, vec![lock("M", 1), lock("M", 2)]);
    refused(
        &mut state,
        vec![submit(task_spec(&[])), submit(task_spec(&[]))],
    );
    refused(
        &mut state,
        vec![acquire_lock("M", 1, LockMode::Exclusive, true)],
    );
    refused(&mut state, vec![crate::sm::test_support::keepalive(1)]);
    let mut depends = task_spec(&[]);
    depends.depends_on = vec![4];
    refused(
        &mut state,
        vec![
            Command::Task(TaskCommand::Cancel { task_id: 4 }),
            submit(depends),
        ],
    );
    assert!(!state.kv.contains_key("k"));
}

/// A tiny deterministic generator (the test must not depend on a seed it prints).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// A random op on one of a few keys, locks, semaphores and tasks.
fn random_op(rng: &mut Lcg, state: &State) -> Command {
    let session = 1 + rng.below(3); // session 3 does not exist
    let name = ["x", "y", "z"][rng.below(3) as usize].to_owned();
    let token = state.last_fencing_token.saturating_sub(rng.below(3));
    let task_id = 1 + rng.below(state.last_command_index.max(1));
    match rng.below(9) {
        0 => Command::Kv(KvCommand::Put {
            key: name,
            value_json: "1".into(),
            if_version: (rng.below(2) == 0).then(|| rng.below(8)),
            session_id: (rng.below(3) == 0).then_some(session),
        }),
        1 => Command::Kv(KvCommand::Delete {
            key: name,
            if_version: (rng.below(2) == 0).then(|| rng.below(8)),
        }),
        2 => {
            let mut spec = task_spec(&[]);
            spec.depends_on = (rng.below(2) == 0).then_some(task_id).into_iter().collect();
            Command::Task(TaskCommand::Submit(spec))
        }
        3 => Command::Task(TaskCommand::Cancel { task_id }),
        4 => Command::Lock(LockCommand::Acquire {
            name,
            session_id: session,
            mode: if rng.below(2) == 0 {
                LockMode::Exclusive
            } else {
                LockMode::Shared
            },
            wait: false,
            lock_delay_ms: 0,
            previous_token: None,
        }),
        5 => Command::Lock(LockCommand::Release {
            name,
            session_id: session,
            fencing_token: token,
        }),
        6 | 7 => Command::Semaphore(SemaphoreCommand::Acquire {
            name,
            session_id: session,
            permits: rng.below(3) as u32,
            limit: 2 + rng.below(2) as u32,
            wait: false,
        }),
        _ => Command::Semaphore(SemaphoreCommand::Release {
            name,
            session_id: session,
            fencing_token: token,
        }),
    }
}

/// The resources an op touches, for keeping a random branch's ops apart (a submit
/// touches the tasks it depends on, and a branch submits once).
fn resources(op: &Command) -> Vec<String> {
    match op {
        Command::Kv(KvCommand::Put { key, .. } | KvCommand::Delete { key, .. }) => {
            vec![format!("k{key}")]
        }
        Command::Lock(LockCommand::Acquire { name, .. } | LockCommand::Release { name, .. }) => {
            vec![format!("l{name}")]
        }
        Command::Semaphore(
            SemaphoreCommand::Acquire { name, .. } | SemaphoreCommand::Release { name, .. },
        ) => vec![format!("s{name}")],
        Command::Task(TaskCommand::Cancel { task_id }) => vec![format!("t{task_id}")],
        Command::Task(TaskCommand::Submit(new)) => {
            let mut touched: Vec<String> =
                new.depends_on.iter().map(|id| format!("t{id}")).collect();
            touched.push("submit".into());
            touched
        }
        other => panic!("not generated: {other:?}"),
    }
}

#[test]
fn the_check_before_applying_agrees_with_the_rooms_rules_on_random_states() {
    let mut rng = Lcg(0x5eed);
    let (mut refused, mut applied) = (0, 0);
    for case in 0..3_000 {
        // A random state: two sessions, then random ordinary commands.
        let mut state = State::default();
        open_sessions(&mut state, 0, 2, FOREVER_MS);
        for _ in 0..rng.below(12) {
            let op = random_op(&mut rng, &state);
            one(&mut state, 1, op);
        }
        one(&mut state, 1, put("x", None));
        // A random branch of up to 4 ops on distinct resources.
        let mut branch: Vec<Command> = Vec::new();
        for _ in 0..1 + rng.below(4) {
            let op = random_op(&mut rng, &state);
            let touched: Vec<String> = branch.iter().flat_map(resources).collect();
            if resources(&op).iter().all(|r| !touched.contains(r)) {
                branch.push(op);
            }
        }
        // The same ops applied one by one, in order, at one command index (the
        // sessions take no tasks, so no assignment follows either way).
        let mut alone = state.clone();
        alone.last_command_index += 1;
        let index = alone.last_command_index;
        let outcomes: Vec<Outcome> = branch
            .iter()
            .map(|op| alone.apply_command(op, index))
            .collect();
        let first_refused = outcomes.iter().position(is_refusal);
        let before = rooms(&state);
        let outcome = run(&mut state, 1, vec![txn(vec![], branch.clone(), vec![])]).remove(0);
        match (&outcome, first_refused) {
            (Outcome::Txn(TxnOutcome::OpRefused { op_index, .. }), Some(_)) => {
                // The check may stop at an earlier op than applying would only if
                // that op is refused alone too; it must name a refused op.
                assert!(is_refusal(&outcomes[*op_index]), "case {case}: {branch:?} {outcome:?} {outcomes:?}");
                assert_eq!(rooms(&state), before, "case {case}: nothing applied");
                refused += 1;
            }
            (Outcome::Txn(TxnOutcome::Applied { results, .. }), None) => {
                let results: Vec<Outcome> = results.iter().map(|r| state.as_left(r.clone())).collect();
                let expected: Vec<Outcome> = outcomes.iter().map(|r| alone.as_left(r.clone())).collect();
                assert_eq!(results, expected, "case {case}: {branch:?}");
                assert_eq!(rooms(&state), rooms(&alone), "case {case}: {branch:?}");
                applied += 1;
            }
            _ => panic!("case {case}: the check and the rules disagree on {branch:?}: {outcome:?} vs {outcomes:?}"),
        }
    }
    assert!(
        refused > 300 && applied > 300,
        "refused {refused}, applied {applied}"
    );
}
