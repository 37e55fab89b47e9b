//! The barrier workload: groups of clients, each with its own session, meet at a
//! named barrier (one per group, `parties` = the group's size) generation after
//! generation, while the nemesis kills or pauses nodes. Sessions come from
//! `session.rs`, as the tasks workload's do: created with a `request_id` (retried
//! with the same id until a definite answer, so an indeterminate create never leaves
//! a second live session behind), then a background keepalive at an eighth of the
//! TTL that rotates over the nodes (`Create::Idempotent`, `Keepalive::Rotating`).
//!
//! Each client loops: `POST /v1/barriers/{name}/wait` with `wait_ms` 1 s, through a
//! random node; about one wait in 80 also ends its own session
//! (`DELETE /v1/sessions/{id}`) 10 ms in, which breaks the generation it joined
//! unless that was released first. A `200` names the generation the request's
//! arrival joined and how it ended: `released` (`ok`), `broken` (a participant's
//! session ended: a legitimate `fail`), or neither (the wait ran out and the arrival
//! was withdrawn: `fail`).
//! `404 session_not_found` means the client's session ended (it makes a new one).
//! Barrier waits take no `request_id`, so nothing is resolved after healing; an
//! unanswered wait is `unknown` and proves nothing (the client retires its process
//! id, as every workload does). A `503` is kept as `unavailable` in the history but
//! the checkers treat it as "maybe arrived": a wait whose withdrawal met a leader
//! change answers `503` although its arrival was applied and stays (docs/api.md,
//! "Blocking waits"), unlike the general contract's "503: not applied".
//!
//! How the checkers reason (generations come from the server's answers, never from
//! counting, so a lost answer cannot shift them):
//!
//! - Every `200` for generation `g` comes from a request whose arrival was applied
//!   while `g` was still gathering (the arrival is what picks `g`). The end of `g`
//!   (release or break) is one later apply, and every answer saying `g` ended
//!   completes after it. So **`no-early-release`**: no answer for `g` may have been
//!   *invoked* after the earliest answer reporting `g`'s end *completed* — that would
//!   be a participant let go before another participant had even called `wait`.
//!   Unknown waits add no evidence, so they can only hide an anomaly, never invent
//!   one. Second half: at the earliest `released` answer of `g`, at least `parties`
//!   distinct sessions must have invoked a wait that could have arrived in `g` (an
//!   answered wait for `g`, or any unknown or `503` wait invoked before, counted
//!   generously): fewer means an under-full release, or one wait request arriving
//!   in two generations (its answer names the later one), which the contract rules
//!   out as well.
//! - **`generation-order`**: the barrier's generation never goes back. If answer `A`
//!   completed before request `B` was invoked, `B`'s generation is at least `A`'s,
//!   and strictly greater when `A` reported its generation ended.
//! - **`consistent-outcome`**: all answers about one generation agree (never one
//!   `released` and another `broken`), and they agree with the final
//!   `GET /v1/barriers/{name}` after healing (its `ended` list of the last 64
//!   generations, and its current generation: an answer cannot report the end of a
//!   generation the server still calls current, nor name a later one).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::session::{self, op, Create, Keepalive, Net, Session, Spec};
use super::{http_client, send, Check, CheckVerdict, Context, Op, Sent, Status, WorkloadResult};

/// Largest group (and so `parties`) of one barrier.
const GROUP_SIZE: usize = 3;
/// How long one barrier wait may block at the server.
const WAIT_MS: u64 = 1_000;
const SESSION_TTL_MS: u64 = 4_000;
/// About one wait in this many has its session ended while it waits.
const END_SESSION_ONE_IN: u32 = 80;
const END_SESSION_AFTER_MS: u64 = 10;
/// Attempts to read each barrier after healing.
const FINAL_READ_ATTEMPTS: usize = 30;

// ----- the workload ----------------------------------------------------------------

/// How an answered wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Released,
    Broken,
    /// The wait ran out; the arrival was withdrawn.
    Left,
}

/// What one wait request got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// `200`: the generation its arrival joined, and how it ended.
    Generation { generation: u64, ended: Ended },
    /// Maybe arrived, in some generation.
    Unknown,
    /// Certainly did not arrive (refused or never reached the state machine).
    NoArrival,
}

/// One wait request.
#[derive(Debug, Clone)]
struct Enter {
    barrier: String,
    session: u64,
    invoke_ns: u64,
    /// Set when `answer` is not `Unknown`.
    complete_ns: Option<u64>,
    answer: Answer,
}

/// The server's view of one barrier after healing.
#[derive(Debug, Clone, Default)]
struct FinalView {
    generation: u64,
    /// generation → broken.
    ended: BTreeMap<u64, bool>,
}

struct Client {
    index: usize,
    processes: usize,
    urls: Vec<String>,
    seed: u64,
    started: Instant,
    until: Instant,
    barrier: String,
    parties: u32,
}

/// Runs the groups, reads every barrier after healing, and checks.
pub async fn run(mut context: Context) -> anyhow::Result<WorkloadResult> {
    let groups = groups(context.processes);
    let mut parties: BTreeMap<String, u32> = BTreeMap::new();
    let mut handles = Vec::new();
    for (index, group) in groups.iter().enumerate() {
        let barrier = format!("jepsen-barrier-{group}");
        let size = groups.iter().filter(|g| *g == group).count() as u32;
        parties.insert(barrier.clone(), size);
        let client = Client {
            index,
            processes: context.processes,
            urls: context.urls.clone(),
            seed: context.seed,
            started: context.started,
            until: context.until,
            barrier,
            parties: size,
        };
        handles.push(tokio::spawn(client.run()));
    }
    let mut enters = Vec::new();
    let mut ops = Vec::new();
    for handle in handles {
        let (client_enters, client_ops) = handle.await?;
        enters.extend(client_enters);
        ops.extend(client_ops);
    }
    context.wait_healed().await;
    let http = context.http();
    let mut finals = BTreeMap::new();
    for barrier in parties.keys() {
        let mut view = None;
        for attempt in 0..FINAL_READ_ATTEMPTS {
            let node = attempt % context.urls.len();
            let url = format!("{}/v1/barriers/{barrier}", context.urls[node]);
            let invoke_ns = context.now_ns();
            let sent = send(http.get(&url)).await;
            let status = sent.status();
            let read = match &sent {
                Sent::Answer(200, body) => parse_view(body),
                _ => None,
            };
            ops.push(Op {
                process: u64::MAX,
                f: "read".into(),
                key: barrier.clone(),
                value: sent.body().clone(),
                status: if status == Status::Unknown {
                    Status::Fail
                } else {
                    status
                },
                invoke_ns,
                complete_ns: Some(context.now_ns()),
                node: node as u64 + 1,
            });
            if read.is_some() {
                view = read;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        finals.insert(barrier.clone(), view);
    }
    ops.sort_by_key(|op| op.invoke_ns);
    Ok(WorkloadResult {
        ops,
        checks: check(&enters, &parties, &finals),
    })
}

/// Group label of each client: groups of [`GROUP_SIZE`], the last one absorbing a
/// remainder too small to form its own group of two.
fn groups(processes: usize) -> Vec<usize> {
    let count = (processes / GROUP_SIZE).max(1);
    (0..processes)
        .map(|index| (index / GROUP_SIZE).min(count - 1))
        .collect()
}

fn parse_view(body: &Value) -> Option<FinalView> {
    let generation = body["generation"].as_u64()?;
    let mut ended = BTreeMap::new();
    for entry in body["ended"].as_array()? {
        ended.insert(entry["generation"].as_u64()?, entry["broken"].as_bool()?);
    }
    Some(FinalView { generation, ended })
}

impl Client {
    async fn run(self) -> (Vec<Enter>, Vec<Op>) {
        let mut rng = SmallRng::seed_from_u64(self.seed.wrapping_add(self.index as u64 * 7919));
        let http = http_client(Duration::from_millis(2_000));
        let waiting = http_client(Duration::from_millis(WAIT_MS + 2_000));
        let mut process = self.index as u64;
        let mut enters = Vec::new();
        let mut ops = Vec::new();
        let net = Net::with(self.urls.clone(), http, self.started);
        let mut session: Option<Session> = None;
        let mut created = 0u64;
        let now_ns = || self.started.elapsed().as_nanos() as u64;
        while Instant::now() < self.until {
            let live = match session.take() {
                Some(live) if live.is_alive() => live,
                _ => {
                    created += 1;
                    let spec = Spec {
                        body: json!({
                            "name": format!("barrier-client-{}", self.index),
                            "capacity": 0,
                            "ttl_ms": SESSION_TTL_MS,
                        }),
                        ttl_ms: SESSION_TTL_MS,
                        create: Create::Idempotent {
                            request_id: format!("barrier-session-{}-{created}", self.index),
                        },
                        keepalive: Keepalive::Rotating,
                    };
                    let until = self.until;
                    let keep_going = || Instant::now() < until;
                    let creating =
                        session::create(&net, &mut rng, &mut process, &spec, keep_going, &mut ops);
                    match creating.await {
                        Some(live) => live,
                        None => continue,
                    }
                }
            };
            let node = rng.gen_range(0..self.urls.len());
            let url = format!("{}/v1/barriers/{}/wait", self.urls[node], self.barrier);
            let body =
                json!({ "session_id": live.id, "parties": self.parties, "wait_ms": WAIT_MS });
            // Now and then end the session while the wait is pending: the generation
            // breaks (unless it was released first), exercising `broken` answers.
            let end_session = rng.gen_range(0..END_SESSION_ONE_IN) == 0;
            let end_node = rng.gen_range(0..self.urls.len());
            let invoke_ns = now_ns();
            let (sent, ended) = tokio::join!(send(waiting.post(&url).json(&body)), async {
                if !end_session {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(END_SESSION_AFTER_MS)).await;
                Some(session::end(&net, end_node, live.id).await)
            });
            let complete_ns = now_ns();
            if let Some(end) = ended {
                // Concurrent with the wait: its own process id.
                let process = (1 << 40) + self.index as u64;
                let value = json!({ "session": live.id, "answer": end.sent.body() });
                ops.push(op(process, "end-session", "sessions", value, &end));
                // Gone or maybe gone: use a new one either way.
                live.mark_gone(end.invoke_ns);
            }
            let answer = match &sent {
                Sent::Answer(200, body) => match (
                    body["generation"].as_u64(),
                    body["released"].as_bool(),
                    body["broken"].as_bool(),
                ) {
                    (Some(generation), Some(released), Some(broken)) => Answer::Generation {
                        generation,
                        ended: match (released, broken) {
                            (true, false) => Ended::Released,
                            (false, true) => Ended::Broken,
                            (false, false) => Ended::Left,
                            (true, true) => {
                                eprintln!("barrier: released and broken at once: {body}");
                                Ended::Broken
                            }
                        },
                    },
                    _ => {
                        eprintln!("barrier: unexpected answer {body}");
                        Answer::Unknown
                    }
                },
                // A wait whose withdrawal found leadership lost answers 503 although
                // its arrival was applied and stays (docs/api.md, "Blocking waits").
                Sent::Answer(503, _) => Answer::Unknown,
                sent => match sent.status() {
                    Status::Unknown => Answer::Unknown,
                    _ => Answer::NoArrival,
                },
            };
            let status = match (answer, sent.status()) {
                (
                    Answer::Generation {
                        ended: Ended::Released,
                        ..
                    },
                    _,
                ) => Status::Ok,
                (Answer::Generation { .. }, _) => Status::Fail,
                (Answer::Unknown, Status::Unavailable) => Status::Unavailable,
                (Answer::Unknown, _) => Status::Unknown,
                (Answer::NoArrival, status) => status,
            };
            ops.push(Op {
                process,
                f: "enter".into(),
                key: self.barrier.clone(),
                value: json!({
                    "session": live.id,
                    "parties": self.parties,
                    "answer": sent.body(),
                }),
                status,
                invoke_ns,
                complete_ns: (status != Status::Unknown).then_some(complete_ns),
                node: node as u64 + 1,
            });
            enters.push(Enter {
                barrier: self.barrier.clone(),
                session: live.id,
                invoke_ns,
                complete_ns: (answer != Answer::Unknown).then_some(complete_ns),
                answer,
            });
            if sent.error_code() == Some("session_not_found") {
                live.mark_gone(invoke_ns);
            }
            match status {
                Status::Unknown => process += self.processes as u64,
                Status::Unavailable => tokio::time::sleep(Duration::from_millis(50)).await,
                Status::Fail if answer == Answer::NoArrival => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                // Vary the arrival order of the next generation a little.
                _ => tokio::time::sleep(Duration::from_millis(rng.gen_range(0..30))).await,
            }
            session = Some(live);
        }
        (enters, ops)
    }
}

// ----- checkers --------------------------------------------------------------------

fn check(
    enters: &[Enter],
    parties: &BTreeMap<String, u32>,
    finals: &BTreeMap<String, Option<FinalView>>,
) -> Vec<Check> {
    // (barrier, generation) → answered waits.
    let mut by_generation: BTreeMap<(&str, u64), Vec<(&Enter, Ended)>> = BTreeMap::new();
    for enter in enters {
        if let Answer::Generation { generation, ended } = enter.answer {
            by_generation
                .entry((enter.barrier.as_str(), generation))
                .or_default()
                .push((enter, ended));
        }
    }
    let count = |want: Ended| {
        by_generation
            .values()
            .filter(|answers| answers.iter().any(|(_, ended)| *ended == want))
            .count()
    };
    let detail = json!({
        "waits": enters.len(),
        "unknown_waits": enters.iter().filter(|e| e.answer == Answer::Unknown).count(),
        "generations_released": count(Ended::Released),
        "generations_broken": count(Ended::Broken),
        "waits_timed_out": enters
            .iter()
            .filter(|e| matches!(e.answer, Answer::Generation { ended: Ended::Left, .. }))
            .count(),
    });

    let mut early = Vec::new();
    for ((barrier, generation), answers) in &by_generation {
        let Some((first_end, end_ns)) = answers
            .iter()
            .filter(|(_, ended)| *ended != Ended::Left)
            .filter_map(|(enter, _)| Some((*enter, enter.complete_ns?)))
            .min_by_key(|(_, ns)| *ns)
        else {
            continue;
        };
        if let Some((late, _)) = answers
            .iter()
            .filter(|(enter, _)| enter.invoke_ns > end_ns)
            .max_by_key(|(enter, _)| enter.invoke_ns)
        {
            early.push(json!({
                "barrier": barrier,
                "generation": generation,
                "why": "a participant's wait was answered with the end of the generation before another participant of it had invoked its wait",
                "answered_session": first_end.session,
                "answered_ns": end_ns,
                "late_session": late.session,
                "late_invoke_ns": late.invoke_ns,
            }));
            continue;
        }
        let Some(release_ns) = answers
            .iter()
            .filter(|(_, ended)| *ended == Ended::Released)
            .filter_map(|(enter, _)| enter.complete_ns)
            .min()
        else {
            continue;
        };
        let mut possible: BTreeSet<u64> = answers
            .iter()
            .filter(|(enter, _)| enter.invoke_ns < release_ns)
            .map(|(enter, _)| enter.session)
            .collect();
        possible.extend(
            enters
                .iter()
                .filter(|e| e.barrier == *barrier && e.answer == Answer::Unknown)
                .filter(|e| e.invoke_ns < release_ns)
                .map(|e| e.session),
        );
        let needed = parties.get(*barrier).copied().unwrap_or(0);
        if (possible.len() as u32) < needed {
            early.push(json!({
                "barrier": barrier,
                "generation": generation,
                "why": "released although fewer than `parties` sessions have a wait that could have arrived in it: an under-full release, or one wait arriving in two generations",
                "parties": needed,
                "possible_sessions": possible,
                "released_ns": release_ns,
            }));
        }
    }
    let mut no_early = Check::from_violations("no-early-release", "early releases", early);
    if no_early.verdict == CheckVerdict::Pass {
        no_early.detail = detail;
    }

    let mut order = Vec::new();
    let barriers: BTreeSet<&str> = enters.iter().map(|e| e.barrier.as_str()).collect();
    for barrier in barriers {
        let mut answered: Vec<(&Enter, u64, Ended, u64)> = enters
            .iter()
            .filter(|e| e.barrier == barrier)
            .filter_map(|e| match e.answer {
                Answer::Generation { generation, ended } => {
                    Some((e, generation, ended, e.complete_ns?))
                }
                _ => None,
            })
            .collect();
        let mut by_invoke = answered.clone();
        answered.sort_by_key(|(_, _, _, complete)| *complete);
        by_invoke.sort_by_key(|(e, _, _, _)| e.invoke_ns);
        // The least generation a request may name, from answers completed before it.
        let mut floor: Option<(u64, &Enter)> = None;
        let mut next = 0;
        for (enter, generation, _, _) in by_invoke {
            while next < answered.len() && answered[next].3 < enter.invoke_ns {
                let (before, g, ended, _) = answered[next];
                let least = if ended == Ended::Left { g } else { g + 1 };
                if floor.is_none_or(|(f, _)| least > f) {
                    floor = Some((least, before));
                }
                next += 1;
            }
            if let Some((least, before)) = floor {
                if generation < least {
                    order.push(json!({
                        "barrier": barrier,
                        "earlier_session": before.session,
                        "earlier_answer": format!("{:?}", before.answer),
                        "earlier_complete_ns": before.complete_ns,
                        "later_session": enter.session,
                        "later_invoke_ns": enter.invoke_ns,
                        "later_generation": generation,
                        "least_possible_generation": least,
                    }));
                }
            }
        }
    }
    let order = Check::from_violations("generation-order", "generations going back", order);

    let mut disagreements = Vec::new();
    let mut unchecked_barriers = Vec::new();
    for ((barrier, generation), answers) in &by_generation {
        let released = answers.iter().any(|(_, e)| *e == Ended::Released);
        let broken = answers.iter().any(|(_, e)| *e == Ended::Broken);
        if released && broken {
            disagreements.push(json!({
                "barrier": barrier, "generation": generation,
                "why": "one wait was told the generation was released, another that it broke",
            }));
        }
        let Some(Some(view)) = finals.get(*barrier) else {
            if !unchecked_barriers.contains(barrier) {
                unchecked_barriers.push(*barrier);
            }
            continue;
        };
        if *generation > view.generation {
            disagreements.push(json!({
                "barrier": barrier, "generation": generation,
                "why": "an answer names a generation after the final current one",
                "final_generation": view.generation,
            }));
        } else if *generation == view.generation && (released || broken) {
            disagreements.push(json!({
                "barrier": barrier, "generation": generation,
                "why": "an answer reports the end of the generation the server still gathers",
            }));
        } else if let Some(final_broken) = view.ended.get(generation) {
            if (released && *final_broken) || (broken && !*final_broken) {
                disagreements.push(json!({
                    "barrier": barrier, "generation": generation,
                    "why": "an answer disagrees with how the final read says the generation ended",
                    "answered_released": released, "final_broken": final_broken,
                }));
            }
        }
    }
    let mut consistent = Check::from_violations(
        "consistent-outcome",
        "disagreements about how a generation ended",
        disagreements,
    );
    if consistent.verdict == CheckVerdict::Pass && !unchecked_barriers.is_empty() {
        consistent = Check::new(
            "consistent-outcome",
            CheckVerdict::Unknown,
            "answers agree among themselves, but no final read of some barriers".into(),
            json!({ "unread_barriers": unchecked_barriers }),
        );
    }
    vec![no_early, order, consistent]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(session: u64, invoke: u64, complete: u64, generation: u64, ended: Ended) -> Enter {
        Enter {
            barrier: "b".into(),
            session,
            invoke_ns: invoke,
            complete_ns: Some(complete),
            answer: Answer::Generation { generation, ended },
        }
    }

    fn parties() -> BTreeMap<String, u32> {
        BTreeMap::from([("b".to_string(), 3)])
    }

    fn finals(generation: u64, ended: &[(u64, bool)]) -> BTreeMap<String, Option<FinalView>> {
        BTreeMap::from([(
            "b".to_string(),
            Some(FinalView {
                generation,
                ended: ended.iter().copied().collect(),
            }),
        )])
    }

    fn verdicts(checks: &[Check]) -> Vec<(String, CheckVerdict)> {
        checks.iter().map(|c| (c.name.clone(), c.verdict)).collect()
    }

    fn verdict(checks: &[Check], name: &str) -> CheckVerdict {
        checks.iter().find(|c| c.name == name).unwrap().verdict
    }

    fn good_history() -> Vec<Enter> {
        vec![
            answered(1, 0, 30, 0, Ended::Released),
            answered(2, 5, 31, 0, Ended::Released),
            answered(3, 20, 25, 0, Ended::Released),
            answered(1, 40, 90, 1, Ended::Broken),
            answered(2, 41, 95, 1, Ended::Broken),
            answered(2, 100, 150, 2, Ended::Left),
        ]
    }

    #[test]
    fn a_correct_history_passes() {
        let checks = check(
            &good_history(),
            &parties(),
            &finals(2, &[(0, false), (1, true)]),
        );
        assert!(
            checks.iter().all(|c| c.verdict == CheckVerdict::Pass),
            "{:?}",
            verdicts(&checks)
        );
    }

    #[test]
    fn a_release_before_a_participant_invoked_is_caught() {
        let mut history = good_history();
        // Session 3 joined generation 0 although session 1 was already released.
        history[2] = answered(3, 35, 36, 0, Ended::Released);
        let checks = check(&history, &parties(), &finals(2, &[(0, false), (1, true)]));
        assert_eq!(verdict(&checks, "no-early-release"), CheckVerdict::Fail);
    }

    #[test]
    fn an_under_full_release_is_caught_but_unknown_waits_excuse_it() {
        let mut history = good_history();
        history.remove(2);
        let checks = check(&history, &parties(), &finals(2, &[(0, false), (1, true)]));
        assert_eq!(verdict(&checks, "no-early-release"), CheckVerdict::Fail);
        // An unanswered wait of session 3 may have been the third arrival.
        history.push(Enter {
            barrier: "b".into(),
            session: 3,
            invoke_ns: 10,
            complete_ns: None,
            answer: Answer::Unknown,
        });
        let checks = check(&history, &parties(), &finals(2, &[(0, false), (1, true)]));
        assert_eq!(verdict(&checks, "no-early-release"), CheckVerdict::Pass);
    }

    #[test]
    fn a_generation_going_back_is_caught() {
        let mut history = good_history();
        // Invoked after generation 1 was reported broken, yet joined generation 1.
        history.push(answered(3, 96, 140, 1, Ended::Left));
        let checks = check(&history, &parties(), &finals(2, &[(0, false), (1, true)]));
        assert_eq!(verdict(&checks, "generation-order"), CheckVerdict::Fail);
    }

    #[test]
    fn disagreeing_outcomes_are_caught() {
        let checks = check(
            &good_history(),
            &parties(),
            &finals(2, &[(0, true), (1, true)]),
        );
        assert_eq!(verdict(&checks, "consistent-outcome"), CheckVerdict::Fail);
        let checks = check(&good_history(), &parties(), &finals(1, &[(0, false)]));
        assert_eq!(verdict(&checks, "consistent-outcome"), CheckVerdict::Fail);
        let mut history = good_history();
        history.push(answered(3, 42, 96, 1, Ended::Released));
        let checks = check(&history, &parties(), &finals(2, &[(0, false), (1, true)]));
        assert_eq!(verdict(&checks, "consistent-outcome"), CheckVerdict::Fail);
        let unread = BTreeMap::from([("b".to_string(), None)]);
        let checks = check(&good_history(), &parties(), &unread);
        assert_eq!(
            verdict(&checks, "consistent-outcome"),
            CheckVerdict::Unknown
        );
    }

    #[test]
    fn groups_cover_every_client() {
        assert_eq!(groups(6), vec![0, 0, 0, 1, 1, 1]);
        assert_eq!(groups(7), vec![0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(groups(2), vec![0, 0]);
    }
}
