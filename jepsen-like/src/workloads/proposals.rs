//! The proposals workload (`/v1/proposals`).
//!
//! **Clients.** A creator puts proposals to [`VOTERS`] named voters, one after
//! another, with a rule drawn from majority, unanimous and two thresholds, and a
//! deadline of [`DEADLINE_MS`]. Each voter is a sequential client that finds what
//! awaits its vote (`GET /v1/proposals?voter=me&awaiting=true`), votes yes, no or
//! abstain (or stays silent, one in [`SILENT_ONE_IN`]) with the retry discipline of
//! `decisions`, and reads the proposal back from a random node with `wait_ms`.
//! After healing every proposal is read until decided (the deadline expires the
//! undecided).
//!
//! **Checkers.**
//! - `decision-stable`: every decided observation of a proposal shows the same state
//!   and the same tally (voter, vote, index); a read invoked after a decided
//!   observation completed never shows it open.
//! - `tally`: the final tally holds every acknowledged vote unchanged, only votes
//!   some voter sent (acknowledged or maybe applied), none answered
//!   `proposal_decided`; and the decision is what the rule gives for that tally,
//!   recomputed here independently (by enumerating every way the missing voters
//!   could vote): accepted/rejected exactly when the tally fixes it and not before
//!   its last vote, expired only when it does not.
//! - `decided`: after healing every proposal is decided.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Value};

use super::decisions::{observe, settle, write, Observations, Seen};
use super::session::Net;
use super::{Check, Context, Op, Sent, Status, WorkloadResult};

/// Voters of every proposal.
pub const VOTERS: usize = 4;
/// Each proposal's `deadline_ms`.
const DEADLINE_MS: u64 = 2_500;
/// One voter in this many stays silent on a proposal.
const SILENT_ONE_IN: u32 = 6;
/// Pause between two creations.
const CREATE_EVERY: Duration = Duration::from_millis(200);
/// Pause between two looks at what awaits a voter.
const LOOK_EVERY: Duration = Duration::from_millis(100);

fn name(voter: usize) -> String {
    format!("jepsen-v{voter}")
}

#[derive(Debug, Clone)]
struct SentVote {
    id: u64,
    voter: String,
    vote: &'static str,
    status: Status,
    code: Option<String>,
}

pub async fn run(mut context: Context) -> anyhow::Result<WorkloadResult> {
    let net = Net::new(&context);
    let seen = Observations::default();
    let creator = {
        let (net, until, seed) = (net.clone(), context.until, context.seed);
        tokio::spawn(async move { create(net, until, seed).await })
    };
    let voters: Vec<_> = (0..VOTERS)
        .map(|index| {
            let (net, seen, until) = (net.clone(), seen.clone(), context.until);
            let seed = context.seed.wrapping_add(index as u64 * 104_729);
            tokio::spawn(async move { vote(index, net, seen, until, seed).await })
        })
        .collect();
    let (mut ops, created) = creator.await?;
    let mut votes = Vec::new();
    for task in voters {
        let (more, sent) = task.await?;
        ops.extend(more);
        votes.extend(sent);
    }
    context.wait_healed().await;
    let path = |id| format!("/v1/proposals/{id}?wait_ms=3000");
    let finals = settle(&net, &created, path, "open", &seen).await;
    let observations = seen.take();
    let missing: Vec<Value> = created
        .iter()
        .filter(|id| !finals.contains_key(id))
        .map(|id| json!(id))
        .collect();
    let checks = vec![
        stable(&observations),
        tally(&finals, &votes),
        Check::from_violations("decided", "proposals never decided after healing", missing),
    ];
    ops.sort_by_key(|op| op.invoke_ns);
    Ok(WorkloadResult { ops, checks })
}

async fn create(net: Net, until: std::time::Instant, seed: u64) -> (Vec<Op>, Vec<u64>) {
    let mut ops = Vec::new();
    let mut created = Vec::new();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut n = 0u64;
    while std::time::Instant::now() < until {
        n += 1;
        let rule = match rng.gen_range(0..4) {
            0 => json!("majority"),
            1 => json!("unanimous"),
            2 => json!({"threshold": 2}),
            _ => json!({"threshold": VOTERS}),
        };
        let voters: Vec<String> = (0..VOTERS).map(name).collect();
        let body = json!({"title": format!("p{n}"), "voters": voters, "rule": rule,
                          "deadline_ms": DEADLINE_MS, "request_id": format!("prop-{seed}-{n}")});
        let node = rng.gen_range(0..net.nodes());
        let record = (&mut ops, 0, "create", "proposals");
        let written = write(&net, node, "/v1/proposals", &body, record).await;
        let id = written.reply.sent.body()["proposal_id"].as_u64();
        if let (Status::Ok, Some(id)) = (written.status, id) {
            created.push(id);
        }
        tokio::time::sleep(CREATE_EVERY).await;
    }
    (ops, created)
}

async fn vote(
    index: usize,
    net: Net,
    seen: Observations,
    until: std::time::Instant,
    seed: u64,
) -> (Vec<Op>, Vec<SentVote>) {
    let me = name(index);
    let process = 1 + index as u64;
    let mut rng = SmallRng::seed_from_u64(seed);
    let (mut ops, mut votes) = (Vec::new(), Vec::new());
    let mut done: BTreeSet<u64> = BTreeSet::new();
    while std::time::Instant::now() < until {
        let path = format!("/v1/proposals?voter={me}&awaiting=true");
        let reply = net
            .call(rng.gen_range(0..net.nodes()), Method::GET, &path, None)
            .await;
        let ids: Vec<u64> = match &reply.sent {
            Sent::Answer(200, page) => page["items"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|p| p["proposal_id"].as_u64())
                        .collect()
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let fresh: Vec<u64> = ids.into_iter().filter(|id| !done.contains(id)).collect();
        if fresh.is_empty() {
            tokio::time::sleep(LOOK_EVERY).await;
            continue;
        }
        for id in fresh {
            done.insert(id);
            if rng.gen_ratio(1, SILENT_ONE_IN) {
                continue;
            }
            let choice = ["yes", "yes", "no", "abstain"][rng.gen_range(0..4)];
            let body = json!({"voter": me, "vote": choice,
                              "request_id": format!("prop-vote-{id}-{index}")});
            let path = format!("/v1/proposals/{id}/votes");
            let node = rng.gen_range(0..net.nodes());
            let record = (&mut ops, process, "vote", "proposals");
            let written = write(&net, node, &path, &body, record).await;
            if written.status == Status::Ok {
                seen.push(Seen {
                    id,
                    invoke_ns: written.invoke_ns,
                    complete_ns: written.reply.complete_ns,
                    view: written.reply.sent.body().clone(),
                    read: false,
                });
            }
            votes.push(SentVote {
                id,
                voter: me.clone(),
                vote: choice,
                status: written.status,
                code: written.reply.code().map(str::to_owned),
            });
            let read = format!("/v1/proposals/{id}?wait_ms=300");
            observe(&net, rng.gen_range(0..net.nodes()), id, &read, &seen).await;
            if std::time::Instant::now() >= until {
                break;
            }
        }
    }
    (ops, votes)
}

/// The tally of a view as (voter, vote, index).
fn tally_of(view: &Value) -> Vec<(String, String, u64)> {
    view["tally"]["votes"]
        .as_array()
        .map(|votes| {
            votes
                .iter()
                .map(|v| {
                    (
                        v["voter"].as_str().unwrap_or("").to_owned(),
                        v["vote"].as_str().unwrap_or("").to_owned(),
                        v["index"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn stable(observations: &[Seen]) -> Check {
    let mut by_id: BTreeMap<u64, Vec<&Seen>> = BTreeMap::new();
    for seen in observations {
        by_id.entry(seen.id).or_default().push(seen);
    }
    let mut violations = Vec::new();
    let mut decided_seen = 0;
    for (id, seen) in &by_id {
        let decided: Vec<&&Seen> = seen
            .iter()
            .filter(|s| s.read && s.view["state"] != "open")
            .collect();
        let Some(first) = decided.iter().min_by_key(|s| s.complete_ns) else {
            continue;
        };
        decided_seen += 1;
        let (state, votes) = (&first.view["state"], tally_of(&first.view));
        for other in &decided {
            if other.view["state"] != *state || tally_of(&other.view) != votes {
                violations.push(json!({"id": id, "first": first.view, "other": other.view}));
            }
        }
        for later in seen
            .iter()
            .filter(|s| s.read && s.invoke_ns > first.complete_ns)
        {
            if later.view["state"] == "open" {
                violations.push(
                    json!({"id": id, "open_after_decided": later.view, "decided": first.view}),
                );
            }
        }
    }
    let mut check = Check::from_violations("decision-stable", "decisions that changed", violations);
    if check.detail.is_null() {
        check.detail = json!({"proposals_seen_decided": decided_seen});
    }
    check
}

/// Whether `rule` accepts a complete tally (independent of the server's code).
fn accepts(rule: &Value, voters: u64, yes: u64, no: u64, abstain: u64) -> bool {
    let _ = no;
    match (rule.as_str(), rule["threshold"].as_u64()) {
        (Some("majority"), _) => 2 * yes > voters - abstain,
        (Some("unanimous"), _) => yes >= 1 && yes + abstain == voters,
        (_, Some(n)) => yes >= n,
        _ => false,
    }
}

/// The outcome fixed by a partial tally, by trying every completion.
fn fixed(rule: &Value, voters: u64, yes: u64, no: u64, abstain: u64) -> Option<bool> {
    let remaining = voters - yes - no - abstain;
    let mut outcomes = BTreeSet::new();
    for y in 0..=remaining {
        for n in 0..=remaining - y {
            let a = remaining - y - n;
            outcomes.insert(accepts(rule, voters, yes + y, no + n, abstain + a));
        }
    }
    (outcomes.len() == 1).then(|| outcomes.contains(&true))
}

fn tally(finals: &BTreeMap<u64, Value>, votes: &[SentVote]) -> Check {
    let mut violations = Vec::new();
    let mut states: BTreeMap<String, u64> = BTreeMap::new();
    for (id, view) in finals {
        let state = view["state"].as_str().unwrap_or("").to_owned();
        *states.entry(state.clone()).or_default() += 1;
        let recorded = tally_of(view);
        let sent: Vec<&SentVote> = votes.iter().filter(|v| v.id == *id).collect();
        for vote in &sent {
            let entry = recorded.iter().find(|(voter, _, _)| *voter == vote.voter);
            if vote.status == Status::Ok && entry.map(|e| e.1.as_str()) != Some(vote.vote) {
                violations.push(json!({"id": id, "acknowledged_vote_missing": vote.voter, "vote": vote.vote, "view": view}));
            }
            if vote.code.as_deref() == Some("proposal_decided") && entry.is_some() {
                violations
                    .push(json!({"id": id, "refused_vote_counted": vote.voter, "view": view}));
            }
            if vote.code.as_deref() == Some("already_voted") {
                violations.push(json!({"id": id, "already_voted_on_first_vote": vote.voter}));
            }
        }
        for (voter, value, _) in &recorded {
            let sent_it = sent.iter().any(|v| {
                v.voter == *voter
                    && v.vote == value
                    && matches!(v.status, Status::Ok | Status::Unknown)
            });
            if !sent_it {
                violations.push(json!({"id": id, "vote_nobody_sent": voter, "vote": value}));
            }
        }
        // Recompute the decision from the tally in index order.
        let rule = &view["rule"];
        let voters = VOTERS as u64;
        let mut ordered = recorded.clone();
        ordered.sort_by_key(|(_, _, index)| *index);
        let (mut yes, mut no, mut abstain) = (0, 0, 0);
        let mut decided_at = None;
        for (i, (_, value, _)) in ordered.iter().enumerate() {
            match value.as_str() {
                "yes" => yes += 1,
                "no" => no += 1,
                _ => abstain += 1,
            }
            if decided_at.is_none() {
                if let Some(accepted) = fixed(rule, voters, yes, no, abstain) {
                    decided_at = Some((i, accepted));
                }
            }
        }
        let expected = match decided_at {
            Some((i, _)) if i + 1 != ordered.len() => {
                violations.push(json!({"id": id, "votes_counted_after_the_decision": view}));
                continue;
            }
            Some((_, true)) => "accepted",
            Some((_, false)) => "rejected",
            None => "expired",
        };
        if state != expected {
            violations
                .push(json!({"id": id, "state": state, "tally_gives": expected, "view": view}));
        }
    }
    let mut check =
        Check::from_violations("tally", "tallies inconsistent with the votes", violations);
    if check.detail.is_null() {
        check.detail = json!({"final_states": states, "votes": votes.len()});
    }
    check
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads::CheckVerdict;

    fn view(state: &str, rule: Value, votes: &[(&str, &str, u64)]) -> Value {
        let votes: Vec<Value> = votes
            .iter()
            .map(|(voter, vote, index)| json!({"voter": voter, "vote": vote, "index": index}))
            .collect();
        json!({"state": state, "rule": rule, "tally": {"votes": votes}})
    }

    fn sent(voter: &str, vote: &'static str) -> SentVote {
        SentVote {
            id: 1,
            voter: voter.into(),
            vote,
            status: Status::Ok,
            code: None,
        }
    }

    #[test]
    fn the_tally_checker_catches_a_decision_its_tally_does_not_give() {
        let votes = [sent("jepsen-v0", "yes"), sent("jepsen-v1", "yes")];
        let tally_of = |state: &str| {
            let finals = BTreeMap::from([(
                1,
                view(
                    state,
                    json!({"threshold": 2}),
                    &[("jepsen-v0", "yes", 5), ("jepsen-v1", "yes", 7)],
                ),
            )]);
            tally(&finals, &votes).verdict
        };
        assert_eq!(tally_of("accepted"), CheckVerdict::Pass);
        assert_eq!(tally_of("rejected"), CheckVerdict::Fail);
        assert_eq!(tally_of("expired"), CheckVerdict::Fail);
        // An acknowledged vote missing from the tally, or one nobody sent, fails.
        let finals = BTreeMap::from([(
            1,
            view(
                "open",
                json!("majority"),
                &[("jepsen-v0", "yes", 5), ("jepsen-v3", "no", 6)],
            ),
        )]);
        let check = tally(&finals, &votes);
        assert_eq!(check.verdict, CheckVerdict::Fail);
        // v1's acknowledged vote is missing, v3's was never sent, and an open
        // proposal is not what the tally gives (expired).
        assert!(check.summary.starts_with("3 "), "{}", check.summary);
    }

    #[test]
    fn a_decision_counted_before_its_last_vote_is_caught() {
        // Unanimous of 4: the no at index 5 rejects; a later yes must not be counted.
        let finals = BTreeMap::from([(
            1,
            view(
                "rejected",
                json!("unanimous"),
                &[("jepsen-v0", "no", 5), ("jepsen-v1", "yes", 9)],
            ),
        )]);
        let votes = [sent("jepsen-v0", "no"), sent("jepsen-v1", "yes")];
        assert_eq!(tally(&finals, &votes).verdict, CheckVerdict::Fail);
    }

    #[test]
    fn a_changed_or_reopened_decision_is_caught() {
        let seen = |state: &str, invoke_ns, complete_ns| Seen {
            id: 1,
            invoke_ns,
            complete_ns,
            view: view(state, json!("majority"), &[]),
            read: true,
        };
        assert_eq!(
            stable(&[seen("accepted", 0, 10), seen("accepted", 20, 30)]).verdict,
            CheckVerdict::Pass
        );
        assert_eq!(
            stable(&[seen("accepted", 0, 10), seen("open", 20, 30)]).verdict,
            CheckVerdict::Fail
        );
        assert_eq!(
            stable(&[seen("accepted", 0, 10), seen("rejected", 20, 30)]).verdict,
            CheckVerdict::Fail
        );
        // A read concurrent with the deciding one may still see it open.
        assert_eq!(
            stable(&[seen("accepted", 0, 10), seen("open", 5, 30)]).verdict,
            CheckVerdict::Pass
        );
    }
}
