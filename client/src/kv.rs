//! Key/value: `PUT|GET|DELETE /v1/kv/{key}` and `GET /v1/kv` (list), with their
//! request options and small response types. A key is one percent-encoded path
//! segment, so it may contain `/`.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{query_pairs, Client, Consistency, Error};

/// Options of `PUT /v1/kv/{key}` besides the value. `Default` is a plain write.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KvPut {
    /// Compare-and-set: `0` = the key must not exist; `n` = its version must be `n`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub if_version: Option<u64>,
    /// Make the key ephemeral, bound to this live session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<u64>,
    /// Fencing guard `{"lock"|"semaphore"|"election": name, "fencing_token": n}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard: Option<Value>,
    /// Idempotency key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Options of `DELETE /v1/kv/{key}`. `Default` is a plain delete.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KvDelete {
    /// Delete only at this version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub if_version: Option<u64>,
    /// Fencing guard, as for `PUT`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard: Option<Value>,
    /// Idempotency key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Query of `GET /v1/kv`. `Default` lists from the first key, a full page.
#[derive(Debug, Clone, Default)]
pub struct KvList {
    pub prefix: Option<String>,
    /// Start strictly after this key (a page's `next_after`).
    pub after: Option<String>,
    pub limit: Option<u32>,
    pub consistency: Consistency,
}

/// Answer of a `PUT`: the key's new version, equal to the command index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Written {
    pub version: u64,
    pub index: u64,
}

/// Answer of a `DELETE`: whether a key was there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Deleted {
    pub deleted: bool,
    pub index: u64,
}

#[derive(Serialize)]
struct PutBody<'a> {
    value: &'a Value,
    #[serde(flatten)]
    options: &'a KvPut,
}

impl Client {
    /// `PUT /v1/kv/{key}` `{"value": value}`.
    pub async fn kv_put(&self, key: &str, value: &Value) -> Result<Written, Error> {
        self.kv_put_with(key, value, &KvPut::default()).await
    }

    /// `PUT /v1/kv/{key}` with compare-and-set, session, guard or request id.
    pub async fn kv_put_with(
        &self,
        key: &str,
        value: &Value,
        options: &KvPut,
    ) -> Result<Written, Error> {
        let body = PutBody { value, options };
        self.write_idempotent(Method::PUT, &["v1", "kv", key], &body)
            .await
    }

    /// `GET /v1/kv/{key}`: `{key, value, version, create_index, session_id?}`.
    /// An absent key is `Error::Api` with code `key_not_found`.
    pub async fn kv_get(&self, key: &str, consistency: Consistency) -> Result<Value, Error> {
        self.read(&["v1", "kv", key], consistency).await
    }

    /// `DELETE /v1/kv/{key}`.
    pub async fn kv_delete(&self, key: &str, options: &KvDelete) -> Result<Deleted, Error> {
        self.write_idempotent(Method::DELETE, &["v1", "kv", key], options)
            .await
    }

    /// `GET /v1/kv`: `{"items": [entry...], "next_after": key|null}`.
    pub async fn kv_list(&self, list: &KvList) -> Result<Value, Error> {
        let query = query_pairs(&[
            ("prefix", list.prefix.clone()),
            ("after", list.after.clone()),
            ("limit", list.limit.map(|limit| limit.to_string())),
        ]);
        self.read_query(&["v1", "kv"], &query, list.consistency)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_put_body_sends_the_value_and_only_the_set_options() {
        let value = json!({"a": 1});
        let plain = serde_json::to_value(PutBody {
            value: &value,
            options: &KvPut::default(),
        })
        .unwrap();
        assert_eq!(plain, json!({"value": {"a": 1}}));
        let options = KvPut {
            if_version: Some(0),
            guard: Some(json!({"lock": "l", "fencing_token": 7})),
            request_id: Some("r1".into()),
            ..KvPut::default()
        };
        let body = serde_json::to_value(PutBody {
            value: &Value::Null,
            options: &options,
        })
        .unwrap();
        assert_eq!(
            body,
            json!({"value": null, "if_version": 0, "guard": {"lock": "l", "fencing_token": 7}, "request_id": "r1"})
        );
    }

    #[test]
    fn a_plain_delete_sends_an_empty_object() {
        assert_eq!(
            serde_json::to_value(KvDelete::default()).unwrap(),
            json!({})
        );
    }
}
