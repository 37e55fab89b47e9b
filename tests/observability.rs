//! Observability (issue #15): `/metrics` of a real 3-node cluster, parsed as
//! Prometheus text, has every metric `docs/observability.md` lists and values that
//! fit what was done; the nodes' logs hold no ANSI escape codes when written to a
//! file, the JSON format is one object per line, and a write sent to a follower
//! with an `X-Request-Id` can be followed in both nodes' logs to its index.
//! Real processes; every wait is on a condition.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Cluster, Options};
use conclave_client::{Consistency, LockAcquire, Release};
use serde_json::{json, Value};

const DOC: &str = include_str!("../docs/observability.md");

/// Every metric name in the doc's tables (rows starting with `` | `conclave_ ``),
/// and whether its row says it exists **on the leader only**.
fn documented() -> BTreeMap<String, bool> {
    DOC.lines()
        .filter_map(|line| Some((line.strip_prefix("| `conclave_")?, line)))
        .filter_map(|(rest, line)| {
            let name = rest.split('`').next()?;
            Some((
                format!("conclave_{name}"),
                line.contains("**on the leader only**"),
            ))
        })
        .collect()
}

/// `line` with the braces inside quoted label values made parentheses:
/// prometheus-parse's sample pattern ends the label set at the first `}`, even one
/// inside a quoted value (which the format allows, and route templates such as
/// `/v1/kv/{*key}` have), so the test looks routes up as `/v1/kv/(*key)`.
fn unbraced(line: &str) -> String {
    let (mut quoted, mut escaped) = (false, false);
    line.chars()
        .map(|c| {
            let inside = quoted;
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                _ => {}
            }
            match c {
                '{' if inside => '(',
                '}' if inside => ')',
                other => other,
            }
        })
        .collect()
}

async fn scrape(cluster: &Cluster, id: u64) -> prometheus_parse::Scrape {
    let text = common::text(cluster.http.get(format!("{}/metrics", cluster.url(id)))).await;
    let lines = text.lines().map(|line| Ok(unbraced(line)));
    prometheus_parse::Scrape::parse(lines).expect("Prometheus text")
}

/// The value of the sample `name` whose labels include `labels`.
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let sample = scrape.samples.iter().find(|sample| {
        sample.metric == name
            && labels
                .iter()
                .all(|(label, want)| sample.labels.get(label) == Some(*want))
    })?;
    match &sample.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => Some(*v),
        prometheus_parse::Value::Histogram(_) | prometheus_parse::Value::Summary(_) => None,
    }
}

/// A histogram's observation count (its `_count` series).
fn count(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let histogram = scrape.samples.iter().find(|sample| {
        sample.metric == name
            && labels
                .iter()
                .all(|(label, want)| sample.labels.get(label) == Some(*want))
    });
    match histogram.map(|sample| &sample.value) {
        Some(prometheus_parse::Value::Histogram(buckets)) => {
            buckets.iter().map(|b| b.count).fold(0.0, f64::max)
        }
        _ => 0.0,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_cover_the_doc_and_logs_follow_a_forwarded_write() {
    let _serial = common::serial().await;
    let debug = "info,openraft=warn,conclave::server=debug".to_owned();
    let env = |id: u64, name: &str, value: &str| (id, name.to_owned(), value.to_owned());
    let options = Options {
        // Node 1 logs text, nodes 2 and 3 JSON; all three to files.
        env: vec![
            env(1, "CONCLAVE_LOG", &debug),
            env(2, "CONCLAVE_LOG", &debug),
            env(3, "CONCLAVE_LOG", &debug),
            env(2, "CONCLAVE_LOG_FORMAT", "json"),
            env(3, "CONCLAVE_LOG_FORMAT", "json"),
        ],
        ..Options::default()
    };
    let cluster = Cluster::start(3, options).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let http = &cluster.http;

    let api = cluster.api(leader);
    for i in 0..5 {
        api.kv_put(&format!("obs/{i}"), &json!(i)).await.unwrap();
    }
    // A write through the follower, named: forwarded to the leader with its id.
    // (Raw HTTP: the `X-Request-Id` and `X-Conclave-Index` headers are the subject.)
    let response = http
        .put(format!("{}/v1/kv/obs/traced", cluster.url(follower)))
        .header("x-request-id", "obs-trace-1")
        .json(&json!({"value": "traced"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answered_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(answered_id, "obs-trace-1");
    let index: u64 = response.headers()["x-conclave-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();

    // A lock acquire that queues, then is granted: one acquire wait observed.
    let holder = common::observer_session(&api, "holder", 30_000).await;
    let waiter = common::observer_session(&api, "waiter", 30_000).await;
    let held = common::acquire(&api, "obs", holder).await;
    let waiting = {
        let api = api.clone();
        tokio::spawn(async move {
            let acquire = LockAcquire {
                session_id: waiter,
                wait_ms: Some(20_000),
                ..LockAcquire::default()
            };
            api.lock_acquire("obs", &acquire).await
        })
    };
    let queued = common::wait_until(Duration::from_secs(10), || async {
        let lock = api.lock_get("obs", Consistency::Linearizable).await.ok()?;
        (lock["waiters"].as_array().map_or(0, Vec::len) == 1).then_some(())
    })
    .await;
    assert!(queued.is_some(), "the second acquire never queued");
    let release = Release {
        session_id: holder,
        fencing_token: held.fencing_token,
        ..Release::default()
    };
    api.lock_release("obs", &release).await.expect("released");
    waiting.await.unwrap().expect("the waiter granted");

    // A snapshot built on every node (each builds its own).
    for id in 1..=3 {
        cluster.api(id).snapshot().await.expect("snapshot built");
    }
    let last = cluster.status(leader).await.unwrap()["last_applied_index"]
        .as_u64()
        .unwrap();
    for id in 1..=3 {
        cluster
            .wait_applied(id, last, Duration::from_secs(10))
            .await;
    }

    // Every documented metric on every node, and the values fit.
    let documented = documented();
    assert!(documented.len() > 40, "{documented:?}");
    assert_eq!(
        unbraced(r#"a{route="/x/{id}",b="\"}"} 1"#),
        r#"a{route="/x/(id)",b="\")"} 1"#
    );
    for id in 1..=3 {
        let scrape = scrape(&cluster, id).await;
        let missing: Vec<_> = (documented.iter())
            .filter(|(name, leader_only)| {
                !scrape.docs.contains_key(*name) && (id == leader || !**leader_only)
            })
            .collect();
        assert!(missing.is_empty(), "node {id} lacks {missing:?}");
        let undocumented: Vec<_> = (scrape.docs.keys())
            .filter(|name| !documented.contains_key(*name))
            .collect();
        assert!(
            undocumented.is_empty(),
            "docs/observability.md lacks {undocumented:?}"
        );
        let at = |name: &str| value(&scrape, name, &[]).unwrap_or_else(|| panic!("no {name}"));
        assert!(at("conclave_raft_commit_index") >= last as f64, "node {id}");
        assert!(at("conclave_raft_applied_index") >= last as f64);
        assert_eq!(at("conclave_raft_leader_id"), leader as f64);
        assert_eq!(at("conclave_node_id"), id as f64);
        assert!(at("conclave_raft_term") >= 1.0);
        assert!(at("conclave_raft_snapshot_bytes") > 0.0, "node {id}");
        assert!(count(&scrape, "conclave_raft_snapshot_build_seconds", &[]) >= 1.0);
        assert_eq!(at("conclave_sessions_live"), 2.0);
        assert!(at("conclave_state_kv_keys") >= 6.0);
        let puts = value(
            &scrape,
            "conclave_events_applied_total",
            &[("type", "kv.put")],
        );
        assert!(puts >= Some(6.0), "node {id}: {puts:?}");
        let queued_tasks = value(&scrape, "conclave_tasks", &[("state", "queued")]);
        assert_eq!(queued_tasks, Some(0.0));
        let kv = [("method", "PUT"), ("route", "/v1/kv/(*key)")];
        if id == leader {
            assert_eq!(at("conclave_raft_is_leader"), 1.0);
            let ok = [kv[0], kv[1], ("status", "200")];
            let requests = value(&scrape, "conclave_http_requests_total", &ok);
            // Five sent here, one forwarded here by the follower.
            assert!(requests >= Some(6.0), "{requests:?}");
            assert!(count(&scrape, "conclave_http_request_duration_seconds", &kv) >= 6.0);
            assert!(at("conclave_proposer_batches_total") >= 1.0);
            assert!(count(&scrape, "conclave_proposer_batch_commands", &[]) >= 1.0);
            let wait = count(
                &scrape,
                "conclave_acquire_wait_seconds",
                &[("primitive", "lock")],
            );
            assert_eq!(wait, 1.0);
            for other in (1..=3).filter(|other| *other != leader) {
                let lag = value(
                    &scrape,
                    "conclave_raft_replication_lag",
                    &[("follower", &other.to_string())],
                );
                assert!(lag.is_some(), "no lag of {other} on the leader");
            }
        } else {
            assert_eq!(at("conclave_raft_is_leader"), 0.0);
            assert!(value(&scrape, "conclave_raft_replication_lag", &[]).is_none());
        }
        let forwarded = at("conclave_http_forwarded_total");
        assert_eq!(
            forwarded,
            if id == follower { 1.0 } else { 0.0 },
            "node {id}"
        );
    }

    // Logs: no escape codes in a file, JSON lines parse, the traced write is in
    // both nodes' logs under one request id, with its index on the leader's line.
    assert!(
        !cluster.log(1).contains('\x1b'),
        "ANSI codes in node 1's log file"
    );
    for id in [2, 3] {
        for line in cluster
            .log(id)
            .lines()
            .filter(|line| !line.trim().is_empty())
        {
            serde_json::from_str::<Value>(line)
                .unwrap_or_else(|e| panic!("node {id}: not JSON ({e}): {line}"));
        }
    }
    let traced = |id: u64| -> Vec<String> {
        let log = cluster.log(id);
        log.lines()
            .filter(|line| line.contains("obs-trace-1"))
            .map(str::to_owned)
            .collect()
    };
    let forwarding = traced(follower);
    assert!(
        forwarding
            .iter()
            .any(|line| line.contains("forwarding to the leader")),
        "{forwarding:#?}"
    );
    let on_leader = traced(leader);
    let answered = on_leader
        .iter()
        .find(|line| line.contains("answered"))
        .unwrap_or_else(|| {
            panic!("no answered line for obs-trace-1 on the leader: {on_leader:#?}")
        });
    let with_index = [format!("\"index\":{index}"), format!("index={index}")];
    assert!(
        with_index.iter().any(|text| answered.contains(text)),
        "{answered}"
    );
}
