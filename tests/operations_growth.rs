//! Growing and shrinking a cluster on real `conclave` processes with auth on,
//! under a steady write load from a background client (`common::ops::load`): grow
//! 1 → 3 with `serve --join` (one command per node), repeat the add (it converges),
//! replace a wiped node under its old id (removed, re-added as a learner, caught
//! up, promoted) and the documented way (removed, wiped, re-added at a new port,
//! caught up by snapshot), grow 3 → 5 with the spares 4 and 5 joining, shrink
//! 5 → 3 with `DELETE`. No acknowledged write is lost (503s are allowed: every 2xx
//! is read back at the end) and all members end with the same state hash.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::ops::{load, read_back, same_state, wait_voters, WAIT};
use common::{send, Cluster, Options};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_1_to_3_to_5_with_join_replace_a_wiped_node_and_shrink_5_to_3_under_load() {
    let _serial = common::serial().await;
    // No log kept behind a snapshot: a node re-added after one catches up by it.
    let raft = "[raft]\nmax_in_snapshot_log_to_keep = 0\npurge_batch_size = 1\n";
    let options = Options {
        extra_toml: raft.into(),
        ..Options::default()
    };
    let mut cluster = Cluster::start(1, options).await;
    let urls = Arc::new(Mutex::new(vec![cluster.url(1)]));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(load(urls.clone(), stop.clone()));

    // 1. Grow 1 → 3: each new node is one `serve --join` command.
    for id in [2, 3] {
        cluster.add_joiner(id, 1);
        cluster.spawn(id);
        let voters: Vec<u64> = (1..=id).collect();
        wait_voters(&cluster, 1, &voters).await;
        urls.lock().unwrap().push(cluster.url(id));
    }
    let said = common::wait_until(WAIT, || async {
        cluster
            .log(3)
            .contains("joined the cluster as a voter")
            .then_some(())
    })
    .await;
    assert!(said.is_some(), "{}", cluster.log(3));

    // 2. The same add again converges: 200, nothing changes.
    let node2 = cluster.node(2);
    let again = json!({"id": 2, "addr": format!("127.0.0.1:{}", node2.port), "raft_addr": node2.raft_addr()});
    let (status, body) = send(
        cluster
            .http
            .post(format!("{}/v1/cluster/members", cluster.url(3)))
            .json(&again),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_voters(&cluster, 1, &[1, 2, 3]).await;
    // Another address under a voter's id is refused, not silently moved.
    let moved = json!({"id": 2, "addr": "127.0.0.1:1", "raft_addr": "127.0.0.1:2"});
    let (status, body) = send(
        cluster
            .http
            .post(format!("{}/v1/cluster/members", cluster.url(1)))
            .json(&moved),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("member_conflict")),
        "{body}"
    );

    // 3. Replace node 3: wiped, it comes back under its id with --join; it is
    //    removed, re-added as a learner, caught up and promoted.
    urls.lock().unwrap().retain(|url| *url != cluster.url(3));
    cluster.kill(3);
    std::fs::remove_dir_all(&cluster.node(3).data_dir).unwrap();
    let before = cluster
        .log(3)
        .matches("joined the cluster as a voter")
        .count();
    cluster.spawn(3);
    let rejoined = common::wait_until(WAIT, || async {
        let now = cluster
            .log(3)
            .matches("joined the cluster as a voter")
            .count();
        (now > before).then_some(())
    })
    .await;
    assert!(rejoined.is_some(), "{}", cluster.logs());
    assert!(
        cluster.log(1).contains("rejoins under a voter's id")
            || cluster.log(2).contains("rejoins under a voter's id"),
        "the leader removed the old voter first"
    );
    wait_voters(&cluster, 1, &[1, 2, 3]).await;
    urls.lock().unwrap().push(cluster.url(3));

    // 3b. Replace it the documented way: remove it, wipe it, re-add it under the
    //     same id at a new port; the log it needs is purged, so it catches up by
    //     snapshot.
    let (status, body) = send(
        cluster
            .http
            .delete(format!("{}/v1/cluster/members/3", cluster.url(1))),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    urls.lock().unwrap().retain(|url| *url != cluster.url(3));
    cluster.kill(3);
    std::fs::remove_dir_all(&cluster.node(3).data_dir).unwrap();
    for id in [1, 2] {
        let (status, body) = send(
            cluster
                .http
                .post(format!("{}/v1/cluster/snapshot", cluster.url(id))),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    cluster.add_joiner(3, 1);
    cluster.spawn(3);
    wait_voters(&cluster, 1, &[1, 2, 3]).await;
    let by_snapshot = common::wait_until(WAIT, || async {
        cluster.status(3).await?["snapshot_index"].as_u64()
    })
    .await;
    assert!(
        by_snapshot.is_some(),
        "caught up by snapshot\n{}",
        cluster.log(3)
    );
    urls.lock().unwrap().push(cluster.url(3));

    // 4. Grow 3 → 5: the spares 4 and 5 (config/node4.toml, node5.toml on the
    //    loopback cluster) each join with one command, through different members.
    for (id, via) in [(4, 2), (5, 3)] {
        cluster.add_joiner(id, via);
        cluster.spawn(id);
        let voters: Vec<u64> = (1..=id).collect();
        wait_voters(&cluster, 1, &voters).await;
        urls.lock().unwrap().push(cluster.url(id));
    }
    same_state(&cluster, &[1, 2, 3, 4, 5]).await;

    // 5. Shrink 5 → 3 with DELETE: a spare (through the other spare) and an
    //    original member (through node 1); each removed node says so and is stopped.
    let removed = "this node was removed from the cluster";
    for (id, via, left) in [(4, 5, vec![1, 2, 3, 5]), (3, 1, vec![1, 2, 5])] {
        // Node 3's log holds its earlier removal (3b).
        let before = cluster.log(id).matches(removed).count();
        let (status, body) = send(
            cluster
                .http
                .delete(format!("{}/v1/cluster/members/{id}", cluster.url(via))),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        urls.lock().unwrap().retain(|url| *url != cluster.url(id));
        for &on in &left {
            wait_voters(&cluster, on, &left).await;
        }
        let said = common::wait_until(WAIT, || async {
            (cluster.log(id).matches(removed).count() > before).then_some(())
        })
        .await;
        assert!(said.is_some(), "node {id} was told\n{}", cluster.log(id));
        cluster.kill(id);
    }

    stop.store(true, Ordering::Relaxed);
    let acknowledged = writer.await.unwrap();
    assert!(
        acknowledged.len() > 20,
        "the load ran: {}",
        acknowledged.len()
    );
    // Every acknowledged write is there, read linearizably through every member.
    read_back(&cluster, &[1, 2, 5], "load", &acknowledged).await;
    same_state(&cluster, &[1, 2, 5]).await;
    eprintln!(
        "grow/shrink: {} writes acknowledged under load",
        acknowledged.len()
    );
}
