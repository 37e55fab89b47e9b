//! The golden scenario: a table of batches, each with the outcomes it must give and
//! a summary of the state after it.

use crate::sm::tasks::{NewTask, TaskId, TaskState};
use crate::sm::test_support::{
    cancel, claim, complete, create_session, end_session, error, fail, heartbeat, keepalive, put,
    retry, submit, task_spec, tick, updated, Machine,
};
use crate::sm::{Command, KvOutcome, Outcome, Refusal, SessionOutcome, State, TaskOutcome};

// ----- golden scenario ------------------------------------------------------------

/// `sessions: id load/capacity | tasks: id state[@session#token] | kv: key[@session]`.
fn summary(state: &State) -> String {
    let sessions: Vec<String> = state
        .sessions
        .iter()
        .map(|s| format!("{} {}/{}", s.id, s.load, s.capacity))
        .collect();
    let tasks: Vec<String> = state
        .tasks
        .range_from(None)
        .map(|t| match t.session_id {
            Some(s) if t.state == TaskState::Assigned => {
                format!("{} assigned@{s}#{}", t.id, t.fencing_token)
            }
            _ => format!("{} {}", t.id, t.state.name()),
        })
        .collect();
    let kv: Vec<String> = state
        .kv
        .iter()
        .map(|(key, entry)| match entry.session_id {
            Some(s) => format!("{key}@{s}"),
            None => key.clone(),
        })
        .collect();
    format!(
        "sessions: {} | tasks: {} | kv: {}",
        sessions.join(", "),
        tasks.join(", "),
        kv.join(", ")
    )
}

#[test]
fn golden_scenario_outcomes_match_the_table() {
    use TaskState::*;
    let job = |required: &[&str], lease_ms, depends_on: Vec<TaskId>| {
        submit(NewTask {
            lease_ms,
            depends_on,
            ..task_spec(required)
        })
    };
    let nightly = |kind: &str| {
        submit(NewTask {
            kind: kind.into(),
            lease_ms: 10_000,
            idempotency_key: Some("nightly".into()),
            ..task_spec(&[])
        })
    };
    let submitted = |task_id, state, existing| {
        Outcome::Task(TaskOutcome::Submitted {
            task_id,
            state,
            existing,
        })
    };
    let claimed = |task_id, fencing_token, lease_expires_at_ms| {
        Outcome::Task(TaskOutcome::Claimed {
            task_id,
            fencing_token,
            lease_expires_at_ms,
        })
    };
    let wrong = |message: &str| {
        Outcome::Refused(Refusal::WrongState {
            message: message.into(),
        })
    };
    // (time, commands, outcomes, summary after the batch); command indexes in comments.
    let table: Vec<(u64, Vec<Command>, Vec<Outcome>, &str)> = vec![
        (
            1_000,
            // 1, 2
            vec![
                create_session(&["cpu"], 1, 5_000),
                create_session(&["cpu", "gpu"], 2, 5_000),
            ],
            vec![
                Outcome::Session(SessionOutcome::Created {
                    session_id: 1,
                    expires_at_ms: 6_000,
                }),
                Outcome::Session(SessionOutcome::Created {
                    session_id: 2,
                    expires_at_ms: 6_000,
                }),
            ],
            "sessions: 1 0/1, 2 0/2 | tasks:  | kv: ",
        ),
        (
            1_100,
            // 3 render (gpu, 2 attempts), 4 build (cpu), 5 report after both
            vec![
                submit(NewTask {
                    kind: "render".into(),
                    lease_ms: 2_000,
                    max_attempts: 2,
                    ..task_spec(&["gpu"])
                }),
                job(&["cpu"], 2_000, vec![]),
                job(&[], 10_000, vec![3, 4]),
            ],
            vec![
                submitted(3, Assigned, false),
                submitted(4, Assigned, false),
                submitted(5, Pending, false),
            ],
            "sessions: 1 1/1, 2 1/2 | tasks: 3 assigned@2#3, 4 assigned@1#4, 5 pending | kv: ",
        ),
        (
            1_200,
            // 6, 7
            vec![claim(1), claim(2)],
            vec![claimed(4, 4, 3_200), claimed(3, 3, 3_200)],
            "sessions: 1 1/1, 2 1/2 | tasks: 3 assigned@2#3, 4 assigned@1#4, 5 pending | kv: ",
        ),
        (
            1_500,
            // 8, 9
            vec![
                heartbeat(3, 3, Some("{\"frame\":10}")),
                complete(4, 4, "\"built\""),
            ],
            vec![
                Outcome::Task(TaskOutcome::LeaseExtended {
                    lease_expires_at_ms: 3_500,
                    cancel_requested: false,
                }),
                updated(4, Succeeded),
            ],
            "sessions: 1 0/1, 2 1/2 | tasks: 3 assigned@2#3, 4 succeeded, 5 pending | kv: ",
        ),
        (
            1_600,
            // 10, 11
            vec![put("leader", Some(1)), complete(4, 4, "\"again\"")],
            vec![Outcome::Kv(KvOutcome::Written { version: 10 }), wrong("task 4 is succeeded")],
            "sessions: 1 0/1, 2 1/2 | tasks: 3 assigned@2#3, 4 succeeded, 5 pending | kv: leader@1",
        ),
        (
            2_000,
            // 12: session 1 now expires at 6_900, session 2 still at 6_000
            vec![tick(&[(1, 1_900)])],
            vec![Outcome::Session(SessionOutcome::Ticked { renewed: 1 })],
            "sessions: 1 0/1, 2 1/2 | tasks: 3 assigned@2#3, 4 succeeded, 5 pending | kv: leader@1",
        ),
        (
            3_500,
            // render's lease ran out: the time step takes index 13 of its own and
            // reassigns under it, before the fail (14) runs
            vec![fail(3, 3, true)],
            vec![Outcome::Refused(Refusal::StaleFencingToken { current: 13 })],
            "sessions: 1 0/1, 2 1/2 | tasks: 3 assigned@2#13, 4 succeeded, 5 pending | kv: leader@1",
        ),
        (
            3_600,
            // 15, 16: the second attempt was the last; report is cancelled with it
            vec![claim(2), fail(3, 13, true)],
            vec![claimed(3, 13, 5_600), updated(3, Dead)],
            "sessions: 1 0/1, 2 0/2 | tasks: 3 dead, 4 succeeded, 5 cancelled | kv: leader@1",
        ),
        (
            3_700,
            // 17, 18
            vec![retry(3), job(&[], 10_000, vec![3])],
            vec![updated(3, Assigned), submitted(18, Pending, false)],
            "sessions: 1 0/1, 2 1/2 | tasks: 3 assigned@2#17, 4 succeeded, 5 cancelled, 18 pending | kv: leader@1",
        ),
        (
            3_800,
            // 19, 20: 18 is ready and goes to session 1 (tie on load, lower id)
            vec![claim(2), complete(3, 17, "\"rendered\"")],
            vec![claimed(3, 17, 5_800), updated(3, Succeeded)],
            "sessions: 1 1/1, 2 0/2 | tasks: 3 succeeded, 4 succeeded, 5 cancelled, 18 assigned@1#20 | kv: leader@1",
        ),
        (
            4_000,
            // 21, 22
            vec![cancel(5), nightly("nightly")],
            vec![
                wrong("task 5 is already cancelled"),
                submitted(22, Assigned, false),
            ],
            "sessions: 1 1/1, 2 1/2 | tasks: 3 succeeded, 4 succeeded, 5 cancelled, 18 assigned@1#20, 22 assigned@2#22 | kv: leader@1",
        ),
        (
            4_100,
            // 23
            vec![nightly("nightly-again")],
            vec![submitted(22, Assigned, true)],
            "sessions: 1 1/1, 2 1/2 | tasks: 3 succeeded, 4 succeeded, 5 cancelled, 18 assigned@1#20, 22 assigned@2#22 | kv: leader@1",
        ),
        (
            6_000,
            // session 2 expired first (time step 24); 22 waits (session 1 is full). 25
            vec![keepalive(2)],
            vec![Outcome::Refused(Refusal::SessionNotFound { session_id: 2 })],
            "sessions: 1 1/1 | tasks: 3 succeeded, 4 succeeded, 5 cancelled, 18 assigned@1#20, 22 queued | kv: leader@1",
        ),
        (
            6_500,
            // 26, 27
            vec![complete(18, 20, "\"published\""), keepalive(1)],
            vec![
                updated(18, Succeeded),
                Outcome::Session(SessionOutcome::Renewed {
                    expires_at_ms: 11_500,
                }),
            ],
            "sessions: 1 1/1 | tasks: 3 succeeded, 4 succeeded, 5 cancelled, 18 succeeded, 22 assigned@1#26 | kv: leader@1",
        ),
        (
            7_000,
            // 28, 29
            vec![end_session(1), put("leader", Some(1))],
            vec![Outcome::Session(SessionOutcome::Ended), Outcome::Refused(Refusal::SessionNotFound { session_id: 1 })],
            "sessions:  | tasks: 3 succeeded, 4 succeeded, 5 cancelled, 18 succeeded, 22 queued | kv: ",
        ),
        (
            7_100,
            // 30, 31
            vec![nightly("nightly-3"), cancel(22)],
            vec![submitted(22, Queued, true), updated(22, Cancelled)],
            "sessions:  | tasks: 3 succeeded, 4 succeeded, 5 cancelled, 18 succeeded, 22 cancelled | kv: ",
        ),
    ];
    let mut m = Machine::default();
    for (step, (time, commands, expected, after)) in table.into_iter().enumerate() {
        let step = step + 1;
        assert_eq!(
            m.apply(time, commands),
            expected,
            "step {step} at {time}: outcomes"
        );
        assert_eq!(summary(&m.state), after, "step {step} at {time}: state");
    }
    assert_eq!(m.state.last_command_index, 31);
    assert_eq!(
        m.task(22).errors,
        vec![
            error(1, "session_ended", "", 6_000),
            error(2, "session_ended", "", 7_000),
        ]
    );
}
