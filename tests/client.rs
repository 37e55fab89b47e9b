//! The typed client (`conclave-client`) against a real node: what its path
//! encoding and error reading mean to the server.

mod common;

use common::{refusal, Cluster, Options};
use conclave_client::{Consistency, KvDelete, KvList, KvPut};
use serde_json::json;

/// A key with `/` (sent as `%2F`) and one with spaces and `%` are the keys the
/// server stores and lists: the server decodes the client's encoding back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_with_slashes_and_reserved_characters_round_trip_through_the_client() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(1, Options::default()).await;
    let api = cluster.api(1);
    for key in ["jobs/42/state", "a b%20c?d#e", "jobs/é"] {
        let written = api.kv_put(key, &json!(key)).await.expect("written");
        let entry = api.kv_get(key, Consistency::Linearizable).await.unwrap();
        assert_eq!(
            (entry["key"].clone(), entry["value"].clone()),
            (json!(key), json!(key))
        );
        assert_eq!(entry["version"], written.version);
    }
    // The raw path agrees: `/v1/kv/jobs/42/state` is the same key.
    let (status, raw) = common::get(&cluster.http, &cluster.url(1), "jobs/42/state").await;
    assert_eq!(
        (status, raw["value"].clone()),
        (200, json!("jobs/42/state"))
    );
    let list = KvList {
        prefix: Some("jobs/".into()),
        ..KvList::default()
    };
    let page = api.kv_list(&list).await.unwrap();
    let keys: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["jobs/42/state", "jobs/é"]);
    // A refusal is read as the API's error model.
    let create_only = KvPut {
        if_version: Some(0),
        ..KvPut::default()
    };
    let error = api
        .kv_put_with("jobs/42/state", &json!(1), &create_only)
        .await
        .unwrap_err();
    assert_eq!(
        (error.status(), error.code()),
        (Some(409), Some("cas_mismatch"))
    );
    assert!(
        error
            .api()
            .unwrap()
            .detail("current_version")
            .as_u64()
            .unwrap()
            > 0
    );
    let deleted = api
        .kv_delete("jobs/42/state", &KvDelete::default())
        .await
        .unwrap();
    assert!(deleted.deleted);
    assert_eq!(
        refusal(api.kv_get("jobs/42/state", Consistency::Stale).await),
        (404, "key_not_found".to_owned())
    );
}
