//! `conclave watch`: follows `GET /v1/watch` (server-sent events) and prints one
//! line per event as it arrives — `--json`: the event's JSON; otherwise its id,
//! type and fields — until the stream ends (`--timeout-ms`) or the server closes
//! it (`lagged`). Node-local `cluster` frames and keep-alives are not printed.
//!
//! Must not depend on the server's internals.

use anyhow::Context;
use conclave_client::Error;

use super::call::Common;

#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    /// Event types or families, comma-separated (kv, lock.lost, task, ...).
    #[arg(long)]
    pub types: Option<String>,
    /// Only events whose key (or primitive name, or task kind) starts with it.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Only events concerning this session.
    #[arg(long)]
    pub session: Option<u64>,
    /// Start with command N's events (replayed from the node's history).
    #[arg(long)]
    pub from_index: Option<u64>,
    /// Start right after event id `<index>.<seq>`.
    #[arg(long)]
    pub after: Option<String>,
    /// End after this long.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
}

pub fn watch(common: &Common, args: WatchArgs) -> anyhow::Result<()> {
    super::runtime()?.block_on(follow(common, args))
}

async fn follow(common: &Common, args: WatchArgs) -> anyhow::Result<()> {
    let http = common.remote.http()?;
    let client = common.remote.client(&http)?;
    let mut query: Vec<(&str, String)> = Vec::new();
    let mut add = |name, value: Option<String>| {
        if let Some(value) = value {
            query.push((name, value));
        }
    };
    add("types", args.types);
    add("prefix", args.prefix);
    add("session_id", args.session.map(|s| s.to_string()));
    add("from_index", args.from_index.map(|s| s.to_string()));
    add("after", args.after);
    add("timeout_ms", args.timeout_ms.map(|s| s.to_string()));
    // A stream outlives the client's request timeout: no timeout of its own.
    let plain = reqwest::Client::builder()
        .default_headers(common.remote.headers()?)
        .build()
        .context("building the HTTP client")?;
    let mut response = plain
        .get(client.url(&["v1", "watch"])?)
        .query(&query)
        .send()
        .await
        .map_err(Error::from)?;
    let status = response.status().as_u16();
    if status != 200 {
        let body = response.bytes().await.map_err(Error::from)?;
        return Err(Error::from_answer(status, &body).into());
    }
    let mut pending = String::new();
    let mut frame = Frame::default();
    while let Some(chunk) = response.chunk().await.map_err(Error::from)? {
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            if let Some(printed) = frame.line(line.trim_end_matches(['\n', '\r']), common.json) {
                println!("{printed}");
            }
        }
    }
    Ok(())
}

/// One server-sent event being read.
#[derive(Default)]
struct Frame {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

impl Frame {
    /// Takes one line; at a blank line, the event's printed form (if printed).
    fn line(&mut self, line: &str, json: bool) -> Option<String> {
        if !line.is_empty() {
            if let Some((field, value)) = line.split_once(':') {
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => self.id = Some(value.to_owned()),
                    "event" => self.event = Some(value.to_owned()),
                    "data" => self.data.push_str(value),
                    _ => {}
                }
            }
            return None;
        }
        let frame = std::mem::take(self);
        match frame.event.as_deref() {
            None | Some("cluster") if frame.id.is_none() => return None,
            _ => {}
        }
        if json {
            return Some(frame.data);
        }
        let fields = serde_json::from_str::<serde_json::Value>(&frame.data).ok();
        let kind = frame.event.unwrap_or_default();
        let mut text = format!("{} {kind}", frame.id.unwrap_or_default());
        if let Some(serde_json::Value::Object(fields)) = fields {
            for (name, value) in fields {
                if name != "type" && name != "id" {
                    text.push_str(&format!(" {name}={value}"));
                }
            }
        }
        Some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_print_once_complete_and_cluster_frames_and_comments_are_skipped() {
        let mut frame = Frame::default();
        let lines = [
            ": keep-alive",
            "",
            "event: cluster",
            "data: {\"role\":\"leader\"}",
            "",
            "id: 7.0",
            "event: kv.put",
            "data: {\"key\":\"a\",\"version\":7}",
            "",
        ];
        let printed: Vec<String> = lines.iter().filter_map(|l| frame.line(l, false)).collect();
        assert_eq!(printed, ["7.0 kv.put key=\"a\" version=7"]);
    }
}
