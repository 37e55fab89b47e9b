//! `conclave member list|add|remove|promote` and `conclave status`: the membership
//! and Raft status of a running cluster, shown from the leader's `GET /v1/cluster`
//! (only the leader knows how far each member matches its log), and membership
//! changes that show a new member's catch-up on stderr and repeat the idempotent
//! add until it converges.
//!
//! Must not depend on the server's internals: everything comes from the cluster
//! endpoints through `conclave-client` (docs/api.md, Cluster and operations).

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use clap::Subcommand;
use conclave_client::{Client, Error, MemberAdd, Value};

use super::progress::Progress;
use super::Remote;

/// How often a change's progress is read from the leader.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// The pause before a refused add is sent again.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

#[derive(Subcommand, Debug)]
pub enum MemberCommand {
    /// Lists the members: id, client address, role (leader, voter, learner), the
    /// Raft log index replicated to each and how many entries it is behind (the
    /// leader's view: asked of the leader, found through --endpoint).
    List {
        #[command(flatten)]
        remote: Remote,
        /// Prints the leader's `GET /v1/cluster` body instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Adds node ID, whose client API is at ADDR, as a voter (promoted once it has
    /// caught up) or, with --learner, as a learner. Start its process first (a config
    /// with `initial_members = []`). Its catch-up is shown on stderr, and the add
    /// (idempotent) is repeated until it converges or --timeout passes.
    Add {
        /// The new member's node id (its config's `node_id`).
        id: u64,
        /// Its client API, `host:port` (its `advertise_addr`).
        #[arg(value_name = "ADDR")]
        addr: String,
        /// Its peer listener; by default ADDR's host with the port + 1000.
        #[arg(long, value_name = "HOST:PORT")]
        raft_addr: Option<String>,
        /// Adds it as a learner (not promoted).
        #[arg(long)]
        learner: bool,
        /// How long to keep trying: 90s, 5m.
        #[arg(long, default_value = "120s")]
        timeout: String,
        #[command(flatten)]
        remote: Remote,
        /// Prints the cluster view after the change as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Removes node ID (a voter or a learner); removing the leader hands leadership
    /// over first. Stop its process afterwards.
    Remove {
        /// The member's node id.
        id: u64,
        #[command(flatten)]
        remote: Remote,
        /// Prints the cluster view after the change as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Promotes learner ID to voter once it has caught up (shown on stderr; repeated
    /// until it converges or --timeout passes). A voter is left as it is.
    Promote {
        /// The learner's node id.
        id: u64,
        /// How long to keep trying: 90s, 5m.
        #[arg(long, default_value = "120s")]
        timeout: String,
        #[command(flatten)]
        remote: Remote,
        /// Prints the cluster view after the change as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `conclave member ...`.
pub fn member(command: MemberCommand) -> anyhow::Result<()> {
    match command {
        MemberCommand::List { remote, json } => {
            let view = run(&remote, |client| async move { leader_view(&client).await })?;
            print_view(&view, json, table(&view));
        }
        MemberCommand::Add {
            id,
            addr,
            raft_addr,
            learner,
            timeout,
            remote,
            json,
        } => {
            let timeout = parse_timeout(&timeout)?;
            let add = MemberAdd {
                id,
                addr,
                raft_addr,
                voter: Some(!learner),
            };
            let view = run(&remote, |client| async move {
                converge(&client, id, timeout, || client.member_add(&add)).await
            })?;
            print_view(&view, json, changed(&view, id));
        }
        MemberCommand::Remove { id, remote, json } => {
            let view = run(&remote, |client| async move {
                Ok(client.member_remove(id).await?)
            })?;
            print_view(&view, json, format!("node {id} removed\n{}", table(&view)));
        }
        MemberCommand::Promote {
            id,
            timeout,
            remote,
            json,
        } => {
            let timeout = parse_timeout(&timeout)?;
            let view = run(&remote, |client| async move {
                converge(&client, id, timeout, || client.member_promote(id)).await
            })?;
            print_view(&view, json, changed(&view, id));
        }
    }
    Ok(())
}

/// `conclave status`: the leader, term, indexes and members (the leader's view).
pub fn status(remote: Remote, json: bool) -> anyhow::Result<()> {
    let view = run(&remote, |client| async move { leader_view(&client).await })?;
    print_view(&view, json, status_text(&view));
    Ok(())
}

/// Runs `command` with a client of `--endpoint` on a fresh runtime.
fn run<F, Fut>(remote: &Remote, command: F) -> anyhow::Result<Value>
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = anyhow::Result<Value>>,
{
    let client = remote.client(&remote.http()?)?;
    super::runtime()?.block_on(command(client))
}

fn parse_timeout(text: &str) -> anyhow::Result<Duration> {
    let seconds = conclave::auth::token::parse_ttl(text).map_err(anyhow::Error::msg)?;
    Ok(Duration::from_secs(seconds))
}

fn print_view(view: &Value, json: bool, text: String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(view).unwrap_or_else(|_| view.to_string())
        );
    } else {
        print!("{text}");
    }
}

/// The leader's cluster view, found through `client`'s node; that node's own view
/// (with a note on stderr) when it knows no leader or the leader does not answer.
async fn leader_view(client: &Client) -> anyhow::Result<Value> {
    let (view, note) = leader_view_noted(client).await?;
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    Ok(view)
}

/// [`leader_view`] with its note returned, not printed.
async fn leader_view_noted(client: &Client) -> Result<(Value, Option<String>), Error> {
    let view = client.cluster_info().await?;
    if view["state"] == "leader" {
        return Ok((view, None));
    }
    let node = &view["node_id"];
    let Some((leader, addr)) = leader_addr(&view) else {
        let note = format!("node {node} knows no leader: its own view (no matched indexes)");
        return Ok((view, Some(note)));
    };
    // The leader is asked over the scheme the first node was (HTTPS with --ca).
    let url = format!("{}://{addr}", client.base_url().scheme());
    let answer = match Client::with_http(&url, client.http().clone()) {
        Ok(leader) => leader.cluster_info().await,
        Err(error) => Err(error),
    };
    match answer {
        Ok(leader_view) if leader_view["state"] == "leader" => Ok((leader_view, None)),
        Ok(_) => {
            let note = format!("node {leader} at {addr} no longer leads: node {node}'s view");
            Ok((view, Some(note)))
        }
        Err(Error::Transport(error)) => {
            let note =
                format!("leader {leader} at {addr} did not answer ({error}): node {node}'s view");
            Ok((view, Some(note)))
        }
        Err(error) => Err(error),
    }
}

/// The leader's id and client address in `view`.
fn leader_addr(view: &Value) -> Option<(u64, String)> {
    let leader = view["leader_id"].as_u64()?;
    let member = member_of(view, leader)?;
    Some((leader, member["addr"].as_str()?.to_owned()))
}

fn member_of(view: &Value, id: u64) -> Option<&Value> {
    view["members"]
        .as_array()?
        .iter()
        .find(|member| member["id"].as_u64() == Some(id))
}

/// Sends `attempt` (an idempotent add or promote of node `id`) until it succeeds
/// or `timeout` passes, showing the node's catch-up on stderr meanwhile. A learner
/// that did not catch up within the leader's wait, a membership change in
/// progress, and no leader are retried; any other refusal is returned.
async fn converge<F, Fut>(
    client: &Client,
    id: u64,
    timeout: Duration,
    attempt: F,
) -> anyhow::Result<Value>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Value, Error>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let bar = Progress::entries(id);
    let progress = show_progress(client, id, &bar);
    tokio::pin!(progress);
    loop {
        let answer = tokio::select! {
            answer = tokio::time::timeout_at(deadline, attempt()) => answer,
            never = &mut progress => match never {},
        };
        let error = match answer {
            Ok(Ok(view)) => {
                bar.finish(&format!("node {id}: converged"));
                return Ok(view);
            }
            Ok(Err(error)) => error,
            Err(_) => anyhow::bail!("{}", unconverged(id, timeout)),
        };
        match error.code() {
            Some("learner_not_caught_up") => {
                let api = error.api().expect("an API refusal");
                let line = behind_line(id, api.detail("matched_index"), api.detail("target_index"));
                bar.note(&format!(
                    "{line} (not caught up within the leader's wait; adding again)"
                ));
            }
            Some("membership_change_in_progress" | "no_leader") => {
                bar.note(&format!("node {id}: {error}; trying again"));
            }
            _ => return Err(error.into()),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(anyhow::Error::new(error).context(unconverged(id, timeout)));
        }
        let pause =
            tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + RETRY_PAUSE));
        tokio::select! {
            () = pause => {}
            never = &mut progress => match never {},
        }
    }
}

fn unconverged(id: u64, timeout: Duration) -> String {
    format!(
        "node {id} did not converge within {timeout:?}: it may be left a learner (see `conclave \
         member list`; fix the node and run this again, or `conclave member remove {id}`)"
    )
}

/// Shows node `id`'s catch-up (the leader's view) on `bar` each time it is read.
async fn show_progress(client: &Client, id: u64, bar: &Progress) -> Infallible {
    let mut every = tokio::time::interval(PROGRESS_EVERY);
    loop {
        every.tick().await;
        let Ok((view, _)) = leader_view_noted(client).await else {
            continue;
        };
        if let Some(line) = progress_of(&view, id) {
            let member = member_of(&view, id).expect("a member progress_of found");
            bar.caught_up(
                member["matched_index"].as_u64().unwrap_or(0),
                view["last_log_index"].as_u64().unwrap_or(0),
                member["role"].as_str().unwrap_or("?"),
                line,
            );
        }
    }
}

/// `node 4: 1200/5000 entries, learner` from the leader's view.
fn progress_of(view: &Value, id: u64) -> Option<String> {
    if view["state"] != "leader" {
        return None;
    }
    let member = member_of(view, id)?;
    let line = behind_line(id, &member["matched_index"], &view["last_log_index"]);
    Some(format!(
        "{line}, {}",
        member["role"].as_str().unwrap_or("?")
    ))
}

/// `node 4: 1200/5000 entries` (no matched index known is 0).
fn behind_line(id: u64, matched: &Value, target: &Value) -> String {
    let target = target
        .as_u64()
        .map_or_else(|| "?".into(), |t| t.to_string());
    format!(
        "node {id}: {}/{target} entries",
        matched.as_u64().unwrap_or(0)
    )
}

/// What a change left node `id` as, and the members.
fn changed(view: &Value, id: u64) -> String {
    let role = member_of(view, id).and_then(|m| m["role"].as_str());
    format!("node {id} is a {}\n{}", role.unwrap_or("?"), table(view))
}

/// The members as a table: id, address, role (`leader` for the leader), matched
/// index and lag (`-` where the view does not know them).
pub fn table(view: &Value) -> String {
    let leader = view["leader_id"].as_u64();
    let number = |value: &Value| value.as_u64().map_or_else(|| "-".into(), |n| n.to_string());
    let mut rows = vec![["ID", "ADDR", "ROLE", "MATCHED", "LAG"].map(String::from)];
    for member in view["members"].as_array().into_iter().flatten() {
        let id = member["id"].as_u64();
        let role = match member["role"].as_str() {
            Some("voter") if id.is_some() && id == leader => "leader",
            Some(role) => role,
            None => "?",
        };
        rows.push([
            number(&member["id"]),
            member["addr"].as_str().unwrap_or("?").to_owned(),
            role.to_owned(),
            number(&member["matched_index"]),
            number(&member["lag"]),
        ]);
    }
    let mut widths = [0; 5];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut text = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

/// Leader, term, indexes, whose view it is, and the members table.
pub fn status_text(view: &Value) -> String {
    let number = |field: &str| {
        view[field]
            .as_u64()
            .map_or_else(|| "-".into(), |n| n.to_string())
    };
    let leader = match leader_addr(view) {
        Some((id, addr)) => format!("leader {id} at {addr}"),
        None => "no leader known".into(),
    };
    format!(
        "{leader}, term {}\ncommit index {}, applied index {}, last log index {} (node {}'s view, {})\n{}",
        number("term"),
        number("commit_index"),
        number("last_applied_index"),
        number("last_log_index"),
        number("node_id"),
        view["state"].as_str().unwrap_or("?"),
        table(view)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view() -> Value {
        json!({
            "node_id": 1, "state": "leader", "leader_id": 1, "term": 3,
            "commit_index": 50, "last_applied_index": 50, "last_log_index": 52,
            "members": [
                {"id": 1, "addr": "127.0.0.1:7001", "role": "voter", "matched_index": 52, "lag": 0},
                {"id": 2, "addr": "127.0.0.1:7002", "role": "voter", "matched_index": 50, "lag": 2},
                {"id": 4, "addr": "127.0.0.1:7004", "role": "learner", "matched_index": null, "lag": null}
            ]
        })
    }

    #[test]
    fn the_table_names_the_leader_and_shows_unknowns_as_dashes() {
        let text = table(&view());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ID  ADDR            ROLE     MATCHED  LAG");
        assert_eq!(lines[1], "1   127.0.0.1:7001  leader   52       0");
        assert_eq!(lines[2], "2   127.0.0.1:7002  voter    50       2");
        assert_eq!(lines[3], "4   127.0.0.1:7004  learner  -        -");
    }

    #[test]
    fn status_shows_leader_term_and_indexes() {
        let text = status_text(&view());
        assert!(
            text.starts_with("leader 1 at 127.0.0.1:7001, term 3\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "commit index 50, applied index 50, last log index 52 (node 1's view, leader)"
            ),
            "{text}"
        );
    }

    #[test]
    fn progress_is_matched_over_the_leaders_last_index() {
        assert_eq!(
            progress_of(&view(), 2).as_deref(),
            Some("node 2: 50/52 entries, voter")
        );
        assert_eq!(
            progress_of(&view(), 4).as_deref(),
            Some("node 4: 0/52 entries, learner")
        );
        assert_eq!(progress_of(&view(), 9), None);
        let mut follower = view();
        follower["state"] = json!("follower");
        assert_eq!(progress_of(&follower, 2), None, "only the leader knows");
    }
}
