//! Growing and shrinking a cluster on real `conclave` processes with auth on,
//! under a steady write load from a background client (`common::ops::load`): grow
//! 1 → 3 with `serve --join` (one command per node), repeat the add (it converges),
//! replace a wiped node under its old id (removed, re-added as a learner, caught
//! up, promoted) and the documented way (removed, wiped, re-added at a new port,
//! caught up by snapshot), grow 3 → 5 with the spares 4 and 5 joining, shrink
//! 5 → 3 with `DELETE`. No acknowledged write is lost (503s are allowed: every 2xx
//! is read back at the end) and all members end with the same state hash. Then, on
//! the same cluster (CI's one sequential lifecycle test): export → replay gives the
//! live hash, backup → restore into a new node gives the saved hash.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::ops::{load, read_back, same_state, wait_voters, WAIT};
use common::{cli, refusal, send, Cluster, Options};
use conclave_client::{Consistency, MemberAdd};
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
    let again = MemberAdd {
        id: 2,
        addr: format!("127.0.0.1:{}", node2.port),
        raft_addr: Some(node2.raft_addr()),
        voter: None,
    };
    cluster
        .api(3)
        .member_add(&again)
        .await
        .expect("the same add converges");
    wait_voters(&cluster, 1, &[1, 2, 3]).await;
    // Another address under a voter's id is refused, not silently moved.
    let moved = MemberAdd {
        id: 2,
        addr: "127.0.0.1:1".into(),
        raft_addr: Some("127.0.0.1:2".into()),
        voter: None,
    };
    assert_eq!(
        refusal(cluster.api(1).member_add(&moved).await),
        (409, "member_conflict".to_owned())
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
    cluster
        .api(1)
        .member_remove(3)
        .await
        .expect("node 3 removed");
    urls.lock().unwrap().retain(|url| *url != cluster.url(3));
    cluster.kill(3);
    std::fs::remove_dir_all(&cluster.node(3).data_dir).unwrap();
    for id in [1, 2] {
        cluster.api(id).snapshot().await.expect("snapshot built");
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
        cluster.api(via).member_remove(id).await.expect("removed");
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
    export_replay_backup_and_restore(&cluster, &[1, 2, 5]).await;
}

/// The rest of the lifecycle on the grown and shrunk cluster: export a node's log
/// (a snapshot in the middle, then more writes) and replay it offline to the same
/// hash; save a backup through a follower (the leader's state hash); restore it
/// into a new directory for a new single node, which serves the same hash and the
/// data and takes writes; a second restore there is refused.
async fn export_replay_backup_and_restore(cluster: &Cluster, nodes: &[u64]) {
    let leader = cluster.wait_for_leader(WAIT).await;
    let first = cluster.api(nodes[0]);
    for n in 0..50 {
        first.kv_put(&format!("b/{n}"), &json!(n)).await.unwrap();
    }
    let owner = common::observer_session(&first, "holder", 600_000).await;
    common::acquire(&cluster.api(2), "db", owner).await;

    // Export a node's log (a snapshot in the middle, then more writes) and replay
    // it offline: the same hash as that node's at the same index.
    let on_leader = cluster.api(leader);
    on_leader.snapshot().await.expect("snapshot built");
    for n in 50..60 {
        on_leader
            .kv_put(&format!("b/{n}"), &json!(n))
            .await
            .unwrap();
    }
    let export = cluster.dir.path().join("log.bin");
    let endpoint = |id: u64| format!("127.0.0.1:{}", cluster.node(id).port);
    let (ok, said) = cli(&[
        "log".as_ref(),
        "export".as_ref(),
        export.as_ref(),
        "--endpoint".as_ref(),
        endpoint(leader).as_ref(),
    ]);
    assert!(ok, "{said}");
    let (ok, replay) = cli(&["log".as_ref(), "replay".as_ref(), export.as_ref()]);
    assert!(ok, "{replay}");
    let (live_hash, live_index) = digest(&cluster.http, &cluster.url(leader)).await.unwrap();
    assert!(
        replay.contains(&format!("command index {live_index},")),
        "{replay} vs {live_index}"
    );
    assert_eq!(
        replay.rsplit("state hash ").next().unwrap().trim(),
        live_hash,
        "{replay}"
    );
    assert!(
        !replay.starts_with("replayed 0 "),
        "entries after the snapshot: {replay}"
    );

    // Save through a follower (forwarded to the leader).
    let follower = *nodes.iter().find(|&&id| id != leader).unwrap();
    let file = cluster.dir.path().join("backup.bin");
    let (ok, said) = cli(&[
        "snapshot".as_ref(),
        "save".as_ref(),
        file.as_ref(),
        "--endpoint".as_ref(),
        endpoint(follower).as_ref(),
    ]);
    assert!(ok, "{said}");
    let hash_of = |text: &str| text.rsplit("state hash ").next().unwrap().trim().to_owned();
    let saved_hash = hash_of(&said);
    let (leader_hash, _) = digest(&cluster.http, &cluster.url(leader)).await.unwrap();
    assert_eq!(
        saved_hash, leader_hash,
        "the backup is the leader's state: {said}"
    );

    // Restore into a new directory for a new single node, start it: same hash.
    let ports = common::free_ports(2);
    let dir = cluster.dir.path().join("restored");
    let config = cluster.dir.path().join("restored.toml");
    std::fs::write(
        &config,
        format!(
            "node_id = 1\nlisten_addr = \"127.0.0.1:{}\"\nraft_listen_addr = \"127.0.0.1:{}\"\n\
             data_dir = \"{}\"\ninitial_members = [1]\n[auth]\nkeys = [\"{}\"]\n",
            ports[0],
            ports[1],
            dir.display(),
            common::AUTH_KEY
        ),
    )
    .unwrap();
    let restore = [
        "snapshot".as_ref(),
        "restore".as_ref(),
        file.as_ref(),
        "--data-dir".as_ref(),
        dir.as_ref(),
    ];
    let (ok, told) = cli(&[&restore[..], &["--config".as_ref(), config.as_ref()]].concat());
    assert!(ok, "{told}");
    assert_eq!(
        hash_of(told.split(';').next().unwrap()),
        saved_hash,
        "{told}"
    );
    // A second restore into the same directory is refused.
    let (ok, refused) = cli(&restore);
    assert!(!ok && refused.contains("not empty"), "{refused}");

    let log = std::fs::File::create(cluster.dir.path().join("restored.log")).unwrap();
    let _node = Process(
        std::process::Command::new(common::binary())
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{}", ports[0]);
    let restored = common::api(&base);
    let ready = common::wait_until(WAIT, || async {
        restored.ready().await.ok()?.ready.then_some(())
    })
    .await;
    let restored_log =
        || std::fs::read_to_string(cluster.dir.path().join("restored.log")).unwrap_or_default();
    assert!(ready.is_some(), "{}", restored_log());
    let (hash, _) = digest(&cluster.http, &base).await.unwrap();
    assert_eq!(hash, saved_hash, "{}", restored_log());
    let body = restored
        .kv_get("b/49", Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(body["value"].as_u64(), Some(49), "{body}");
    // And it takes writes in a later term.
    restored
        .kv_put("after", &json!(1))
        .await
        .expect("a write in a later term");
}

/// Kills the process when dropped (a node started outside `Cluster`).
struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `state_hash` and `last_command_index` of `/v1/debug/state` at `base` (no
/// typed call: raw HTTP).
async fn digest(http: &reqwest::Client, base: &str) -> Option<(String, u64)> {
    let (status, digest) = send(http.get(format!("{base}/v1/debug/state"))).await;
    (status == 200).then_some(())?;
    Some((
        digest["state_hash"].as_str()?.to_owned(),
        digest["last_command_index"].as_u64()?,
    ))
}
