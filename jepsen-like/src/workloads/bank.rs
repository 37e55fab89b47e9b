//! The bank workload: transfers between [`ACCOUNTS`] accounts through `POST /v1/txn`.
//!
//! **Clients.** The accounts are created by one transaction (all absent → all
//! [`INITIAL`]). Each of `processes` sequential clients then loops: read every
//! account in one linearizable read (`GET /v1/kv?prefix=`), pick two and an amount
//! the source can pay, and send a transaction that compares both accounts' versions
//! and writes both new balances, with a unique `request_id` and the retry discipline
//! of `decisions`. After healing, every transfer whose outcome the client does not
//! know is looked up by its `request_id` (`GET /v1/requests/{id}`), and the accounts
//! are read once more.
//!
//! **Checkers.**
//! - `total`: every read shows all accounts or none (they were created atomically),
//!   never a negative balance, and balances summing to `ACCOUNTS × INITIAL`.
//! - `accounted`: the final balances are the initial ones plus exactly the transfers
//!   the server applied — each acknowledged `succeeded: true` transfer, no
//!   acknowledged `succeeded: false` one, and of the unknown ones those its request
//!   table says were applied — each once, at an index of its own.

use std::collections::BTreeMap;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Value};

use super::decisions::write;
use super::session::{op, Net, BACKOFF};
use super::{Check, Context, Op, Sent, Status, WorkloadResult};

/// Accounts, and each one's opening balance.
pub const ACCOUNTS: usize = 10;
const INITIAL: i64 = 100;
const PREFIX: &str = "jepsen-bank/";

fn account(i: usize) -> String {
    format!("{PREFIX}{i}")
}

/// A transfer a client sent, and what it learned.
#[derive(Debug, Clone)]
struct Transfer {
    request_id: String,
    from: usize,
    to: usize,
    amount: i64,
    status: Status,
    /// `Some(succeeded)` when answered 200.
    succeeded: Option<bool>,
    index: Option<u64>,
}

/// One full read: balances by account (absent ones missing).
type Balances = BTreeMap<usize, (i64, u64)>;

fn balances(page: &Value) -> Option<Balances> {
    let items = page["items"].as_array()?;
    let mut all = Balances::new();
    for item in items {
        let key = item["key"].as_str()?;
        let i: usize = key.strip_prefix(PREFIX)?.parse().ok()?;
        all.insert(i, (item["value"].as_i64()?, item["version"].as_u64()?));
    }
    Some(all)
}

async fn read_all(net: &Net, node: usize, ops: &mut Vec<Op>, process: u64) -> Option<Balances> {
    let path = format!("/v1/kv?prefix={PREFIX}");
    let reply = net.call(node % net.nodes(), Method::GET, &path, None).await;
    let found = match &reply.sent {
        Sent::Answer(200, page) => balances(page),
        _ => None,
    };
    let value = json!({ "balances": found.as_ref().map(|b| b.values().map(|(v, _)| *v).collect::<Vec<_>>()) });
    ops.push(op(process, "read", "bank", value, &reply));
    found
}

pub async fn run(mut context: Context) -> anyhow::Result<WorkloadResult> {
    let net = Net::new(&context);
    let mut ops = Vec::new();
    // One transaction opens every account (retried until it has a definite answer).
    let open = json!({
        "compare": (0..ACCOUNTS).map(|i| json!({"key": account(i), "version": 0})).collect::<Vec<_>>(),
        "success": (0..ACCOUNTS).map(|i| json!({"put": {"key": account(i), "value": INITIAL}})).collect::<Vec<_>>(),
        "request_id": format!("bank-open-{}", context.seed),
    });
    loop {
        let written = write(&net, 0, "/v1/txn", &open, (&mut ops, 0, "open", "bank")).await;
        if written.status == Status::Ok || std::time::Instant::now() >= context.until {
            break;
        }
    }
    let clients: Vec<_> = (0..context.processes.min(4))
        .map(|index| {
            let (net, until) = (net.clone(), context.until);
            let seed = context.seed.wrapping_add(index as u64 * 31_337);
            tokio::spawn(async move { client(index, net, until, seed).await })
        })
        .collect();
    let (mut reads, mut transfers) = (Vec::new(), Vec::new());
    for task in clients {
        let (more_ops, more_reads, sent) = task.await?;
        ops.extend(more_ops);
        reads.extend(more_reads);
        transfers.extend(sent);
    }
    context.wait_healed().await;
    // Resolve what the clients do not know, by request id.
    for transfer in transfers
        .iter_mut()
        .filter(|t| t.succeeded.is_none() && t.status == Status::Unknown)
    {
        for attempt in 0..20 {
            let path = format!("/v1/requests/{}", transfer.request_id);
            let reply = net.call(attempt, Method::GET, &path, None).await;
            if let Sent::Answer(200, body) = &reply.sent {
                if body["applied"] == true {
                    let result = &body["result"];
                    transfer.succeeded = (result["status"] == 200)
                        .then(|| result["body"]["succeeded"].as_bool())
                        .flatten();
                    transfer.index = body["index"].as_u64();
                } else {
                    transfer.succeeded = Some(false);
                }
                break;
            }
            tokio::time::sleep(BACKOFF).await;
        }
    }
    let mut last = None;
    for attempt in 0..50 {
        if let Some(found) = read_all(&net, attempt, &mut ops, 0).await {
            reads.push(found.clone());
            last = Some(found);
            break;
        }
        tokio::time::sleep(BACKOFF).await;
    }
    let checks = vec![total(&reads), accounted(last.as_ref(), &transfers)];
    ops.sort_by_key(|op| op.invoke_ns);
    Ok(WorkloadResult { ops, checks })
}

async fn client(
    index: usize,
    net: Net,
    until: std::time::Instant,
    seed: u64,
) -> (Vec<Op>, Vec<Balances>, Vec<Transfer>) {
    let process = 1 + index as u64;
    let mut rng = SmallRng::seed_from_u64(seed);
    let (mut ops, mut reads, mut transfers) = (Vec::new(), Vec::new(), Vec::new());
    let mut n = 0;
    while std::time::Instant::now() < until {
        let Some(found) = read_all(&net, rng.gen_range(0..net.nodes()), &mut ops, process).await
        else {
            tokio::time::sleep(BACKOFF).await;
            continue;
        };
        reads.push(found.clone());
        if found.len() != ACCOUNTS {
            tokio::time::sleep(BACKOFF).await;
            continue;
        }
        let from = rng.gen_range(0..ACCOUNTS);
        let to = (from + rng.gen_range(1..ACCOUNTS)) % ACCOUNTS;
        let (from_balance, from_version) = found[&from];
        let (to_balance, to_version) = found[&to];
        if from_balance == 0 {
            continue;
        }
        let amount = rng.gen_range(1..=from_balance.min(5));
        n += 1;
        let request_id = format!("bank-{seed}-{index}-{n}");
        let body = json!({
            "compare": [{"key": account(from), "version": from_version},
                        {"key": account(to), "version": to_version}],
            "success": [{"put": {"key": account(from), "value": from_balance - amount}},
                        {"put": {"key": account(to), "value": to_balance + amount}}],
            "request_id": request_id,
        });
        let node = rng.gen_range(0..net.nodes());
        let written = write(
            &net,
            node,
            "/v1/txn",
            &body,
            (&mut ops, process, "transfer", "bank"),
        )
        .await;
        let answer = written.reply.sent.body();
        transfers.push(Transfer {
            request_id,
            from,
            to,
            amount,
            status: written.status,
            succeeded: (written.status == Status::Ok)
                .then(|| answer["succeeded"].as_bool())
                .flatten(),
            index: answer["index"].as_u64(),
        });
    }
    (ops, reads, transfers)
}

fn total(reads: &[Balances]) -> Check {
    let expected = ACCOUNTS as i64 * INITIAL;
    let mut violations = Vec::new();
    let mut full = 0;
    for read in reads {
        let sum: i64 = read.values().map(|(v, _)| v).sum();
        if !(read.is_empty() || read.len() == ACCOUNTS) {
            violations.push(json!({"partial_accounts": read.len()}));
        } else if read.len() == ACCOUNTS {
            full += 1;
            if sum != expected || read.values().any(|(v, _)| *v < 0) {
                violations.push(json!({"sum": sum, "balances": read.values().map(|(v, _)| v).collect::<Vec<_>>()}));
            }
        }
    }
    let mut check = Check::from_violations("total", "reads that do not add up", violations);
    if check.detail.is_null() {
        check.detail = json!({"full_reads": full, "expected_total": expected});
    }
    check
}

fn accounted(last: Option<&Balances>, transfers: &[Transfer]) -> Check {
    let Some(last) = last else {
        return Check::from_violations("accounted", "final reads", vec![json!("no final read")]);
    };
    let mut violations = Vec::new();
    let mut expected = vec![INITIAL; ACCOUNTS];
    let mut indexes = BTreeMap::new();
    let (mut applied, mut unresolved) = (0, 0);
    for transfer in transfers {
        match transfer.succeeded {
            Some(true) => {
                applied += 1;
                expected[transfer.from] -= transfer.amount;
                expected[transfer.to] += transfer.amount;
                if let Some(index) = transfer.index {
                    if let Some(other) = indexes.insert(index, &transfer.request_id) {
                        violations.push(
                            json!({"index": index, "shared_by": [other, transfer.request_id]}),
                        );
                    }
                }
            }
            Some(false) => {}
            None if transfer.status == Status::Unknown => unresolved += 1,
            None => {}
        }
    }
    let actual: Vec<i64> = (0..ACCOUNTS)
        .map(|i| last.get(&i).map_or(0, |(v, _)| *v))
        .collect();
    if unresolved == 0 && actual != expected {
        violations.push(json!({"final": actual, "from_applied_transfers": expected}));
    }
    let mut check = Check::from_violations("accounted", "transfers not accounted for", violations);
    if check.detail.is_null() {
        check.detail =
            json!({"transfers": transfers.len(), "applied": applied, "unresolved": unresolved});
    }
    check
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads::CheckVerdict;

    fn read(values: &[i64]) -> Balances {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (i, (*v, 1)))
            .collect()
    }

    #[test]
    fn the_checkers_catch_money_made_lost_or_moved_twice() {
        let mut even = vec![INITIAL; ACCOUNTS];
        assert_eq!(
            total(&[read(&even), Balances::new()]).verdict,
            CheckVerdict::Pass
        );
        even[0] += 1;
        assert_eq!(total(&[read(&even)]).verdict, CheckVerdict::Fail);
        assert_eq!(
            total(&[read(&[INITIAL; 3])]).verdict,
            CheckVerdict::Fail,
            "partial"
        );
        let moved = Transfer {
            request_id: "t".into(),
            from: 0,
            to: 1,
            amount: 5,
            status: Status::Ok,
            succeeded: Some(true),
            index: Some(9),
        };
        let mut after = vec![INITIAL; ACCOUNTS];
        after[0] -= 5;
        after[1] += 5;
        assert_eq!(
            accounted(Some(&read(&after)), std::slice::from_ref(&moved)).verdict,
            CheckVerdict::Pass
        );
        let mut twice = after.clone();
        twice[0] -= 5;
        twice[1] += 5;
        assert_eq!(
            accounted(Some(&read(&twice)), std::slice::from_ref(&moved)).verdict,
            CheckVerdict::Fail
        );
        let refused = Transfer {
            succeeded: Some(false),
            ..moved
        };
        assert_eq!(
            accounted(Some(&read(&after)), &[refused]).verdict,
            CheckVerdict::Fail
        );
    }
}
