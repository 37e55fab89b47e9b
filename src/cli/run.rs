//! Commands that run a program under a coordination primitive, through the
//! client library's helpers (`conclave-client`: `Session`, `LockGuard`, the worker
//! loop):
//!
//! - `conclave lock NAME -- CMD...` holds lock NAME while CMD runs, passing the
//!   fencing token in `CONCLAVE_FENCING_TOKEN` (what `consul lock` does, fenced);
//!   if the lock is lost (the session expired locally or on the server, or was
//!   ended) CMD gets SIGTERM, then SIGKILL after `--grace`. Exits with CMD's code,
//!   or 1 when the lock was lost.
//! - `conclave worker --capability a,b -- CMD...` claims tasks and runs CMD once
//!   per task: the payload (JSON) on stdin, `CONCLAVE_TASK_ID`,
//!   `CONCLAVE_FENCING_TOKEN` and `CONCLAVE_TASK_KIND` in its environment; exit 0
//!   completes the task with its stdout (JSON, or else a string), another code
//!   fails it (retried within its `max_attempts`; exit 100 fails it for good); a
//!   cancellation SIGTERMs CMD.
//!
//! Must not depend on the server's internals.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use conclave_client::{
    Client, Session, SessionCreate, SessionOptions, TaskContext, TaskFailure, WorkerOptions,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use super::call::Common;

/// A worker command's exit code that fails its task for good (not retried).
pub const PERMANENT_FAILURE: i32 = 100;

#[derive(clap::Args, Debug)]
pub struct Held {
    /// The session's ttl: how soon the lock is lost if this process stops renewing.
    #[arg(long, default_value_t = 10_000)]
    pub ttl_ms: u64,
    /// How long CMD has between SIGTERM and SIGKILL once the lock is lost.
    #[arg(long, default_value_t = 5_000)]
    pub grace_ms: u64,
}

#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// Capabilities offered for tasks, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub capability: Vec<String>,
    /// Tasks run at once (the session's capacity).
    #[arg(long, default_value_t = 1)]
    pub capacity: u32,
    #[arg(long, default_value = "conclave-worker")]
    pub name: String,
    #[arg(long, default_value_t = 10_000)]
    pub ttl_ms: u64,
    /// Stop after this many tasks (default: run until interrupted).
    #[arg(long)]
    pub max_tasks: Option<u64>,
    /// The program and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// A client over `--endpoint`'s nodes with the contract's retries.
fn client(common: &Common) -> anyhow::Result<Client> {
    let remote = &common.remote;
    let urls: Vec<String> = remote.endpoints().map(|e| remote.url_of(e)).collect();
    let mut builder = Client::builder().endpoints(urls).http(remote.http()?);
    if let Some(token) = common.remote.token()? {
        builder = builder.token(token);
    }
    Ok(builder.build()?)
}

async fn session(client: &Client, name: &str, create: SessionCreate) -> anyhow::Result<Session> {
    let create = SessionCreate {
        name: name.into(),
        ..create
    };
    Ok(Session::create(client, &create, SessionOptions::default()).await?)
}

fn spawn(command: &[String]) -> anyhow::Result<Command> {
    let (program, args) = command.split_first().context("no command given after --")?;
    let mut spawned = Command::new(program);
    spawned.args(args).kill_on_drop(true);
    Ok(spawned)
}

/// SIGTERM, then SIGKILL after `grace`; waits for the exit.
async fn stop(child: &mut Child, grace: Duration) {
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        // SAFETY: sending a signal to the child this process started.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

/// `conclave lock NAME -- CMD...`; returns the exit code.
pub fn hold(common: &Common, name: &str, command: &[String], held: &Held) -> anyhow::Result<i32> {
    super::runtime()?.block_on(async {
        let client = client(common)?;
        let create = SessionCreate {
            capacity: Some(0),
            ttl_ms: Some(held.ttl_ms),
            ..SessionCreate::default()
        };
        let session = session(&client, &format!("lock {name}"), create).await?;
        let guard = session.lock(name).await?;
        let mut child = spawn(command)?
            .env("CONCLAVE_FENCING_TOKEN", guard.fencing_token().to_string())
            .env("CONCLAVE_LOCK", name)
            .env("CONCLAVE_SESSION_ID", session.id().to_string())
            .spawn()
            .context("starting the command")?;
        let code = tokio::select! {
            status = child.wait() => status.context("waiting for the command")?.code().unwrap_or(1),
            loss = guard.lost() => {
                eprintln!("lock {name:?} lost ({loss:?}): stopping the command");
                stop(&mut child, Duration::from_millis(held.grace_ms)).await;
                super::exit::REFUSED
            }
        };
        if guard.is_lost().is_none() {
            let _ = guard.release().await;
        }
        let _ = session.close().await;
        Ok(code)
    })
}

/// Runs CMD for one claimed task.
async fn run_task(command: Vec<String>, task: TaskContext) -> Result<Value, TaskFailure> {
    let kind = task.task()["kind"].as_str().unwrap_or_default().to_owned();
    let mut child = spawn(&command)
        .map_err(|e| TaskFailure::permanent(e.to_string()))?
        .env("CONCLAVE_TASK_ID", task.task_id().to_string())
        .env("CONCLAVE_FENCING_TOKEN", task.fencing_token().to_string())
        .env("CONCLAVE_TASK_KIND", kind)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| TaskFailure::permanent(format!("starting the command: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let payload = task.payload().to_string();
        let _ = stdin.write_all(payload.as_bytes()).await;
    }
    let mut stdout = child.stdout.take().expect("piped");
    let mut output = Vec::new();
    let status = tokio::select! {
        read = async {
            stdout.read_to_end(&mut output).await?;
            child.wait().await
        } => read.map_err(|e| TaskFailure::from(format!("running the command: {e}")))?,
        _ = task.cancelled() => {
            stop(&mut child, Duration::from_secs(5)).await;
            return Err(TaskFailure::from("cancelled"));
        }
    };
    let text = String::from_utf8_lossy(&output).trim().to_owned();
    match status.code() {
        Some(0) => Ok(serde_json::from_str(&text).unwrap_or(Value::String(text))),
        Some(PERMANENT_FAILURE) => Err(TaskFailure::permanent(format!(
            "exit {PERMANENT_FAILURE}: {text}"
        ))),
        code => Err(TaskFailure::from(format!("exit {code:?}: {text}"))),
    }
}

/// `conclave worker ... -- CMD...`.
pub fn worker(common: &Common, args: &WorkerArgs) -> anyhow::Result<()> {
    super::runtime()?.block_on(async {
        let client = client(common)?;
        let create = SessionCreate {
            capabilities: Some(args.capability.clone()),
            capacity: Some(args.capacity),
            ttl_ms: Some(args.ttl_ms),
            ..SessionCreate::default()
        };
        let session = session(&client, &args.name, create).await?;
        let options = WorkerOptions {
            max_tasks: args.max_tasks,
            ..WorkerOptions::default()
        };
        let command = args.command.clone();
        let report = session
            .work(options, |task| run_task(command.clone(), task))
            .await?;
        eprintln!(
            "worker: {} completed, {} failed, {} cancelled, {} lost",
            report.completed, report.failed, report.cancelled, report.lost
        );
        let _ = session.close().await;
        Ok(())
    })
}
