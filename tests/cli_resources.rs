//! The resource commands of the CLI against real `conclave` processes with auth on:
//! `kv`, `session`, `lock`, `semaphore`, `barrier`, `election`, `proposal`, `2pc`,
//! `txn`, `task` and `watch`, each as a table and as `--json`, through a follower
//! and through an endpoint list whose first node is dead; and the documented exit
//! codes: 1 refused (a CAS mismatch, a wrong token), 2 usage, 3 unavailable (no node
//! answers). (4, indeterminate, is unit-tested in `src/cli/exit.rs`.)

mod common;

use std::ffi::OsStr;
use std::process::Output;

use common::{Cluster, Options};
use serde_json::{json, Value};

fn run(args: &[&str], token: Option<&str>) -> Output {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    common::cli_output(&args, token)
}

fn texts(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `conclave <args> --endpoint <at>` with the admin token: its stdout, on success.
fn ok(at: &str, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend(["--endpoint", at]);
    let output = run(&all, Some(common::admin_token()));
    assert!(output.status.success(), "{all:?}: {}", texts(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The same with `--json`, parsed.
fn json_of(at: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let text = ok(at, &all);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{all:?}: {e}: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_resource_command_works_against_a_cluster_with_tables_json_and_exit_codes() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(3, Options::default()).await;
    let leader = cluster
        .wait_for_leader(std::time::Duration::from_secs(30))
        .await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let at = format!("127.0.0.1:{}", cluster.node(follower).port);
    let at = at.as_str();

    // kv: put (JSON and plain text), get, list as a table, CAS refused (exit 1).
    let put = json_of(at, &["kv", "put", "app/a", "{\"n\": 1}"]);
    let version = put["version"].as_u64().expect("a version");
    ok(at, &["kv", "put", "app/b", "hello"]);
    assert_eq!(
        json_of(at, &["kv", "get", "app/b"])["value"],
        json!("hello")
    );
    let table = ok(at, &["kv", "list", "--prefix", "app/"]);
    assert!(
        table.contains("KEY") && table.contains("app/a") && table.contains("app/b"),
        "{table}"
    );
    let stale = ok(at, &["kv", "get", "app/a", "--stale"]);
    assert!(stale.contains(&format!("version: {version}")), "{stale}");
    let cas = run(
        &[
            "kv",
            "put",
            "app/a",
            "2",
            "--if-version",
            "1",
            "--endpoint",
            at,
        ],
        Some(common::admin_token()),
    );
    assert_eq!(cas.status.code(), Some(1), "{}", texts(&cas));
    assert!(texts(&cas).contains("cas_mismatch"));
    // An endpoint list whose first node answers nothing: the next one is used.
    let list = format!("127.0.0.1:1,{at}");
    assert_eq!(
        json_of(&list, &["kv", "get", "app/b"])["value"],
        json!("hello")
    );

    // A session and every primitive for it.
    let session = json_of(
        at,
        &[
            "session",
            "create",
            "--name",
            "cli",
            "--ttl-ms",
            "60000",
            "--capacity",
            "0",
        ],
    );
    let sid = session["session_id"].as_u64().unwrap().to_string();
    let sid = sid.as_str();
    let acquired = json_of(at, &["lock", "acquire", "db", "--session", sid]);
    let token = acquired["fencing_token"]
        .as_u64()
        .expect("granted")
        .to_string();
    let shown = ok(at, &["lock", "get", "db"]);
    assert!(shown.contains(&token), "{shown}");
    let locks = json_of(at, &["lock", "list", "--prefix", "d"]);
    assert_eq!(locks["items"][0]["name"], json!("db"), "{locks}");
    ok(
        at,
        &[
            "lock",
            "release",
            "db",
            "--session",
            sid,
            "--fencing-token",
            &token,
        ],
    );
    let permit = json_of(
        at,
        &[
            "semaphore",
            "acquire",
            "pool",
            "--session",
            sid,
            "--limit",
            "2",
        ],
    );
    assert!(permit["fencing_token"].is_u64(), "{permit}");
    let released = json_of(
        at,
        &[
            "barrier",
            "wait",
            "start",
            "--session",
            sid,
            "--parties",
            "1",
        ],
    );
    assert_eq!(released["released"], json!(true), "{released}");
    let barriers = ok(at, &["barrier", "list"]);
    assert!(
        barriers.contains("NAME") && barriers.contains("start"),
        "{barriers}"
    );
    let elected = json_of(
        at,
        &[
            "election",
            "campaign",
            "chief",
            "--session",
            sid,
            "--value",
            "\"me\"",
        ],
    );
    let term = elected["term"].as_u64().expect("elected").to_string();
    assert!(ok(at, &["election", "get", "chief"]).contains(&term));
    ok(
        at,
        &[
            "election",
            "resign",
            "chief",
            "--session",
            sid,
            "--term",
            &term,
        ],
    );

    // Decisions: a proposal and a two-phase commit voted by the admin.
    let proposal = json_of(
        at,
        &[
            "proposal",
            "create",
            "ship",
            "--voters",
            "alice",
            "--rule",
            "1",
            "--deadline-ms",
            "60000",
        ],
    );
    let pid = proposal["proposal_id"].as_u64().unwrap().to_string();
    let voted = json_of(at, &["proposal", "vote", &pid, "--voter", "alice", "yes"]);
    assert_eq!(voted["state"], json!("accepted"), "{voted}");
    let tx = json_of(
        at,
        &[
            "2pc",
            "create",
            "--participants",
            "db",
            "--timeout-ms",
            "60000",
        ],
    );
    let tid = tx["id"].as_u64().unwrap().to_string();
    ok(at, &["2pc", "vote", &tid, "--participant", "db", "commit"]);
    assert_eq!(
        json_of(at, &["2pc", "get", &tid])["state"],
        json!("committed")
    );
    ok(at, &["2pc", "ack", &tid, "--participant", "db"]);

    // A transaction from a file.
    let file = cluster.dir.path().join("txn.json");
    let body = json!({"compare": [{"key": "app/b", "exists": true}],
                      "success": [{"put": {"key": "app/c", "value": 3}}], "failure": []});
    std::fs::write(&file, body.to_string()).unwrap();
    let applied = json_of(at, &["txn", file.to_str().unwrap()]);
    assert_eq!(applied["succeeded"], json!(true), "{applied}");

    // Tasks: a worker session claims and completes one.
    let worker = json_of(
        at,
        &[
            "session",
            "create",
            "--name",
            "w",
            "--capabilities",
            "py",
            "--ttl-ms",
            "60000",
        ],
    );
    let wid = worker["session_id"].as_u64().unwrap().to_string();
    let submitted = json_of(
        at,
        &[
            "task",
            "submit",
            "build",
            "--payload",
            "{\"x\":1}",
            "--requires",
            "py",
        ],
    );
    let task = submitted["task_id"].as_u64().unwrap().to_string();
    let claimed = json_of(
        at,
        &["task", "claim", "--session", &wid, "--wait-ms", "5000"],
    );
    let lease = claimed["fencing_token"].as_u64().unwrap().to_string();
    ok(
        at,
        &[
            "task",
            "complete",
            &task,
            "--fencing-token",
            &lease,
            "--result",
            "42",
        ],
    );
    let listed = ok(at, &["task", "list", "--state", "succeeded"]);
    assert!(listed.contains("build"), "{listed}");
    ok(at, &["session", "end", &wid]);

    // watch: the history from the first write on, one line per event.
    let events = ok(
        at,
        &[
            "watch",
            "--from-index",
            "1",
            "--prefix",
            "app/",
            "--timeout-ms",
            "1000",
        ],
    );
    assert!(
        events
            .lines()
            .any(|l| l.contains("kv.put") && l.contains("app/a")),
        "{events}"
    );
    assert!(
        events
            .lines()
            .any(|l| l.contains("kv.put") && l.contains("app/c")),
        "{events}"
    );

    // Exit codes: a wrong token is refused (1), bad arguments are usage (2), no node
    // answering is unavailable (3).
    let denied = run(
        &["kv", "get", "app/a", "--endpoint", at],
        Some("not-a-token"),
    );
    assert_eq!(denied.status.code(), Some(1), "{}", texts(&denied));
    assert!(texts(&denied).contains("401"));
    let usage = run(
        &["kv", "put", "--endpoint", at],
        Some(common::admin_token()),
    );
    assert_eq!(usage.status.code(), Some(2), "{}", texts(&usage));
    let down = run(
        &["kv", "get", "a", "--endpoint", "127.0.0.1:1"],
        Some(common::admin_token()),
    );
    assert_eq!(down.status.code(), Some(3), "{}", texts(&down));
}
