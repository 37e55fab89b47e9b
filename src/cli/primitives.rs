//! `conclave lock|semaphore|barrier|election|proposal|2pc|txn ...`: the
//! coordination primitives from the command line, one API call per command
//! (docs/cli.md). Acquires, waits and campaigns act for a session (`--session`,
//! e.g. from `conclave session create`); `--wait-ms` blocks server-side.
//!
//! Must not depend on the server's internals: calls go through `call`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use super::call::{self, body, json_value, named, some, Call, Common};

#[derive(Subcommand, Debug)]
pub enum LockCommand {
    /// Lists the locks in use (`--prefix`, `--after` pages on).
    List {
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long)]
        after: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Shows lock NAME's holders and waiters.
    Get { name: String },
    /// Acquires NAME for SESSION; prints the fencing token.
    Acquire {
        name: String,
        #[arg(long)]
        session: u64,
        /// exclusive (default) or shared.
        #[arg(long)]
        mode: Option<String>,
        #[arg(long)]
        wait_ms: Option<u64>,
        #[arg(long)]
        body: Option<String>,
    },
    /// Releases SESSION's hold of NAME with its fencing token.
    Release {
        name: String,
        #[arg(long)]
        session: u64,
        #[arg(long)]
        fencing_token: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum SemaphoreCommand {
    /// Lists the semaphores in use (`--prefix`, `--after` pages on).
    List {
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long)]
        after: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Shows semaphore NAME.
    Get { name: String },
    /// Takes PERMITS (default 1) of NAME, whose limit is LIMIT, for SESSION.
    Acquire {
        name: String,
        #[arg(long)]
        session: u64,
        #[arg(long)]
        limit: u32,
        #[arg(long)]
        permits: Option<u32>,
        #[arg(long)]
        wait_ms: Option<u64>,
    },
    /// Returns SESSION's permits of NAME.
    Release {
        name: String,
        #[arg(long)]
        session: u64,
        #[arg(long)]
        fencing_token: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum BarrierCommand {
    /// Lists the barriers in use (`--prefix`, `--after` pages on).
    List {
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long)]
        after: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Shows barrier NAME.
    Get { name: String },
    /// Arrives at NAME of PARTIES for SESSION, waiting up to --wait-ms.
    Wait {
        name: String,
        #[arg(long)]
        session: u64,
        #[arg(long)]
        parties: u32,
        #[arg(long)]
        wait_ms: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ElectionCommand {
    /// Lists the elections in use (`--prefix`, `--after` pages on).
    List {
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long)]
        after: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Shows election NAME's leader and candidates.
    Get { name: String },
    /// Campaigns for NAME with VALUE (JSON) for SESSION.
    Campaign {
        name: String,
        #[arg(long)]
        session: u64,
        #[arg(long)]
        value: Option<String>,
        #[arg(long)]
        priority: Option<i32>,
        #[arg(long)]
        wait_ms: Option<u64>,
    },
    /// Resigns SESSION's leadership of NAME in TERM.
    Resign {
        name: String,
        #[arg(long)]
        session: u64,
        #[arg(long)]
        term: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum ProposalCommand {
    /// Opens a proposal: --voters a,b,c --rule majority|unanimous|N (a threshold).
    Create {
        title: String,
        #[arg(long, value_delimiter = ',', required = true)]
        voters: Vec<String>,
        #[arg(long, default_value = "majority")]
        rule: String,
        #[arg(long)]
        deadline_ms: u64,
        #[arg(long)]
        payload: Option<String>,
        #[arg(long)]
        body: Option<String>,
    },
    /// Votes yes, no or abstain on proposal ID as VOTER.
    Vote {
        id: u64,
        #[arg(long)]
        voter: String,
        vote: String,
    },
    /// Shows proposal ID (--wait-ms: until decided).
    Get {
        id: u64,
        #[arg(long)]
        wait_ms: Option<u64>,
    },
    /// Lists proposals (--voter: those awaiting that voter).
    List {
        #[arg(long)]
        voter: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum TwoPhaseCommand {
    /// Starts a two-phase commit among --participants a,b.
    Create {
        #[arg(long, value_delimiter = ',', required = true)]
        participants: Vec<String>,
        #[arg(long)]
        timeout_ms: u64,
        #[arg(long)]
        payload: Option<String>,
    },
    /// Votes commit or abort on transaction ID as PARTICIPANT.
    Vote {
        id: u64,
        #[arg(long)]
        participant: String,
        vote: String,
    },
    /// Acknowledges transaction ID's decision as PARTICIPANT.
    Ack {
        id: u64,
        #[arg(long)]
        participant: String,
    },
    /// Shows transaction ID.
    Get { id: u64 },
}

/// A voter or participant: a number is a session id, anything else a name.
fn party(text: &str) -> Value {
    text.parse::<u64>()
        .map_or_else(|_| json!(text), |id| json!(id))
}

fn parties(texts: &[String]) -> (Value, bool) {
    let sessions = texts.iter().all(|t| t.parse::<u64>().is_ok());
    let list: Vec<Value> = texts.iter().map(|t| party(t)).collect();
    (json!(list), sessions)
}

fn list(room: &str, prefix: Option<String>, after: Option<String>, limit: Option<u32>) -> Call {
    Call::get(&["v1", room])
        .query("prefix", prefix)
        .query("after", after)
        .query("limit", limit)
}

fn post(path: Vec<String>, body: Value) -> Call {
    Call::at(Method::POST, path, Some(body))
}

fn get(path: Vec<String>) -> Call {
    Call::at(Method::GET, path, None)
}

pub fn lock(common: &Common, command: LockCommand) -> anyhow::Result<()> {
    let call = match command {
        LockCommand::Get { name } => get(named("locks", &name, "")),
        LockCommand::List {
            prefix,
            after,
            limit,
        } => list("locks", prefix, after, limit),
        LockCommand::Acquire {
            name,
            session,
            mode,
            wait_ms,
            body: extra,
        } => {
            let fields = vec![
                ("session_id", Some(json!(session))),
                ("mode", some(mode)),
                ("wait_ms", some(wait_ms)),
            ];
            post(
                named("locks", &name, "acquire"),
                body(fields, extra.as_deref())?,
            )
        }
        LockCommand::Release {
            name,
            session,
            fencing_token,
        } => post(
            named("locks", &name, "release"),
            json!({"session_id": session, "fencing_token": fencing_token}),
        ),
    };
    call::run(common, call)
}

pub fn semaphore(common: &Common, command: SemaphoreCommand) -> anyhow::Result<()> {
    let call = match command {
        SemaphoreCommand::Get { name } => get(named("semaphores", &name, "")),
        SemaphoreCommand::List {
            prefix,
            after,
            limit,
        } => list("semaphores", prefix, after, limit),
        SemaphoreCommand::Acquire {
            name,
            session,
            limit,
            permits,
            wait_ms,
        } => {
            let fields = vec![
                ("session_id", Some(json!(session))),
                ("limit", Some(json!(limit))),
                ("permits", some(permits)),
                ("wait_ms", some(wait_ms)),
            ];
            post(named("semaphores", &name, "acquire"), body(fields, None)?)
        }
        SemaphoreCommand::Release {
            name,
            session,
            fencing_token,
        } => post(
            named("semaphores", &name, "release"),
            json!({"session_id": session, "fencing_token": fencing_token}),
        ),
    };
    call::run(common, call)
}

pub fn barrier(common: &Common, command: BarrierCommand) -> anyhow::Result<()> {
    let call = match command {
        BarrierCommand::Get { name } => get(named("barriers", &name, "")),
        BarrierCommand::List {
            prefix,
            after,
            limit,
        } => list("barriers", prefix, after, limit),
        BarrierCommand::Wait {
            name,
            session,
            parties,
            wait_ms,
        } => {
            let fields = vec![
                ("session_id", Some(json!(session))),
                ("parties", Some(json!(parties))),
                ("wait_ms", some(wait_ms)),
            ];
            post(named("barriers", &name, "wait"), body(fields, None)?)
        }
    };
    call::run(common, call)
}

pub fn election(common: &Common, command: ElectionCommand) -> anyhow::Result<()> {
    let call = match command {
        ElectionCommand::Get { name } => get(named("elections", &name, "")),
        ElectionCommand::List {
            prefix,
            after,
            limit,
        } => list("elections", prefix, after, limit),
        ElectionCommand::Campaign {
            name,
            session,
            value,
            priority,
            wait_ms,
        } => {
            let fields = vec![
                ("session_id", Some(json!(session))),
                ("value", value.as_deref().map(json_value)),
                ("priority", some(priority)),
                ("wait_ms", some(wait_ms)),
            ];
            post(named("elections", &name, "campaign"), body(fields, None)?)
        }
        ElectionCommand::Resign {
            name,
            session,
            term,
        } => post(
            named("elections", &name, "resign"),
            json!({"session_id": session, "term": term}),
        ),
    };
    call::run(common, call)
}

pub fn proposal(common: &Common, command: ProposalCommand) -> anyhow::Result<()> {
    let call = match command {
        ProposalCommand::Create {
            title,
            voters,
            rule,
            deadline_ms,
            payload,
            body: extra,
        } => {
            let (voters, sessions) = parties(&voters);
            let rule = match rule.parse::<u32>() {
                Ok(n) => json!({ "threshold": n }),
                Err(_) => json!(rule),
            };
            let fields = vec![
                ("title", Some(json!(title))),
                ("voters", Some(voters)),
                ("voters_are_sessions", Some(json!(sessions))),
                ("rule", Some(rule)),
                ("deadline_ms", Some(json!(deadline_ms))),
                ("payload", payload.as_deref().map(json_value)),
            ];
            Call::send(
                Method::POST,
                &["v1", "proposals"],
                body(fields, extra.as_deref())?,
            )
        }
        ProposalCommand::Vote { id, voter, vote } => post(
            named("proposals", &id.to_string(), "votes"),
            json!({"voter": party(&voter), "vote": vote}),
        ),
        ProposalCommand::Get { id, wait_ms } => {
            get(named("proposals", &id.to_string(), "")).query("wait_ms", wait_ms)
        }
        ProposalCommand::List { voter } => Call::get(&["v1", "proposals"])
            .query("awaiting", voter.as_ref().map(|_| "true"))
            .query("voter", voter),
    };
    call::run(common, call)
}

pub fn two_phase(common: &Common, command: TwoPhaseCommand) -> anyhow::Result<()> {
    let call = match command {
        TwoPhaseCommand::Create {
            participants,
            timeout_ms,
            payload,
        } => {
            let (participants, sessions) = parties(&participants);
            let fields = vec![
                ("participants", Some(participants)),
                ("participants_are_sessions", Some(json!(sessions))),
                ("timeout_ms", Some(json!(timeout_ms))),
                ("payload", payload.as_deref().map(json_value)),
            ];
            Call::send(Method::POST, &["v1", "2pc"], body(fields, None)?)
        }
        TwoPhaseCommand::Vote {
            id,
            participant,
            vote,
        } => post(
            named("2pc", &id.to_string(), "vote"),
            json!({"participant": party(&participant), "vote": vote}),
        ),
        TwoPhaseCommand::Ack { id, participant } => post(
            named("2pc", &id.to_string(), "ack"),
            json!({"participant": party(&participant)}),
        ),
        TwoPhaseCommand::Get { id } => get(named("2pc", &id.to_string(), "")),
    };
    call::run(common, call)
}

/// `conclave txn FILE`: posts the transaction in FILE (`-`: stdin) as it is.
pub fn txn(common: &Common, file: &PathBuf) -> anyhow::Result<()> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading stdin")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let body: Value = serde_json::from_str(&text).context("the transaction is not JSON")?;
    call::run(common, Call::send(Method::POST, &["v1", "txn"], body))
}
