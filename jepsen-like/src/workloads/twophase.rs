//! The two-phase-commit workload (`/v1/2pc`).
//!
//! **Clients.** A coordinator creates transactions among [`PARTICIPANTS`] named
//! participants (timeout [`TIMEOUT_MS`]), one after another. Each participant is a
//! sequential client that discovers what awaits its vote through
//! `GET /v1/2pc?participant=me&state=preparing&awaiting=true&wait_ms=` (as a
//! restarted participant would), then votes `commit`, or `abort` (one in
//! [`ABORT_ONE_IN`]), or stays silent (one in [`SILENT_ONE_IN`], so the timeout
//! decides), and reads the transaction back from a random node with `wait_ms`.
//! Writes follow the retry discipline of `decisions`. After healing every
//! transaction is read until decided, then every participant acks it.
//!
//! **Checkers.**
//! - `agreement`: every decided state anyone observed of a transaction (vote answers,
//!   reads, final reads, on every node) is the same one: it never changes.
//! - `validity`: a committed transaction had a commit vote (acknowledged or maybe
//!   applied) from every participant and no acknowledged abort; an abort by vote had
//!   an abort sent; every acknowledged vote is in the final record, unchanged.
//! - `decided`: after healing every transaction is decided (the timeout aborts the
//!   silent ones).
//! - `acked-removed`: once every participant acked, the record is gone (404).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Value};

use super::decisions::{observe, settle, write, Observations, Seen};
use super::session::{Net, BACKOFF};
use super::{Check, Context, Op, Sent, Status, WorkloadResult};

/// Participants of every transaction.
pub const PARTICIPANTS: usize = 3;
/// Each transaction's `timeout_ms`.
const TIMEOUT_MS: u64 = 2_500;
/// One vote in this many is `abort`.
const ABORT_ONE_IN: u32 = 8;
/// One participant in this many stays silent on a transaction.
const SILENT_ONE_IN: u32 = 15;
/// Pause between two creations.
const CREATE_EVERY: Duration = Duration::from_millis(150);

fn name(participant: usize) -> String {
    format!("jepsen-p{participant}")
}

/// A vote a participant sent: its decision and how it ended.
#[derive(Debug, Clone)]
struct SentVote {
    id: u64,
    participant: String,
    vote: &'static str,
    status: Status,
}

pub async fn run(mut context: Context) -> anyhow::Result<WorkloadResult> {
    let net = Net::new(&context);
    let seen = Observations::default();
    let coordinator = {
        let (net, until, seed) = (net.clone(), context.until, context.seed);
        tokio::spawn(async move { coordinate(net, until, seed).await })
    };
    let participants: Vec<_> = (0..PARTICIPANTS)
        .map(|index| {
            let (net, seen, until) = (net.clone(), seen.clone(), context.until);
            let seed = context.seed.wrapping_add(index as u64 * 7_919);
            tokio::spawn(async move { participate(index, net, seen, until, seed).await })
        })
        .collect();
    let (mut ops, created) = coordinator.await?;
    let mut votes = Vec::new();
    for task in participants {
        let (more_ops, sent) = task.await?;
        ops.extend(more_ops);
        votes.extend(sent);
    }
    context.wait_healed().await;

    // Final reads: each transaction until decided.
    let path = |id| format!("/v1/2pc/{id}?wait_ms=3000");
    let finals = settle(&net, &created, path, "preparing", &seen).await;
    // Acks: every participant acks every decided transaction; the last removes it.
    let mut not_removed = Vec::new();
    for (&id, _) in finals.iter() {
        for participant in 0..PARTICIPANTS {
            let body = json!({"participant": name(participant),
                              "request_id": format!("2pc-ack-{id}-{participant}")});
            let path = format!("/v1/2pc/{id}/ack");
            let record = (&mut ops, 100 + participant as u64, "ack", "2pc");
            write(&net, participant, &path, &body, record).await;
        }
        let reply = net
            .call(0, Method::GET, &format!("/v1/2pc/{id}"), None)
            .await;
        if !matches!(reply.sent, Sent::Answer(404, _)) {
            not_removed.push(json!({"id": id, "answer": reply.sent.body()}));
        }
    }
    let observations = seen.take();
    let checks = vec![
        agreement(&observations),
        validity(&finals, &votes),
        decided(&created, &finals),
        Check::from_violations(
            "acked-removed",
            "records kept after every participant acked",
            not_removed,
        ),
    ];
    ops.sort_by_key(|op| op.invoke_ns);
    Ok(WorkloadResult { ops, checks })
}

/// Creates transactions until `until`; returns its ops and the ids created.
async fn coordinate(net: Net, until: std::time::Instant, seed: u64) -> (Vec<Op>, Vec<u64>) {
    let mut ops = Vec::new();
    let mut created = Vec::new();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut n = 0u64;
    while std::time::Instant::now() < until {
        n += 1;
        let participants: Vec<String> = (0..PARTICIPANTS).map(name).collect();
        let body = json!({"participants": participants, "timeout_ms": TIMEOUT_MS,
                          "payload": {"n": n}, "request_id": format!("2pc-create-{seed}-{n}")});
        let node = rng.gen_range(0..net.nodes());
        let written = write(&net, node, "/v1/2pc", &body, (&mut ops, 0, "create", "2pc")).await;
        if let (Status::Ok, Some(id)) = (written.status, written.reply.sent.body()["id"].as_u64()) {
            created.push(id);
        }
        tokio::time::sleep(CREATE_EVERY).await;
    }
    (ops, created)
}

/// One participant: discover, vote (or stay silent), read back.
async fn participate(
    index: usize,
    net: Net,
    seen: Observations,
    until: std::time::Instant,
    seed: u64,
) -> (Vec<Op>, Vec<SentVote>) {
    let me = name(index);
    let process = 1 + index as u64;
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut ops = Vec::new();
    let mut votes = Vec::new();
    let mut done: BTreeSet<u64> = BTreeSet::new();
    while std::time::Instant::now() < until {
        let node = rng.gen_range(0..net.nodes());
        let path = format!("/v1/2pc?participant={me}&state=preparing&awaiting=true&wait_ms=1000");
        let reply = net.call(node, Method::GET, &path, None).await;
        let Sent::Answer(200, page) = &reply.sent else {
            tokio::time::sleep(BACKOFF).await;
            continue;
        };
        let ids: Vec<u64> = page["items"]
            .as_array()
            .map(|items| items.iter().filter_map(|t| t["id"].as_u64()).collect())
            .unwrap_or_default();
        let fresh: Vec<u64> = ids.into_iter().filter(|id| !done.contains(id)).collect();
        if fresh.is_empty() {
            // Everything listed is something it chose to stay silent on.
            tokio::time::sleep(BACKOFF).await;
            continue;
        }
        for id in fresh {
            done.insert(id);
            if rng.gen_ratio(1, SILENT_ONE_IN) {
                continue;
            }
            let vote = if rng.gen_ratio(1, ABORT_ONE_IN) {
                "abort"
            } else {
                "commit"
            };
            let body = json!({"participant": me, "vote": vote,
                              "request_id": format!("2pc-vote-{id}-{index}")});
            let path = format!("/v1/2pc/{id}/vote");
            let node = rng.gen_range(0..net.nodes());
            let written = write(&net, node, &path, &body, (&mut ops, process, "vote", "2pc")).await;
            let answer = written.reply.sent.body().clone();
            if written.status == Status::Ok {
                seen.push(Seen {
                    id,
                    invoke_ns: written.invoke_ns,
                    complete_ns: written.reply.complete_ns,
                    view: answer.clone(),
                    read: false,
                });
            }
            votes.push(SentVote {
                id,
                participant: me.clone(),
                vote,
                status: written.status,
            });
            let read = format!("/v1/2pc/{id}?wait_ms=500");
            observe(&net, rng.gen_range(0..net.nodes()), id, &read, &seen).await;
            if std::time::Instant::now() >= until {
                break;
            }
        }
    }
    (ops, votes)
}

/// Every decided state observed of each transaction is one and the same.
fn agreement(observations: &[Seen]) -> Check {
    let mut decided: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for seen in observations {
        let state = seen.view["state"].as_str().unwrap_or("");
        if state == "committed" || state == "aborted" {
            decided.entry(seen.id).or_default().insert(state.to_owned());
        }
    }
    let violations: Vec<Value> = decided
        .iter()
        .filter(|(_, states)| states.len() > 1)
        .map(|(id, states)| json!({"id": id, "observed": states}))
        .collect();
    let mut check = Check::from_violations(
        "agreement",
        "transactions observed with two decisions",
        violations,
    );
    if check.detail.is_null() {
        check.detail =
            json!({"decided_observed": decided.len(), "observations": observations.len()});
    }
    check
}

/// Committed only with every participant's commit; acknowledged votes are kept.
fn validity(finals: &BTreeMap<u64, Value>, votes: &[SentVote]) -> Check {
    let mut by_id: BTreeMap<u64, Vec<&SentVote>> = BTreeMap::new();
    for vote in votes {
        by_id.entry(vote.id).or_default().push(vote);
    }
    let maybe = |v: &&&SentVote| matches!(v.status, Status::Ok | Status::Unknown);
    let mut violations = Vec::new();
    let (mut committed, mut aborted) = (0, 0);
    for (id, view) in finals {
        let sent = by_id.get(id).cloned().unwrap_or_default();
        let state = view["state"].as_str().unwrap_or("");
        if state == "committed" {
            committed += 1;
            for participant in 0..PARTICIPANTS {
                let who = name(participant);
                let commit = sent
                    .iter()
                    .filter(maybe)
                    .any(|v| v.participant == who && v.vote == "commit");
                if !commit {
                    violations.push(
                        json!({"id": id, "committed_without_commit_from": who, "view": view}),
                    );
                }
            }
            if sent
                .iter()
                .any(|v| v.status == Status::Ok && v.vote == "abort")
            {
                violations.push(json!({"id": id, "committed_after_acknowledged_abort": view}));
            }
        } else {
            aborted += 1;
            if view["reason"] == "vote" && !sent.iter().filter(maybe).any(|v| v.vote == "abort") {
                violations.push(json!({"id": id, "aborted_by_vote_nobody_sent": view}));
            }
        }
        for vote in sent.iter().filter(|v| v.status == Status::Ok) {
            let recorded = view["votes"][&vote.participant].as_str();
            if recorded != Some(vote.vote) {
                violations.push(json!({"id": id, "acknowledged_vote": vote.vote,
                    "participant": vote.participant, "recorded": recorded}));
            }
        }
    }
    let mut check = Check::from_violations("validity", "invalid decisions", violations);
    if check.detail.is_null() {
        check.detail = json!({"committed": committed, "aborted": aborted, "votes": votes.len()});
    }
    check
}

/// Every created transaction was seen decided after healing.
fn decided(created: &[u64], finals: &BTreeMap<u64, Value>) -> Check {
    let missing: Vec<Value> = created
        .iter()
        .filter(|id| !finals.contains_key(id))
        .map(|id| json!(id))
        .collect();
    Check::from_violations(
        "decided",
        "transactions never decided after healing",
        missing,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads::CheckVerdict;

    fn vote(participant: usize, vote: &'static str, status: Status) -> SentVote {
        SentVote {
            id: 1,
            participant: name(participant),
            vote,
            status,
        }
    }

    #[test]
    fn the_validity_checker_catches_a_commit_without_every_commit_vote() {
        let all = |state: &str, votes: Value| {
            BTreeMap::from([(1, json!({"state": state, "votes": votes, "reason": null}))])
        };
        let votes = vec![
            vote(0, "commit", Status::Ok),
            vote(1, "commit", Status::Unknown),
        ];
        let recorded = json!({"jepsen-p0": "commit", "jepsen-p1": "commit"});
        assert_eq!(
            validity(&all("committed", recorded.clone()), &votes).verdict,
            CheckVerdict::Fail,
            "p2 never voted"
        );
        let mut three = votes.clone();
        three.push(vote(2, "commit", Status::Ok));
        let recorded3 =
            json!({"jepsen-p0": "commit", "jepsen-p1": "commit", "jepsen-p2": "commit"});
        assert_eq!(
            validity(&all("committed", recorded3.clone()), &three).verdict,
            CheckVerdict::Pass
        );
        // An acknowledged vote missing from the record fails too.
        assert_eq!(
            validity(&all("committed", recorded), &three).verdict,
            CheckVerdict::Fail
        );
        let mut aborted = three.clone();
        aborted[2] = vote(2, "abort", Status::Ok);
        assert_eq!(
            validity(&all("committed", recorded3), &aborted).verdict,
            CheckVerdict::Fail
        );
    }

    #[test]
    fn the_agreement_checker_catches_two_decisions() {
        let seen = |state: &str| Seen {
            id: 7,
            invoke_ns: 0,
            complete_ns: 1,
            view: json!({"state": state}),
            read: true,
        };
        assert_eq!(
            agreement(&[seen("aborted"), seen("preparing"), seen("aborted")]).verdict,
            CheckVerdict::Pass
        );
        assert_eq!(
            agreement(&[seen("aborted"), seen("committed")]).verdict,
            CheckVerdict::Fail
        );
    }
}
