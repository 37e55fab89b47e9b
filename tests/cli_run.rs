//! `conclave lock NAME -- CMD` and `conclave worker -- CMD` against real processes
//! with auth on: the command runs holding the lock with its fencing token in its
//! environment, its exit code is the CLI's and the lock is released after; when the
//! CLI's session expires on purpose (the CLI SIGSTOPped past its ttl until the
//! server expired the session, then resumed) the command is SIGTERMed and the CLI
//! exits 1; the worker runs the command per task (payload on stdin, result from
//! stdout) and a command exiting 100 dead-letters its task.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Cluster, Options};
use conclave_client::{Consistency, TaskSubmit};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

fn conclave(args: &[&str]) -> Command {
    let mut command = Command::new(common::binary());
    command
        .args(args)
        .env("CONCLAVE_TOKEN", common::admin_token())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Waits for `child` to exit; its code.
async fn exit_code(child: &mut Child) -> Option<i32> {
    let status = common::wait_until(WAIT, || {
        let status = child.try_wait().ok().flatten();
        async move { status }
    })
    .await;
    status.map(|s| s.code().unwrap_or(-1))
}

fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_runs_under_a_fenced_lock_and_is_stopped_when_the_lock_is_lost() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(3, Options::default()).await;
    let at = format!("127.0.0.1:{}", cluster.node(1).port);
    let dir = cluster.dir.path();

    // The command's exit code is the CLI's; the lock is held while it runs.
    let seen = dir.join("token");
    let script = format!("echo $CONCLAVE_FENCING_TOKEN > {}; exit 7", seen.display());
    let mut quick = conclave(&["lock", "job", "--endpoint", &at, "--", "sh", "-c", &script])
        .spawn()
        .unwrap();
    assert_eq!(exit_code(&mut quick).await, Some(7));
    let token: u64 = std::fs::read_to_string(&seen)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(token > 0);
    let api = cluster.api(1);
    let lock = api
        .lock_get("job", Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(
        lock["holders"],
        json!([]),
        "released after the command: {lock}"
    );

    // Lost: the CLI stops renewing past its ttl, the server expires the session;
    // resumed, the CLI sees its lease is gone, SIGTERMs the command and exits 1.
    let marks = dir.join("marks");
    let script = format!(
        "trap 'echo terminated >> {m}; exit 0' TERM; echo started >> {m}; \
         while true; do sleep 0.05; done",
        m = marks.display()
    );
    let mut held = conclave(&[
        "lock",
        "guarded",
        "--ttl-ms",
        "1000",
        "--endpoint",
        &at,
        "--",
        "sh",
        "-c",
        &script,
    ])
    .spawn()
    .unwrap();
    let started = common::wait_until(WAIT, || async {
        std::fs::read_to_string(&marks)
            .ok()?
            .contains("started")
            .then_some(())
    })
    .await;
    assert!(started.is_some(), "the command started");
    let lock = api.lock_get("guarded", Consistency::Linearizable).await;
    let session = lock.unwrap()["holders"][0]["session_id"]
        .as_u64()
        .expect("held");
    signal(&held, "STOP");
    let expired = common::wait_until(WAIT, || async {
        let gone = api.session_get(session, Consistency::Linearizable).await;
        (gone.err()?.status() == Some(404)).then_some(())
    })
    .await;
    assert!(
        expired.is_some(),
        "the server expired the stopped CLI's session"
    );
    let lock = api.lock_get("guarded", Consistency::Linearizable).await;
    let lock = lock.unwrap();
    assert_eq!(lock["holders"], json!([]), "{lock}");
    signal(&held, "CONT");
    assert_eq!(exit_code(&mut held).await, Some(1), "a lost lock exits 1");
    let marks = std::fs::read_to_string(&marks).unwrap();
    assert!(
        marks.contains("terminated"),
        "the command got SIGTERM: {marks}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_runs_a_command_per_task_and_its_exit_code_completes_or_fails_it() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(3, Options::default()).await;
    let at = format!("127.0.0.1:{}", cluster.node(2).port);
    let api = cluster.api(1);
    let submit = |payload: Value| TaskSubmit {
        kind: "double".into(),
        payload: Some(payload),
        required_capabilities: Some(vec!["sh".into()]),
        ..TaskSubmit::default()
    };
    let mut ids = Vec::new();
    for n in [3, 5] {
        let submitted = api.task_submit(&submit(json!(n))).await.unwrap();
        ids.push(submitted.task_id);
    }
    let script = "read n; echo \"{\\\"doubled\\\": $((n * 2)), \\\"task\\\": $CONCLAVE_TASK_ID}\"";
    let mut worker = conclave(&[
        "worker",
        "--capability",
        "sh",
        "--max-tasks",
        "2",
        "--endpoint",
        &at,
        "--",
        "sh",
        "-c",
        script,
    ])
    .spawn()
    .unwrap();
    assert_eq!(exit_code(&mut worker).await, Some(0));
    for (id, n) in ids.iter().zip([3, 5]) {
        let task = api.task_get(*id, Consistency::Linearizable).await.unwrap();
        assert_eq!(task["state"], "succeeded", "{task}");
        assert_eq!(
            task["result"],
            json!({"doubled": n * 2, "task": id}),
            "{task}"
        );
    }

    // Exit 100: failed for good (dead), not retried.
    let id = api.task_submit(&submit(json!(1))).await.unwrap().task_id;
    let mut failing = conclave(&[
        "worker",
        "--capability",
        "sh",
        "--max-tasks",
        "1",
        "--endpoint",
        &at,
        "--",
        "sh",
        "-c",
        "echo nope; exit 100",
    ])
    .spawn()
    .unwrap();
    assert_eq!(exit_code(&mut failing).await, Some(0));
    let task = api.task_get(id, Consistency::Linearizable).await.unwrap();
    assert_eq!(task["state"], "dead", "{task}");
}
