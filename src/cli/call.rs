//! One API call as the resource commands make it: a method, a path of segments,
//! query pairs and an optional JSON body, sent through `conclave-client` to the
//! node `--endpoint` names (writes are forwarded to the leader by any node) and
//! printed (`render`). Also what the commands share to build bodies: `--body` (extra
//! fields of the API's body, JSON, merged over the typed flags) and value parsing.
//!
//! Must not depend on the server's internals.

use anyhow::Context;
use conclave_client::{Client, Error, Value};
use reqwest::Method;
use serde_json::{json, Map};

use super::Remote;

/// Flags every resource command takes.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    #[command(flatten)]
    pub remote: Remote,
    /// Prints the answer's JSON body as it came instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// An API call to make.
#[derive(Clone)]
pub struct Call {
    pub method: Method,
    pub path: Vec<String>,
    pub query: Vec<(&'static str, String)>,
    pub body: Option<Value>,
}

impl Call {
    pub fn get(path: &[&str]) -> Call {
        Call {
            method: Method::GET,
            path: path.iter().map(|s| s.to_string()).collect(),
            query: Vec::new(),
            body: None,
        }
    }

    pub fn send(method: Method, path: &[&str], body: Value) -> Call {
        Call {
            body: Some(body),
            method,
            ..Call::get(path)
        }
    }

    /// `method` on an owned path (`named`'s), with an optional body.
    pub fn at(method: Method, path: Vec<String>, body: Option<Value>) -> Call {
        Call {
            method,
            path,
            query: Vec::new(),
            body,
        }
    }

    /// Adds `name=value` to the query when `value` is set.
    pub fn query(mut self, name: &'static str, value: Option<impl ToString>) -> Call {
        if let Some(value) = value {
            self.query.push((name, value.to_string()));
        }
        self
    }

    /// `?consistency=stale` when `stale`.
    pub fn stale(self, stale: bool) -> Call {
        self.query("consistency", stale.then_some("stale"))
    }
}

/// Sends `call` and prints its answer (`{}` for an empty `204`).
pub fn run(common: &Common, call: Call) -> anyhow::Result<()> {
    let runtime = super::runtime()?;
    let answer = runtime.block_on(answer(common, call))?;
    println!("{}", super::render::render(&answer, common.json));
    Ok(())
}

/// Sends `call` and returns its JSON answer (`{}` for a `204`): to each endpoint
/// in turn while one cannot be connected to (then nothing was sent, so trying the
/// next is safe for a write too).
pub async fn answer(common: &Common, call: Call) -> anyhow::Result<Value> {
    let http = common.remote.http()?;
    let mut last = None;
    for endpoint in common.remote.endpoints() {
        let client = common.remote.client_of(endpoint, &http)?;
        match send(&client, call.clone()).await {
            Err(error) if super::exit::code_of(&error) == super::exit::UNAVAILABLE => {
                let refused = error
                    .chain()
                    .find_map(|e| e.downcast_ref::<Error>())
                    .is_some_and(|e| matches!(e, Error::Transport(t) if t.is_connect()));
                if !refused {
                    return Err(error);
                }
                last = Some(error);
            }
            other => return other,
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no --endpoint given")))
}

/// Sends `call` with `client`.
pub async fn send(client: &Client, call: Call) -> anyhow::Result<Value> {
    let segments: Vec<&str> = call.path.iter().map(String::as_str).collect();
    let what = || format!("{} /{}", call.method, call.path.join("/"));
    let mut request = client
        .http()
        .request(call.method.clone(), client.url(&segments)?);
    if !call.query.is_empty() {
        request = request.query(&call.query);
    }
    if let Some(body) = &call.body {
        request = request.json(body);
    }
    let response = request
        .send()
        .await
        .map_err(Error::from)
        .with_context(what)?;
    let status = response.status().as_u16();
    let bytes = response
        .bytes()
        .await
        .map_err(Error::from)
        .with_context(what)?;
    if !(200..300).contains(&status) {
        return Err(Error::from_answer(status, &bytes)).with_context(what);
    }
    if bytes.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(&bytes)
        .map_err(|_| Error::Unexpected {
            status,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
        .with_context(what)
}

/// The path `/v1/<room>/<name>[/<action>]` (`action` empty: none).
pub fn named(room: &str, name: &str, action: &str) -> Vec<String> {
    let mut path = vec!["v1".to_owned(), room.to_owned(), name.to_owned()];
    if !action.is_empty() {
        path.push(action.to_owned());
    }
    path
}

/// Parses a command-line JSON value; text that is not JSON is taken as a string
/// (`conclave kv put k hello` stores `"hello"`).
pub fn json_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// A body of the typed flags' `fields` (unset ones left out) with `--body`'s
/// object merged over them.
pub fn body(fields: Vec<(&str, Option<Value>)>, extra: Option<&str>) -> anyhow::Result<Value> {
    let mut object: Map<String, Value> = fields
        .into_iter()
        .filter_map(|(name, value)| Some((name.to_owned(), value?)))
        .collect();
    if let Some(extra) = extra {
        let extra: Value = serde_json::from_str(extra).context("--body is not JSON")?;
        let Value::Object(extra) = extra else {
            anyhow::bail!("--body must be a JSON object");
        };
        object.extend(extra);
    }
    Ok(Value::Object(object))
}

/// `Some(json)` of a value that is set.
pub fn some<T: serde::Serialize>(value: Option<T>) -> Option<Value> {
    value.map(|v| json!(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_leave_unset_flags_out_and_take_extra_fields() {
        let made = body(
            vec![("a", Some(json!(1))), ("b", None)],
            Some(r#"{"c": true, "a": 2}"#),
        )
        .unwrap();
        assert_eq!(made, json!({"a": 2, "c": true}));
        assert!(body(vec![], Some("[1]")).is_err());
        assert_eq!(json_value("hello"), json!("hello"));
        assert_eq!(json_value("{\"x\":1}"), json!({"x": 1}));
    }
}
