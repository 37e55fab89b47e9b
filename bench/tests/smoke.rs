//! End-to-end checks of the `conclave-bench` binary: short put, `mixed` and
//! `watch-fanout` runs against one real `conclave` node (the debug binary `cargo test
//! --workspace` builds; override with `CONCLAVE_BINARY`), a put run against a node
//! that has no leader (each `503` counted, not retried away), and the `summary` /
//! `chart` subcommands on synthetic JSON lines. Nothing here measures performance.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn conclave_binary() -> PathBuf {
    std::env::var_os("CONCLAVE_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/conclave")
        })
}

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_conclave-bench"))
}

/// A single-node cluster on a free loopback port; killed (by its pid) on drop, so
/// also when an assertion fails.
struct Node {
    child: Child,
    port: u16,
    _data: tempfile::TempDir,
}

impl Node {
    fn start() -> Self {
        let mut node = Self::spawn(|command, _, data| {
            command.arg("--data-dir").arg(data.join("node"));
        });
        node.wait_ready(Duration::from_secs(20));
        node
    }

    /// Node 1 of a 3-node cluster whose other two members never start: it answers
    /// but never has a leader, so every write is `503 no_leader`.
    fn start_without_leader() -> Self {
        let mut node = Self::spawn(|command, port, data| {
            let config = data.join("node1.toml");
            let text = format!(
                "node_id = 1\ndata_dir = {:?}\ninitial_members = [1, 2, 3]\n",
                data.join("node1").display().to_string()
            );
            std::fs::write(&config, text).expect("writing the config");
            // Node i listens on base + i.
            command
                .arg("--config")
                .arg(config)
                .env("CONCLAVE_BASE_PORT", (port - 1).to_string())
                .env(
                    "CONCLAVE_CLUSTER_SECRET",
                    "0123456789abcdef0123456789abcdef",
                );
        });
        node.wait_status("/health", 200, Duration::from_secs(20));
        node
    }

    /// Starts `conclave serve` on a free port, `configure` adding its arguments.
    fn spawn(configure: impl FnOnce(&mut Command, u16, &std::path::Path)) -> Self {
        let binary = conclave_binary();
        assert!(
            binary.exists(),
            "{} is missing: build it with `cargo build -p conclave` (`cargo test --workspace` does)",
            binary.display()
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let data = tempfile::tempdir().expect("temp dir");
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .env("CONCLAVE_BASE_PORT", port.to_string())
            .env("CONCLAVE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        configure(&mut command, port, data.path());
        let child = command.spawn().expect("starting conclave");
        Self {
            child,
            port,
            _data: data,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Polls `GET /ready` until it answers 200 (a leader is known and applied).
    fn wait_ready(&mut self, limit: Duration) {
        self.wait_status("/ready", 200, limit);
    }

    /// Polls `GET path` until it answers `status`.
    fn wait_status(&mut self, path: &str, status: u16, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("polling conclave") {
                panic!("conclave exited before it was ready: {status}");
            }
            if http_status(self.port, path) == Some(status) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "conclave on port {} was not ready within {limit:?}",
            self.port
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `command` (a measured run) with `--json FILE` added; asserts it succeeded and
/// returns its stdout and the one JSON line it wrote.
fn run_to_json(command: &mut Command) -> (String, serde_json::Value) {
    let out = tempfile::tempdir().expect("temp dir");
    let json = out.path().join("results.jsonl");
    let run = command
        .arg("--json")
        .arg(&json)
        .output()
        .expect("running conclave-bench");
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "exit {}: {stdout}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    let line = std::fs::read_to_string(&json).expect("json file");
    let line = serde_json::from_str(line.trim()).expect("one JSON line");
    (stdout, line)
}

/// The status code of a plain HTTP/1.1 GET, or `None` if the node does not answer.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn a_short_put_run_against_one_node_succeeds_and_records_a_json_line() {
    let node = Node::start();
    let out = tempfile::tempdir().expect("temp dir");
    let json = out.path().join("results.jsonl");
    let run = bench()
        .args(["--urls", &node.url(), "--workload", "put", "--clients", "4"])
        .args(["--duration", "2", "--pids", &node.child.id().to_string()])
        .arg("--json")
        .arg(&json)
        .output()
        .expect("running conclave-bench");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "exit {}: {stdout}\n{stderr}",
        run.status
    );
    assert!(
        stdout.contains("system=conclave workload=put clients=4"),
        "{stdout}"
    );
    assert!(
        stderr.contains("ops="),
        "no progress line on stderr: {stderr}"
    );

    let line: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&json).expect("json file").trim())
            .expect("one JSON line");
    assert_eq!(line["system"], "conclave");
    assert_eq!(line["workload"], "put");
    assert_eq!(line["errors"], 0, "{line}");
    assert!(line["ops"].as_u64().unwrap_or(0) > 0, "{line}");
    assert!(line["ops_per_sec"].as_f64().unwrap_or(0.0) > 0.0, "{line}");
    assert!(line["rss_kib"][0].as_u64().unwrap_or(0) > 0, "{line}");
}

#[test]
fn a_put_run_against_a_node_without_a_leader_counts_each_503_once() {
    let node = Node::start_without_leader();
    // The node holds a write about 3 s waiting for a leader, then answers `503
    // no_leader`: each client sees at least one within 5 s. A client that retried
    // 503s would still be retrying at the end of the window, and count nothing.
    let (_, line) = run_to_json(
        bench()
            .args(["--urls", &node.url(), "--workload", "put", "--clients", "2"])
            .args(["--duration", "5"]),
    );
    assert_eq!(line["ops"], 0, "{line}");
    let errors = line["errors"].as_u64().unwrap_or(0);
    assert!(errors >= 2, "{line}");
    assert_eq!(
        line["error_kinds"],
        serde_json::json!({ "http 503": errors }),
        "{line}"
    );
}

#[test]
fn a_short_mixed_run_against_one_node_has_no_errors() {
    let node = Node::start();
    let (_, line) = run_to_json(
        bench()
            .args([
                "--urls",
                &node.url(),
                "--workload",
                "mixed",
                "--clients",
                "2",
            ])
            .args(["--duration", "2"]),
    );
    assert_eq!(line["workload"], "mixed");
    assert_eq!(line["errors"], 0, "{line}");
    for kind in [
        "submit", "claim", "complete", "acquire", "release", "put", "get",
    ] {
        let ops = line["ops_by_kind"][kind]["ops"].as_u64().unwrap_or(0);
        assert!(ops > 0, "no {kind} in {line}");
    }
}

#[test]
fn a_short_task_cycle_next_run_completes_cycles_without_errors() {
    let node = Node::start();
    let (_, line) = run_to_json(
        bench()
            .args(["--urls", &node.url(), "--workload", "task-cycle-next"])
            .args(["--clients", "2", "--duration", "2"]),
    );
    assert_eq!(line["workload"], "task-cycle-next");
    assert_eq!(line["errors"], 0, "{line}");
    assert!(line["ops"].as_u64().unwrap_or(0) > 2, "{line}");
}

#[test]
fn a_short_watch_fanout_run_delivers_every_write_to_every_watcher() {
    let node = Node::start();
    let (stdout, line) = run_to_json(
        bench()
            .args(["--urls", &node.url(), "--workload", "watch-fanout"])
            .args(["--watchers", "4", "--clients", "2", "--duration", "2"])
            .args(["--pids", &node.child.id().to_string()]),
    );
    assert!(stdout.contains("watch-fanout watchers=4"), "{stdout}");
    assert_eq!(line["workload"], "watch-fanout");
    assert_eq!(line["errors"], 0, "{line}");
    assert_eq!(line["missing"], 0, "{line}");
    assert_eq!(line["duplicates"], 0, "{line}");
    let acked = line["writes_acked"].as_u64().unwrap_or(0);
    assert!(acked > 0, "{line}");
    assert_eq!(line["events_delivered"].as_u64(), Some(4 * acked), "{line}");
    assert!(
        line["events_per_sec"].as_f64().unwrap_or(0.0) > 0.0,
        "{line}"
    );
    assert!(
        line["cpu"]["nodes"][0]["percent"].as_f64().is_some(),
        "{line}"
    );
}

#[test]
fn summary_and_chart_show_both_systems() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("results.jsonl");
    let mut lines = String::new();
    for (system, scale) in [("conclave", 1.0), ("etcd", 1.5)] {
        for clients in [1, 16, 64, 256] {
            for round in 0..3 {
                let ops = scale * 100.0 * clients as f64 + round as f64;
                lines.push_str(&format!(
                    "{{\"system\":\"{system}\",\"workload\":\"put\",\"clients\":{clients},\"ops_per_sec\":{ops},\"p50_us\":900,\"p99_us\":{},\"max_us\":9000,\"errors\":0}}\n",
                    1000 * clients
                ));
            }
        }
    }
    std::fs::write(&input, lines).expect("writing input");

    let summary = bench()
        .args(["summary", "--input"])
        .arg(&input)
        .output()
        .expect("running summary");
    let table = String::from_utf8_lossy(&summary.stdout);
    assert!(summary.status.success(), "{table}");
    assert!(
        table.contains("| put | 16 | 1601 | 2401 | 0.67 | 16.00 ms | 16.00 ms |"),
        "{table}"
    );

    let svg_path = dir.path().join("chart.svg");
    let chart = bench()
        .args(["chart", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&svg_path)
        .output()
        .expect("running chart");
    assert!(
        chart.status.success(),
        "{}",
        String::from_utf8_lossy(&chart.stderr)
    );
    let svg = std::fs::read_to_string(&svg_path).expect("the SVG");
    assert!(svg.starts_with("<svg"), "{svg}");
    assert!(svg.trim_end().ends_with("</svg>"));
    for series in ["class=\"series conclave\"", "class=\"series etcd\""] {
        // One line per panel: throughput and p99.
        assert_eq!(svg.matches(series).count(), 2, "{series} in {svg}");
    }
    assert!(
        svg.contains("256 clients"),
        "points carry their client count"
    );
}
