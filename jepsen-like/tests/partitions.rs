//! Network faults: the per-link proxy really opens, cuts (blackhole and refuse),
//! delays and resets a TCP link (against a local echo server), and against real
//! `conclave` processes an isolated leader is replaced by a new one on the majority
//! side while the register history stays linearizable; under the `membership`
//! nemesis real spare nodes join with `serve --join` and are removed again, and a
//! voter removed through the API is added back, leaving a full, converged cluster.

mod common;

use std::time::{Duration, Instant};

use jepsen_like::nemesis::{FaultEvent, Nemesis};
use jepsen_like::proxy::{Link, LinkMode};
use jepsen_like::run::execute;
use jepsen_like::workloads::Workload;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::{config, out_dir, SERIAL};

/// An echo server on a free loopback port.
async fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Sends `message` and waits up to `wait` for it to come back.
async fn round_trip(stream: &mut TcpStream, message: &[u8], wait: Duration) -> Option<Vec<u8>> {
    stream.write_all(message).await.ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + wait;
    while got.len() < message.len() {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
    Some(got)
}

/// Whether the peer closed `stream` (EOF or reset) within `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(wait, stream.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn a_link_forwards_cuts_delays_and_resets() {
    let echo = echo_server().await;
    let link = Link::spawn(echo, 7).unwrap();
    let second = Duration::from_secs(1);

    // Open: bytes pass both ways.
    let mut pooled = TcpStream::connect(link.addr()).await.unwrap();
    assert_eq!(
        round_trip(&mut pooled, b"hello", second).await.as_deref(),
        Some(&b"hello"[..])
    );

    // Blackhole: the pooled connection stays up but nothing gets through, and a new
    // connection is accepted and never answered.
    link.set(LinkMode::Blackhole);
    let before = link.stats();
    assert_eq!(
        round_trip(&mut pooled, b"lost", Duration::from_millis(300)).await,
        None
    );
    let mut fresh = TcpStream::connect(link.addr()).await.unwrap();
    assert_eq!(
        round_trip(&mut fresh, b"void", Duration::from_millis(300)).await,
        None
    );
    let during = link.stats().since(&before);
    assert!(during.dropped_bytes >= 8, "{during:?}");
    assert_eq!(during.blackholed, 1, "{during:?}");

    // Heal: the connections the blackhole held are reset; new ones work.
    link.set(LinkMode::Open);
    assert!(
        closed_within(&mut pooled, second).await,
        "held connection survived the heal"
    );
    assert!(
        closed_within(&mut fresh, second).await,
        "held connection survived the heal"
    );
    let mut healed = TcpStream::connect(link.addr()).await.unwrap();
    assert_eq!(
        round_trip(&mut healed, b"again", second).await.as_deref(),
        Some(&b"again"[..])
    );

    // Refuse: the live connection is reset now, new ones at once.
    let before = link.stats();
    link.set(LinkMode::Refuse);
    assert!(
        closed_within(&mut healed, second).await,
        "live connection survived a cut"
    );
    let mut refused = TcpStream::connect(link.addr()).await.unwrap();
    assert_eq!(
        round_trip(&mut refused, b"no", Duration::from_millis(300)).await,
        None
    );
    let during = link.stats().since(&before);
    assert!(during.killed >= 1 && during.refused >= 1, "{during:?}");
    link.set(LinkMode::Open);

    // Delay: each direction adds its latency.
    let mut fast = TcpStream::connect(link.addr()).await.unwrap();
    let t = Instant::now();
    assert!(round_trip(&mut fast, b"quick", second).await.is_some());
    let open_rtt = t.elapsed();
    link.set(LinkMode::Delay {
        min_ms: 200,
        max_ms: 200,
    });
    let t = Instant::now();
    assert!(round_trip(&mut fast, b"slow", Duration::from_secs(3))
        .await
        .is_some());
    let delayed_rtt = t.elapsed();
    assert!(
        delayed_rtt >= Duration::from_millis(390) && delayed_rtt > open_rtt * 2,
        "open {open_rtt:?}, delayed {delayed_rtt:?}"
    );
    assert!(link.stats().delayed_chunks >= 2);

    // Reset: live connections are closed abruptly every 100 ms; traffic still flows
    // on new ones.
    link.set(LinkMode::Reset {
        min_ms: 100,
        max_ms: 100,
    });
    assert!(
        closed_within(&mut fast, second).await,
        "no reset within a second"
    );
    assert!(link.stats().reset_rounds >= 1);
    link.set(LinkMode::Open);
    let mut last = TcpStream::connect(link.addr()).await.unwrap();
    assert_eq!(
        round_trip(&mut last, b"end", second).await.as_deref(),
        Some(&b"end"[..])
    );
}

fn of_kind<'a>(faults: &'a [FaultEvent], kind: &str) -> Vec<&'a FaultEvent> {
    faults.iter().filter(|f| f.kind == kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_is_replaced_on_the_majority_side() {
    let _serial = SERIAL.lock().await;
    let dir = out_dir("partitions");
    let report = execute(config(
        Workload::Register,
        Nemesis::PartitionLeader,
        15,
        21,
        &dir,
    ))
    .await
    .expect("harness");
    let partitions = of_kind(&report.faults, "partition-leader");
    assert!(!partitions.is_empty(), "the nemesis never fired");
    for fault in &partitions {
        // The isolated node was the leader, cut from every peer both ways, and the
        // cut did something to the links.
        assert!(fault.was_leader, "{fault:#?}");
        assert_eq!(fault.detail["leader_at_install"], fault.node);
        assert_eq!(fault.detail["groups"][0], serde_json::json!([fault.node]));
        assert_eq!(fault.detail["links"].as_object().unwrap().len(), 4);
        let totals = &fault.detail["link_totals"];
        let effect = ["killed", "refused", "blackholed", "dropped_bytes"]
            .iter()
            .map(|k| totals[k].as_u64().unwrap())
            .sum::<u64>();
        assert!(effect > 0, "the cut touched no connection: {totals}");
    }
    // While a partition was active, a majority node saw a newer leader among the
    // majority.
    let replaced: Vec<_> = partitions
        .iter()
        .filter_map(|f| {
            let new = &f.detail["new_leader_on_majority"];
            (!new.is_null()).then(|| (f.node, new["leader"].as_u64().unwrap()))
        })
        .collect();
    assert!(
        !replaced.is_empty(),
        "no new leader seen on the majority side: {:#?}",
        partitions
    );
    assert!(replaced.iter().all(|(old, new)| old != new));
    assert!(
        report.total().ok > 50,
        "too few operations: {:?}",
        report.counts
    );
    assert_eq!(report.verdict, "pass", "{:#?}", report.checks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_nodes_join_and_leave_and_a_removed_voter_is_added_back() {
    let _serial = SERIAL.lock().await;
    let dir = out_dir("partitions");
    let report = execute(config(Workload::Register, Nemesis::Membership, 15, 5, &dir))
        .await
        .expect("harness");
    let changes = of_kind(&report.faults, "membership");
    assert!(!changes.is_empty(), "the nemesis never fired");
    let mut grown = 0;
    for change in &changes {
        let d = &change.detail;
        assert!(!change.was_leader, "{change:#?}");
        if d["change"] == "grow" {
            // Spares (ids 4 and 5) started with --join, voters, removed, stopped.
            grown += 1;
            assert_eq!(
                d["started_pids"].as_array().unwrap().len(),
                change.nodes.len(),
                "{d:#}"
            );
            for spare in &change.nodes {
                assert!(*spare > 3, "{d:#}");
                let joined = &d["joined"][spare.to_string()];
                assert_eq!(joined["done"], true, "{d:#}");
                assert!(
                    joined["voters"]
                        .as_array()
                        .unwrap()
                        .contains(&(*spare).into()),
                    "{d:#}"
                );
                let removed = &d["remove"][spare.to_string()];
                assert_eq!(removed["done"], true, "{d:#}");
                assert_eq!(removed["logged_joined"], true, "{d:#}");
            }
            // A spare made leader is removed all the same (it hands over first).
            if d["transfer"]["status"] == 200 {
                assert_eq!(d["transfer"]["leader_id"], d["transfer"]["to"], "{d:#}");
            }
            assert_eq!(
                d["stopped_pids"].as_array().unwrap().len(),
                change.nodes.len(),
                "{d:#}"
            );
        } else {
            assert_eq!(d["change"], "replace", "{d:#}");
            assert!(change.pid > 0, "{change:#?}");
            assert_eq!(d["remove"]["done"], true, "{d:#}");
            assert!(
                !d["remove"]["voters"]
                    .as_array()
                    .unwrap()
                    .contains(&change.node.into()),
                "{d:#}"
            );
            assert_eq!(d["readd"]["done"], true, "{d:#}");
        }
        assert_eq!(d["voters_after"], serde_json::json!([1, 2, 3]), "{d:#}");
    }
    assert!(grown > 0, "no real node joined: {changes:#?}");
    assert!(
        of_kind(&report.faults, "restore").is_empty(),
        "membership had to be restored after the schedule: {:#?}",
        report.faults
    );
    assert_eq!(report.verdict, "pass", "{:#?}", report.checks);
}
