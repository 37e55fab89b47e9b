//! Operator workflows on real `conclave` processes with auth on, under a steady
//! write load from a background client: grow 1 → 3 with `serve --join` (one
//! command per node), repeat the add (it converges), replace a wiped node under its
//! old id (removed, re-added as a learner, caught up, promoted), shrink 3 → 2 with
//! `DELETE`. No acknowledged write is lost (503s are allowed: every 2xx is read
//! back at the end) and all members end with the same state hash.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{cli, send, Cluster, Options};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

/// Writes `load/<n>` = n through the running nodes in turn until `stop`; returns
/// the acknowledged ones.
async fn load(urls: Arc<Mutex<Vec<String>>>, stop: Arc<AtomicBool>) -> Vec<u64> {
    let http = common::client();
    let mut acknowledged = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let url = {
            let urls = urls.lock().unwrap();
            urls[n as usize % urls.len()].clone()
        };
        let body = json!({"value": n, "request_id": format!("load-{n}")});
        if let Ok(response) = http
            .put(format!("{url}/v1/kv/load/{n}"))
            .json(&body)
            .send()
            .await
        {
            if response.status().as_u16() == 200 {
                acknowledged.push(n);
            }
        }
    }
    acknowledged
}

/// The voters and learners node `id` sees.
async fn members(cluster: &Cluster, id: u64) -> Option<(Vec<u64>, Vec<u64>)> {
    let status = cluster.status(id).await?;
    let mut voters = Vec::new();
    let mut learners = Vec::new();
    for member in status["members"].as_array()? {
        let id = member["id"].as_u64()?;
        match member["role"].as_str()? {
            "voter" => voters.push(id),
            _ => learners.push(id),
        }
    }
    voters.sort();
    learners.sort();
    Some((voters, learners))
}

async fn wait_voters(cluster: &Cluster, on: u64, voters: &[u64]) {
    let reached = common::wait_until(WAIT, || async {
        let (seen, learners) = members(cluster, on).await?;
        (seen == voters && learners.is_empty()).then_some(())
    })
    .await;
    assert!(
        reached.is_some(),
        "node {on} never saw voters {voters:?}: {:?}\n{}",
        members(cluster, on).await,
        cluster.logs()
    );
}

/// Every running node's state hash once all have applied the same entries.
async fn same_state(cluster: &Cluster, nodes: &[u64]) {
    let equal = common::wait_until(WAIT, || async {
        let mut digests = Vec::new();
        for &id in nodes {
            let (status, digest) = send(
                cluster
                    .http
                    .get(format!("{}/v1/debug/state", cluster.url(id))),
            )
            .await;
            (status == 200).then_some(())?;
            digests.push((
                digest["last_applied_index"].clone(),
                digest["state_hash"].clone(),
            ));
        }
        digests
            .windows(2)
            .all(|pair| pair[0] == pair[1])
            .then_some(())
    })
    .await;
    assert!(equal.is_some(), "nodes {nodes:?} never had equal state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_with_join_replace_a_wiped_node_and_shrink_under_load() {
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

    // 4. Shrink 3 → 2.
    let (status, body) = send(
        cluster
            .http
            .delete(format!("{}/v1/cluster/members/3", cluster.url(2))),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    urls.lock().unwrap().retain(|url| *url != cluster.url(3));
    wait_voters(&cluster, 1, &[1, 2]).await;

    stop.store(true, Ordering::Relaxed);
    let acknowledged = writer.await.unwrap();
    assert!(
        acknowledged.len() > 20,
        "the load ran: {}",
        acknowledged.len()
    );
    // Every acknowledged write is there, read linearizably through both members.
    for (i, n) in acknowledged.iter().enumerate() {
        let base = cluster.url(1 + (i as u64 % 2));
        let (status, body): (u16, Value) =
            common::get(&cluster.http, &base, &format!("load/{n}")).await;
        assert_eq!(
            (status, body["value"].as_u64()),
            (200, Some(*n)),
            "write {n}: {body}"
        );
    }
    same_state(&cluster, &[1, 2]).await;
}

/// The current leader as node `on` sees it.
async fn leader(cluster: &Cluster, on: u64) -> Option<u64> {
    cluster.status(on).await?["leader_id"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_is_handed_over_on_request_on_sigterm_and_before_the_leader_is_removed() {
    let _serial = common::serial().await;
    let options = Options {
        extra_toml: "min_voters = 2\n".into(),
        ..Options::default()
    };
    let mut cluster = Cluster::start(3, options).await;
    let urls = Arc::new(Mutex::new(
        (1..=3).map(|id| cluster.url(id)).collect::<Vec<_>>(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(load(urls.clone(), stop.clone()));

    // 1. To the most caught-up other voter, asked through a follower.
    let first = cluster.wait_for_leader(WAIT).await;
    let follower = (1..=3).find(|&id| id != first).unwrap();
    let url = format!("{}/v1/cluster/leader", cluster.url(follower));
    let (status, body) = send(cluster.http.post(&url)).await;
    assert_eq!(status, 200, "{body}");
    let second = body["leader_id"].as_u64().unwrap();
    assert_ne!(second, first, "{body}");
    // 2. To a named voter.
    let target = (1..=3).find(|&id| id != second).unwrap();
    let (status, body) = send(cluster.http.post(&url).json(&json!({"to": target}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["leader_id"].as_u64(), Some(target), "{body}");
    // Not a member: 404; itself: 409.
    let (status, _) = send(cluster.http.post(&url).json(&json!({"to": 9}))).await;
    assert_eq!(status, 404);
    let (status, _) = send(cluster.http.post(&url).json(&json!({"to": target}))).await;
    assert_eq!(status, 409);

    // 3. SIGTERM on the leader: it hands over before it exits.
    cluster.signal(target, "TERM");
    let other = (1..=3).find(|&id| id != target).unwrap();
    let exited = common::wait_until(WAIT, || async {
        leader(&cluster, other).await.filter(|&l| l != target)
    })
    .await;
    assert!(
        exited.is_some(),
        "a new leader after SIGTERM\n{}",
        cluster.logs()
    );
    let handed = common::wait_until(WAIT, || async {
        cluster
            .log(target)
            .contains("stopping: handed leadership over")
            .then_some(())
    })
    .await;
    assert!(handed.is_some(), "{}", cluster.log(target));
    let deadline = std::time::Instant::now() + WAIT;
    while cluster.try_wait(target).is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the TERMed node exits"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.spawn(target);
    cluster.wait_for_leader(WAIT).await;

    // 4. Removing the leader: it hands over first, then the new leader removes it.
    let old = cluster.wait_for_leader(WAIT).await;
    let via = (1..=3).find(|&id| id != old).unwrap();
    let (status, body) = send(
        cluster
            .http
            .delete(format!("{}/v1/cluster/members/{old}", cluster.url(via))),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let new = body["leader_id"].as_u64().unwrap();
    assert_ne!(new, old, "{body}");
    let listed = body["members"].as_array().unwrap();
    assert!(listed.iter().all(|m| m["id"] != old), "{body}");
    urls.lock().unwrap().retain(|url| *url != cluster.url(old));
    assert!(
        cluster.log(old).contains("handed leadership over"),
        "{}",
        cluster.log(old)
    );
    let said = common::wait_until(WAIT, || async {
        cluster
            .log(old)
            .contains("this node was removed from the cluster")
            .then_some(())
    })
    .await;
    assert!(said.is_some(), "the removed node says so");
    let (status, ready) = send(cluster.http.get(format!("{}/ready", cluster.url(old)))).await;
    assert_eq!((status, &ready["member"]), (503, &json!(false)), "{ready}");
    // min_voters = 2: the next removal is refused.
    let (status, body) = send(
        cluster
            .http
            .delete(format!("{}/v1/cluster/members/{via}", cluster.url(new))),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("below_min_voters")),
        "{body}"
    );

    stop.store(true, Ordering::Relaxed);
    let acknowledged = writer.await.unwrap();
    assert!(
        acknowledged.len() >= 5,
        "the load ran: {}",
        acknowledged.len()
    );
    let alive: Vec<u64> = (1..=3).filter(|&id| id != old).collect();
    for (i, n) in acknowledged.iter().enumerate() {
        let base = cluster.url(alive[i % 2]);
        let (status, body): (u16, Value) =
            common::get(&cluster.http, &base, &format!("load/{n}")).await;
        assert_eq!(
            (status, body["value"].as_u64()),
            (200, Some(*n)),
            "write {n}: {body}"
        );
    }
}

/// Kills the process when dropped (a node started outside `Cluster`).
struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `state_hash` and `last_command_index` of `/v1/debug/state` at `base`.
async fn digest(http: &reqwest::Client, base: &str) -> Option<(String, u64)> {
    let (status, digest) = send(http.get(format!("{base}/v1/debug/state"))).await;
    (status == 200).then_some(())?;
    Some((
        digest["state_hash"].as_str()?.to_owned(),
        digest["last_command_index"].as_u64()?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_replays_to_the_live_hash_and_a_backup_restores_into_a_new_node_with_the_same_hash()
{
    let _serial = common::serial().await;
    let cluster = Cluster::start(3, Options::default()).await;
    let leader = cluster.wait_for_leader(WAIT).await;
    for n in 0..50 {
        let (status, _) = common::put(
            &cluster.http,
            &cluster.url(1),
            &format!("b/{n}"),
            json!({"value": n}),
        )
        .await;
        assert_eq!(status, 200);
    }
    let owner = common::observer_session(&cluster.api(2), "holder", 600_000).await;
    let (status, _) = send(
        cluster
            .http
            .post(format!("{}/v1/locks/db/acquire", cluster.url(2)))
            .json(&json!({"session_id": owner})),
    )
    .await;
    assert_eq!(status, 200);

    // Export a node's log (a snapshot in the middle, then more writes) and replay
    // it offline: the same hash as that node's at the same index.
    let (status, _) = send(
        cluster
            .http
            .post(format!("{}/v1/cluster/snapshot", cluster.url(leader))),
    )
    .await;
    assert_eq!(status, 200);
    for n in 50..60 {
        let (status, _) = common::put(
            &cluster.http,
            &cluster.url(leader),
            &format!("b/{n}"),
            json!({"value": n}),
        )
        .await;
        assert_eq!(status, 200);
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
    let follower = (1..=3).find(|&id| id != leader).unwrap();
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
    let ready = common::wait_until(WAIT, || async {
        let response = cluster
            .http
            .get(format!("{base}/ready"))
            .send()
            .await
            .ok()?;
        (response.status().as_u16() == 200).then_some(())
    })
    .await;
    let restored_log =
        || std::fs::read_to_string(cluster.dir.path().join("restored.log")).unwrap_or_default();
    assert!(ready.is_some(), "{}", restored_log());
    let (hash, _) = digest(&cluster.http, &base).await.unwrap();
    assert_eq!(hash, saved_hash, "{}", restored_log());
    let (status, body) = common::get(&cluster.http, &base, "b/49").await;
    assert_eq!((status, body["value"].as_u64()), (200, Some(49)), "{body}");
    // And it takes writes in a later term.
    let (status, body) = common::put(&cluster.http, &base, "after", json!({"value": 1})).await;
    assert_eq!(status, 200, "{body}");
}
