//! The register workload: sequential clients doing linearizable reads, writes and
//! compare-and-sets on a few keys, with unique values, through every node.
//!
//! Outcomes follow the server's contract: 200 is `ok`; a refused CAS (409
//! `cas_mismatch`) is a checkable `fail`; 503 and connection failures before sending
//! are "not applied" (recorded in the counts, left out of the history: they had no
//! effect); 504, timeouts and lost connections are `unknown`, and the client then
//! retires its process id (Jepsen's discipline) and continues under a new one. CAS
//! goes through versions: a client CASes from the (value, version) it last saw, and
//! since every value is written once, "version matches" is "value matches".

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};

use crate::history::{Operation, Outcome, RegisterOp};

#[derive(Debug, Default, Clone, Serialize)]
pub struct Counts {
    pub attempted: u64,
    pub ok: u64,
    pub fail: u64,
    pub unknown: u64,
    /// Definitely not applied because the cluster was unavailable (503, refused
    /// connection): no effect, so not in the history.
    pub unavailable: u64,
}

pub struct Settings {
    pub urls: Vec<String>,
    pub processes: usize,
    pub keys: usize,
    pub seed: u64,
    pub started: Instant,
    pub until: Instant,
}

enum Sent {
    Answer(u16, Value),
    /// Never reached the server.
    NeverArrived,
    /// Sent, but no answer came back.
    Lost,
}

async fn send(request: reqwest::RequestBuilder) -> Sent {
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.json::<Value>().await {
                Ok(body) => Sent::Answer(status, body),
                Err(_) if status == 204 => Sent::Answer(status, Value::Null),
                Err(_) => Sent::Lost,
            }
        }
        Err(e) if e.is_connect() => Sent::NeverArrived,
        Err(_) => Sent::Lost,
    }
}

/// Runs the clients until `until`; returns the history (checkable operations) and
/// the counts of everything attempted.
pub async fn run(settings: Settings) -> (Vec<Operation>, Counts) {
    let tasks: Vec<_> = (0..settings.processes)
        .map(|index| {
            let urls = settings.urls.clone();
            let (keys, seed, started, until, processes) = (
                settings.keys,
                settings.seed,
                settings.started,
                settings.until,
                settings.processes,
            );
            tokio::spawn(
                async move { client(index, processes, urls, keys, seed, started, until).await },
            )
        })
        .collect();
    let mut history = Vec::new();
    let mut counts = Counts::default();
    for task in tasks {
        let (ops, c) = task.await.expect("client task");
        history.extend(ops);
        counts.attempted += c.attempted;
        counts.ok += c.ok;
        counts.fail += c.fail;
        counts.unknown += c.unknown;
        counts.unavailable += c.unavailable;
    }
    history.sort_by_key(|op| op.invoke_ns);
    (history, counts)
}

async fn client(
    index: usize,
    processes: usize,
    urls: Vec<String>,
    keys: usize,
    seed: u64,
    started: Instant,
    until: Instant,
) -> (Vec<Operation>, Counts) {
    let mut rng = SmallRng::seed_from_u64(seed.wrapping_add(index as u64 * 7919));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    let mut process = index as u64;
    let mut sequence = 0i64;
    // What this client last saw of each key: (value, version), None = absent.
    let mut seen: BTreeMap<usize, Option<(i64, u64)>> = BTreeMap::new();
    let (mut history, mut counts) = (Vec::new(), Counts::default());
    let now_ns = || started.elapsed().as_nanos() as u64;
    while Instant::now() < until {
        let key = rng.gen_range(0..keys);
        let node = rng.gen_range(0..urls.len());
        let url = format!("{}/v1/kv/register-{key}", urls[node]);
        sequence += 1;
        let value = (index as i64 + 1) * 1_000_000_000 + sequence;
        let request_id = format!("p{process}-{sequence}");
        let choice = rng.gen_range(0..4);
        let (op, request) = match choice {
            0 | 1 => (RegisterOp::Read { value: None }, http.get(&url)),
            2 => (
                RegisterOp::Write { value },
                http.put(&url)
                    .json(&json!({ "value": value, "request_id": request_id })),
            ),
            _ => {
                let last = seen.get(&key).copied().flatten();
                let if_version = last.map_or(0, |(_, version)| version);
                let body =
                    json!({ "value": value, "if_version": if_version, "request_id": request_id });
                (
                    RegisterOp::Cas {
                        expected: last.map(|(v, _)| v),
                        value,
                    },
                    http.put(&url).json(&body),
                )
            }
        };
        counts.attempted += 1;
        let invoke_ns = now_ns();
        let sent = send(request).await;
        let complete_ns = now_ns();
        let (op, outcome) = match (op, sent) {
            (RegisterOp::Read { .. }, Sent::Answer(200, body)) => {
                let read = body["value"].as_i64();
                seen.insert(key, read.zip(body["version"].as_u64()));
                (RegisterOp::Read { value: read }, Outcome::Ok)
            }
            (RegisterOp::Read { .. }, Sent::Answer(404, body))
                if body["error"]["code"] == "key_not_found" =>
            {
                seen.insert(key, None);
                (RegisterOp::Read { value: None }, Outcome::Ok)
            }
            (op @ (RegisterOp::Write { .. } | RegisterOp::Cas { .. }), Sent::Answer(200, body)) => {
                seen.insert(
                    key,
                    body["version"].as_u64().map(|version| (value, version)),
                );
                (op, Outcome::Ok)
            }
            (op @ RegisterOp::Cas { .. }, Sent::Answer(409, body))
                if body["error"]["code"] == "cas_mismatch" =>
            {
                seen.remove(&key);
                (op, Outcome::Fail)
            }
            (RegisterOp::Read { .. }, _)
            | (_, Sent::NeverArrived)
            | (_, Sent::Answer(503 | 429, _)) => {
                counts.unavailable += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            (op, Sent::Answer(504, _) | Sent::Lost) => (op, Outcome::Unknown),
            (op, Sent::Answer(status, body)) => {
                // Any other answer is a harness or server bug worth seeing in the report.
                eprintln!("process {process}: unexpected {status} for {op:?}: {body}");
                (op, Outcome::Unknown)
            }
        };
        match outcome {
            Outcome::Ok => counts.ok += 1,
            Outcome::Fail => counts.fail += 1,
            Outcome::Unknown => counts.unknown += 1,
        }
        let complete_ns = (outcome != Outcome::Unknown).then_some(complete_ns);
        history.push(Operation {
            process,
            key: format!("register-{key}"),
            op,
            outcome,
            invoke_ns,
            complete_ns,
            node: node as u64 + 1,
        });
        if outcome == Outcome::Unknown {
            // Retire the process: its next operation must not look concurrent-free.
            process += processes as u64;
            seen.clear();
        }
    }
    (history, counts)
}
