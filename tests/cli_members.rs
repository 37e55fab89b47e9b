//! The operator CLI against real `conclave` processes with auth on: `member list`
//! (three voters, one of them the leader, matched indexes from the leader even when
//! asked through a follower), `status` (leader, term, indexes), `--json`, a 4th
//! node added as a learner, promoted and removed, a voter add that waits out the
//! leader's catch-up window and converges once the node starts (progress on
//! stderr, the add repeated; the 409's `matched_index`/`target_index` are pinned
//! in tests/cluster.rs), refused tokens (non-zero exit, the code printed), and `snapshot save`'s
//! progress. Every wait polls a condition; processes are stopped by their PID.

mod common;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Cluster, Options};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

/// `conclave <args>` with `token` in `CONCLAVE_TOKEN`.
fn run_with(args: &[&str], token: Option<&str>) -> Output {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    common::cli_output(&args, token)
}

/// `conclave <args>` with the admin token; its stdout, which it must succeed with.
fn ok(args: &[&str]) -> String {
    let output = run_with(args, Some(common::admin_token()));
    let (stdout, stderr) = texts(&output);
    assert!(output.status.success(), "{args:?}: {stdout}{stderr}");
    stdout
}

fn texts(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// One row of `member list`'s table.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    id: u64,
    addr: String,
    role: String,
    matched: Option<u64>,
    lag: Option<u64>,
}

fn rows(table: &str) -> Vec<Row> {
    let mut lines = table.lines().skip_while(|line| !line.starts_with("ID "));
    let header = lines.next().expect("a table header");
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["ID", "ADDR", "ROLE", "MATCHED", "LAG"]
    );
    lines
        .map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(cells.len(), 5, "{line}");
            Row {
                id: cells[0].parse().unwrap(),
                addr: cells[1].to_owned(),
                role: cells[2].to_owned(),
                matched: cells[3].parse().ok(),
                lag: cells[4].parse().ok(),
            }
        })
        .collect()
}

fn endpoint(cluster: &Cluster, id: u64) -> String {
    format!("127.0.0.1:{}", cluster.node(id).port)
}

/// Polls `member list` through node `via` until `check` holds for its rows.
async fn wait_rows(cluster: &Cluster, via: u64, check: impl Fn(&[Row]) -> bool) -> Vec<Row> {
    let addr = endpoint(cluster, via);
    let found = common::wait_until(WAIT, || async {
        let output = run_with(
            &["member", "list", "--endpoint", &addr],
            Some(common::admin_token()),
        );
        // A list during an election may find no leader to ask: poll again.
        output.status.success().then_some(())?;
        let rows = rows(&texts(&output).0);
        check(&rows).then_some(rows)
    })
    .await;
    found.unwrap_or_else(|| {
        let last = ok(&["member", "list", "--endpoint", &addr]);
        panic!("member list never matched:\n{last}\n{}", cluster.logs())
    })
}

/// Adds node `id` to the harness (new ports, a config with no initial members) and
/// starts its process, which waits to be added: the operator adds it by hand.
fn start_unadded(cluster: &mut Cluster, id: u64) {
    cluster.add_joiner(id, 1);
    cluster.nodes[id as usize - 1].args.clear();
    cluster.spawn(id);
}

/// A CLI process whose stdout and stderr are collected as they come; killed by its
/// PID when dropped.
struct Running {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = Command::new(common::binary())
            .args(args)
            .env("CONCLAVE_TOKEN", common::admin_token())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut out = child.stdout.take().unwrap();
        let sink = stdout.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            sink.lock().unwrap().push_str(&text);
        });
        let err = BufReader::new(child.stderr.take().unwrap());
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                let mut text = sink.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        Running {
            child,
            stdout,
            stderr,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_listed_added_promoted_and_removed_and_status_shows_the_leader() {
    let _serial = common::serial().await;
    // A short catch-up window, so a voter add that cannot catch up is refused fast.
    let options = Options {
        extra_toml: "[limits]\nlearner_catch_up_ms = 1000\n".into(),
        ..Options::default()
    };
    let mut cluster = Cluster::start(3, options).await;
    let leader = cluster.wait_for_leader(WAIT).await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();

    // 1. Three voters, one of them the leader; asked through a follower, the CLI
    //    shows the leader's matched indexes.
    let listed = wait_rows(&cluster, follower, |rows| {
        rows.len() == 3
            && rows
                .iter()
                .all(|row| row.matched.is_some() && row.lag.is_some())
    })
    .await;
    let leaders: Vec<u64> = listed
        .iter()
        .filter(|row| row.role == "leader")
        .map(|row| row.id)
        .collect();
    assert_eq!(leaders, [leader], "{listed:?}");
    assert_eq!(
        listed.iter().filter(|row| row.role == "voter").count(),
        2,
        "{listed:?}"
    );
    for row in &listed {
        assert_eq!(row.addr, endpoint(&cluster, row.id));
    }

    // 2. status: leader, term, indexes, the members with matched indexes.
    let term = cluster.status(leader).await.unwrap()["term"]
        .as_u64()
        .unwrap();
    let status = ok(&["status", "--endpoint", &endpoint(&cluster, follower)]);
    let first = status.lines().next().unwrap();
    assert!(
        first.starts_with(&format!(
            "leader {leader} at {}, term ",
            endpoint(&cluster, leader)
        )),
        "{status}"
    );
    let shown_term: u64 = first.rsplit("term ").next().unwrap().parse().unwrap();
    assert!(shown_term >= term, "{status}");
    assert!(status.contains("commit index "), "{status}");
    assert!(
        status.contains(&format!("(node {leader}'s view, leader)")),
        "{status}"
    );
    assert_eq!(rows(&status).len(), 3, "{status}");
    assert!(
        rows(&status).iter().all(|row| row.matched.is_some()),
        "{status}"
    );

    // 3. --json prints the leader's GET /v1/cluster body.
    let parsed: Value = serde_json::from_str(&ok(&[
        "status",
        "--json",
        "--endpoint",
        &endpoint(&cluster, follower),
    ]))
    .expect("status --json is JSON");
    assert_eq!(parsed["leader_id"].as_u64(), Some(leader), "{parsed}");
    assert_eq!(parsed["state"], "leader", "{parsed}");
    let members = parsed["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{parsed}");
    assert!(members.iter().all(|m| m["lag"].is_u64()), "{parsed}");
    // A follower's own view knows no lag: only the leader does.
    let own = cluster.status(follower).await.unwrap();
    let own_members = own["members"].as_array().unwrap();
    assert!(own_members.iter().all(|m| m["lag"].is_null()), "{own}");
    let listed: Value = serde_json::from_str(&ok(&[
        "member",
        "list",
        "--json",
        "--addr",
        &endpoint(&cluster, leader),
    ]))
    .expect("member list --json is JSON");
    assert_eq!(listed["members"].as_array().map(Vec::len), Some(3));

    // 4. A 4th node, started first, added as a learner, promoted, removed.
    start_unadded(&mut cluster, 4);
    let (addr4, raft4) = (endpoint(&cluster, 4), cluster.node(4).raft_addr());
    let added = ok(&[
        "member",
        "add",
        "4",
        &addr4,
        "--raft-addr",
        &raft4,
        "--learner",
        "--endpoint",
        &endpoint(&cluster, follower),
    ]);
    assert!(added.starts_with("node 4 is a learner\n"), "{added}");
    wait_rows(&cluster, follower, |rows| {
        rows.len() == 4
            && rows
                .iter()
                .any(|r| r.id == 4 && r.role == "learner" && r.lag == Some(0))
    })
    .await;
    let promoted = ok(&[
        "member",
        "promote",
        "4",
        "--endpoint",
        &endpoint(&cluster, follower),
    ]);
    assert!(promoted.starts_with("node 4 is a voter\n"), "{promoted}");
    wait_rows(&cluster, follower, |rows| {
        rows.len() == 4 && rows.iter().all(|r| r.role != "learner")
    })
    .await;
    // Promoting a voter again leaves it as it is.
    let again = ok(&[
        "member",
        "promote",
        "4",
        "--endpoint",
        &endpoint(&cluster, leader),
    ]);
    assert!(again.starts_with("node 4 is a voter\n"), "{again}");
    let removed = ok(&[
        "member",
        "remove",
        "4",
        "--endpoint",
        &endpoint(&cluster, follower),
    ]);
    assert!(removed.starts_with("node 4 removed\n"), "{removed}");
    wait_rows(&cluster, follower, |rows| {
        rows.len() == 3 && rows.iter().all(|r| r.id != 4)
    })
    .await;
    cluster.kill(4);
    // Not a member: refused with a message, non-zero exit.
    let output = run_with(
        &[
            "member",
            "promote",
            "4",
            "--endpoint",
            &endpoint(&cluster, leader),
        ],
        Some(common::admin_token()),
    );
    let (_, stderr) = texts(&output);
    assert!(
        !output.status.success() && stderr.contains("node 4 is not a member"),
        "{stderr}"
    );

    // 5. `member add` of a voter whose process is not up yet: progress on stderr,
    //    the add repeated, converging once the node starts.
    cluster.add_joiner(5, 1);
    cluster.nodes[4].args.clear();
    let (addr5, raft5) = (endpoint(&cluster, 5), cluster.node(5).raft_addr());
    let adding = Running::start(&[
        "member",
        "add",
        "5",
        &addr5,
        "--raft-addr",
        &raft5,
        "--timeout",
        "90s",
        "--endpoint",
        &endpoint(&cluster, follower),
    ]);
    let waited = common::wait_until(WAIT, || async {
        adding.stderr().contains("adding again").then_some(())
    })
    .await;
    assert!(waited.is_some(), "{}", adding.stderr());
    cluster.spawn(5);
    let mut adding = adding;
    let deadline = std::time::Instant::now() + WAIT;
    let exit = loop {
        if let Some(status) = adding.child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "{}", adding.stderr());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let stderr = adding.stderr();
    assert!(exit.success(), "{stderr}");
    let stdout = common::wait_until(WAIT, || async {
        let text = adding.stdout.lock().unwrap().clone();
        (!text.is_empty()).then_some(text)
    })
    .await
    .unwrap_or_default();
    assert!(
        stdout.starts_with("node 5 is a voter\n"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|line| line.starts_with("node 5: ") && line.contains(" entries")),
        "progress lines: {stderr}"
    );
    assert!(!stderr.contains(['\x1b', '\r']), "{stderr:?}");
    ok(&[
        "member",
        "remove",
        "5",
        "--endpoint",
        &endpoint(&cluster, leader),
    ]);
    cluster.kill(5);

    // 6. Refused tokens: non-zero exit, the status and code printed.
    let output = run_with(
        &[
            "member",
            "list",
            "--token",
            "not-a-token",
            "--endpoint",
            &endpoint(&cluster, leader),
        ],
        None,
    );
    let (_, stderr) = texts(&output);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("401 unauthenticated"), "{stderr}");
    let reader = common::token("dashboard", &["read"]);
    let output = run_with(
        &[
            "member",
            "remove",
            "2",
            "--endpoint",
            &endpoint(&cluster, leader),
        ],
        Some(&reader),
    );
    let (_, stderr) = texts(&output);
    assert!(
        !output.status.success() && stderr.contains("403 forbidden"),
        "{stderr}"
    );
    let output = run_with(
        &["status", "--endpoint", &endpoint(&cluster, leader)],
        Some(&reader),
    );
    assert!(
        output.status.success(),
        "a read token may look: {:?}",
        texts(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_save_streams_to_the_file_with_progress_and_a_refusal_leaves_no_file() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(1, Options::default()).await;
    // About 1.5 MiB of state, so at least one progress line.
    let value = "x".repeat(16 * 1024);
    for n in 0..100 {
        let (status, _) = common::put(
            &cluster.http,
            &cluster.url(1),
            &format!("big/{n}"),
            json!({"value": value}),
        )
        .await;
        assert_eq!(status, 200);
    }
    let file = cluster.dir.path().join("backup.bin");
    let file_text = file.to_str().unwrap();
    let output = run_with(
        &[
            "snapshot",
            "save",
            file_text,
            "--endpoint",
            &endpoint(&cluster, 1),
        ],
        Some(common::admin_token()),
    );
    let (stdout, stderr) = texts(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(size > 1 << 20, "{size}");
    assert!(
        stdout.starts_with(&format!("saved {size} bytes to ")),
        "{stdout}"
    );
    assert!(stderr.contains(" MiB received"), "{stderr}");
    // Off a terminal the progress is whole lines: no bar's escapes or redraws.
    assert!(!stderr.contains(['\x1b', '\r']), "{stderr:?}");
    assert!(
        stderr.contains(&format!("received {size} bytes")),
        "{stderr}"
    );
    assert!(!cluster.dir.path().join("backup.bin.partial").exists());

    // A refused download: the code printed, no file left under either name.
    let refused = cluster.dir.path().join("refused.bin");
    let output = run_with(
        &[
            "snapshot",
            "save",
            refused.to_str().unwrap(),
            "--endpoint",
            &endpoint(&cluster, 1),
            "--token",
            &common::token("dashboard", &["read"]),
        ],
        None,
    );
    let (_, stderr) = texts(&output);
    assert!(
        !output.status.success() && stderr.contains("403 forbidden"),
        "{stderr}"
    );
    assert!(!refused.exists());
    assert!(!cluster.dir.path().join("refused.bin.partial").exists());
}
