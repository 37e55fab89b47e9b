//! `conclave kv|session|task ...`: the key/value store, sessions and tasks from the
//! command line, one API call per command (docs/cli.md). Each write takes the
//! typed flags of the API body's common fields plus `--body` for the rest.
//!
//! Must not depend on the server's internals: calls go through `call`.

use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

use super::call::{self, body, json_value, named, some, Call, Common};

#[derive(Subcommand, Debug)]
pub enum KvCommand {
    /// Reads KEY (linearizable; --stale reads this node's state).
    Get {
        key: String,
        #[arg(long)]
        stale: bool,
    },
    /// Writes VALUE (JSON; text that is not JSON is stored as a string) at KEY.
    Put {
        key: String,
        value: String,
        /// Writes only if KEY's version is this (0: only if absent).
        #[arg(long)]
        if_version: Option<u64>,
        /// Ties KEY to a session: deleted when it ends.
        #[arg(long)]
        session: Option<u64>,
        /// An idempotency key: a retry with it applies once.
        #[arg(long)]
        request_id: Option<String>,
        /// Other body fields, as a JSON object.
        #[arg(long)]
        body: Option<String>,
    },
    /// Deletes KEY.
    Del {
        key: String,
        #[arg(long)]
        if_version: Option<u64>,
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Lists keys (one page; --after pages on).
    List {
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long)]
        after: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        stale: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum SessionCommand {
    /// Opens a session; prints its id.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        ttl_ms: Option<u64>,
        /// Capabilities it offers for tasks, comma-separated.
        #[arg(long, value_delimiter = ',')]
        capabilities: Vec<String>,
        /// How many tasks it takes at once (0: none).
        #[arg(long)]
        capacity: Option<u32>,
        #[arg(long)]
        body: Option<String>,
    },
    /// Renews session ID's lease once.
    Keepalive { id: u64 },
    /// Ends session ID (its locks, permits and ephemeral keys are released).
    End { id: u64 },
    /// Shows session ID.
    Get {
        id: u64,
        #[arg(long)]
        stale: bool,
    },
    /// Lists live sessions (agent discovery).
    List {
        /// Only sessions offering this capability.
        #[arg(long)]
        capability: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
    },
}

#[derive(Subcommand, Debug)]
pub enum TaskCommand {
    /// Submits a task of KIND; prints its id and state.
    Submit {
        kind: String,
        /// Its payload (JSON; other text is a string).
        #[arg(long)]
        payload: Option<String>,
        /// Capabilities a session must offer, comma-separated.
        #[arg(long, value_delimiter = ',')]
        requires: Vec<String>,
        #[arg(long)]
        priority: Option<i32>,
        #[arg(long)]
        request_id: Option<String>,
        #[arg(long)]
        body: Option<String>,
    },
    /// Shows task ID.
    Get {
        id: u64,
        #[arg(long)]
        stale: bool,
    },
    /// Lists tasks.
    List {
        /// queued, assigned, succeeded, dead, ...
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Claims SESSION's next assigned task, waiting up to --wait-ms.
    Claim {
        #[arg(long)]
        session: u64,
        #[arg(long)]
        wait_ms: Option<u64>,
    },
    /// Completes task ID with RESULT (JSON; other text is a string).
    Complete {
        id: u64,
        #[arg(long)]
        fencing_token: u64,
        #[arg(long)]
        result: Option<String>,
    },
    /// Fails task ID (retried unless --fatal, within its max_attempts).
    Fail {
        id: u64,
        #[arg(long)]
        fencing_token: u64,
        #[arg(long)]
        error: String,
        #[arg(long)]
        fatal: bool,
    },
    /// Cancels task ID.
    Cancel { id: u64 },
    /// Queues a dead or cancelled task ID again.
    Retry { id: u64 },
}

pub fn kv(common: &Common, command: KvCommand) -> anyhow::Result<()> {
    let call = match command {
        KvCommand::Get { key, stale } => Call::get(&["v1", "kv", &key]).stale(stale),
        KvCommand::Put {
            key,
            value,
            if_version,
            session,
            request_id,
            body: extra,
        } => {
            let fields = vec![
                ("value", Some(json_value(&value))),
                ("if_version", some(if_version)),
                ("session_id", some(session)),
                ("request_id", some(request_id)),
            ];
            Call::send(
                Method::PUT,
                &["v1", "kv", &key],
                body(fields, extra.as_deref())?,
            )
        }
        KvCommand::Del {
            key,
            if_version,
            request_id,
        } => {
            let fields = vec![
                ("if_version", some(if_version)),
                ("request_id", some(request_id)),
            ];
            Call::send(Method::DELETE, &["v1", "kv", &key], body(fields, None)?)
        }
        KvCommand::List {
            prefix,
            after,
            limit,
            stale,
        } => Call::get(&["v1", "kv"])
            .query("prefix", prefix)
            .query("after", after)
            .query("limit", limit)
            .stale(stale),
    };
    call::run(common, call)
}

pub fn session(common: &Common, command: SessionCommand) -> anyhow::Result<()> {
    let call = match command {
        SessionCommand::Create {
            name,
            ttl_ms,
            capabilities,
            capacity,
            body: extra,
        } => {
            let fields = vec![
                ("name", Some(json!(name))),
                ("ttl_ms", some(ttl_ms)),
                ("capabilities", Some(json!(capabilities))),
                ("capacity", some(capacity)),
            ];
            Call::send(
                Method::POST,
                &["v1", "sessions"],
                body(fields, extra.as_deref())?,
            )
        }
        SessionCommand::Keepalive { id } => Call::send(
            Method::POST,
            &["v1", "sessions", &id.to_string(), "keepalive"],
            json!({}),
        ),
        SessionCommand::End { id } => {
            Call::at(Method::DELETE, named("sessions", &id.to_string(), ""), None)
        }
        SessionCommand::Get { id, stale } => {
            Call::get(&["v1", "sessions", &id.to_string()]).stale(stale)
        }
        SessionCommand::List { capability, limit } => Call::get(&["v1", "sessions"])
            .query("capability", capability)
            .query("limit", limit),
    };
    call::run(common, call)
}

pub fn task(common: &Common, command: TaskCommand) -> anyhow::Result<()> {
    let tasks = |id: u64, action: &str| named("tasks", &id.to_string(), action);
    let post = |path, body| Call::at(Method::POST, path, Some(body));
    let call = match command {
        TaskCommand::Submit {
            kind,
            payload,
            requires,
            priority,
            request_id,
            body: extra,
        } => {
            let fields = vec![
                ("kind", Some(json!(kind))),
                ("payload", payload.as_deref().map(json_value)),
                ("required_capabilities", Some(json!(requires))),
                ("priority", some(priority)),
                ("request_id", some(request_id)),
            ];
            Call::send(
                Method::POST,
                &["v1", "tasks"],
                body(fields, extra.as_deref())?,
            )
        }
        TaskCommand::Get { id, stale } => Call::get(&["v1", "tasks", &id.to_string()]).stale(stale),
        TaskCommand::List { state, kind, limit } => Call::get(&["v1", "tasks"])
            .query("state", state)
            .query("kind", kind)
            .query("limit", limit),
        TaskCommand::Claim { session, wait_ms } => {
            let fields = vec![
                ("session_id", Some(json!(session))),
                ("wait_ms", some(wait_ms)),
            ];
            Call::send(Method::POST, &["v1", "tasks", "claim"], body(fields, None)?)
        }
        TaskCommand::Complete {
            id,
            fencing_token,
            result,
        } => post(
            tasks(id, "complete"),
            body(
                vec![
                    ("fencing_token", Some(json!(fencing_token))),
                    ("result", result.as_deref().map(json_value)),
                ],
                None,
            )?,
        ),
        TaskCommand::Fail {
            id,
            fencing_token,
            error,
            fatal,
        } => post(
            tasks(id, "fail"),
            json!({"fencing_token": fencing_token, "error": error, "retryable": !fatal}),
        ),
        TaskCommand::Cancel { id } => Call::at(Method::DELETE, tasks(id, ""), None),
        TaskCommand::Retry { id } => post(tasks(id, "retry"), json!({})),
    };
    call::run(common, call)
}
