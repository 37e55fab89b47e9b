//! Decoding fuzz of request bodies (issue #11): every body type a handler parses,
//! fed random bytes and mutations of valid bodies, is either accepted or refused
//! with a 4xx (`malformed_json`, `invalid_request`, ...), never a panic or a 5xx; a
//! body that parses is turned into its command (the same checks a handler makes)
//! without panicking either. Schemathesis (`api-fuzz/`) does the same through HTTP.

use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::error::ApiError;
use super::extract::parse_json;
use super::input::{Key, ResourceName, TaskIdPath};
use super::propose::CommandBody;
use super::{cluster, debug_clock, kv, locks, primitives, resource, sessions, tasks};
use crate::limits::Limits;

fn refused_as_client_error(result: Result<(), ApiError>) {
    if let Err(error) = result {
        assert!(
            error.status().is_client_error(),
            "{error:?} is {}",
            error.status()
        );
    }
}

fn parses<T: DeserializeOwned>(bytes: &[u8]) -> Result<(), ApiError> {
    parse_json::<T>(bytes).map(|_| ())
}

fn commands<B: CommandBody>(bytes: &[u8], path: B::Path) -> Result<(), ApiError> {
    let body = parse_json::<B>(bytes)?;
    body.command(path, &Limits::default()).map(|_| ())
}

/// Feeds `bytes` to every body type.
fn parse_everything(bytes: &[u8]) {
    let key = || Key("k".into());
    let name = || ResourceName("n".into());
    refused_as_client_error(commands::<kv::PutBody>(bytes, key()));
    refused_as_client_error(commands::<kv::DeleteBody>(bytes, key()));
    refused_as_client_error(commands::<tasks::HeartbeatBody>(bytes, TaskIdPath(1)));
    refused_as_client_error(commands::<tasks::CompleteBody>(bytes, TaskIdPath(1)));
    refused_as_client_error(commands::<tasks::FailBody>(bytes, TaskIdPath(1)));
    refused_as_client_error(commands::<tasks::CancelBody>(bytes, TaskIdPath(1)));
    refused_as_client_error(commands::<tasks::RetryBody>(bytes, TaskIdPath(1)));
    refused_as_client_error(commands::<resource::ReleaseBody<locks::Lock>>(
        bytes,
        name(),
    ));
    refused_as_client_error(commands::<resource::ReleaseBody<primitives::Semaphore>>(
        bytes,
        name(),
    ));
    refused_as_client_error(commands::<primitives::ResignBody>(bytes, name()));
    refused_as_client_error(parses::<sessions::CreateBody>(bytes));
    refused_as_client_error(parses::<tasks::SubmitBody>(bytes));
    refused_as_client_error(parses::<tasks::ClaimBody>(bytes));
    refused_as_client_error(parses::<locks::AcquireBody>(bytes));
    refused_as_client_error(parses::<primitives::AcquireBody>(bytes));
    refused_as_client_error(parses::<primitives::BarrierBody>(bytes));
    refused_as_client_error(parses::<primitives::CampaignBody>(bytes));
    refused_as_client_error(parses::<cluster::AddMember>(bytes));
    refused_as_client_error(parses::<debug_clock::SetOffset>(bytes));
}

/// Valid bodies of every type (some accepted by several).
fn seeds() -> Vec<Vec<u8>> {
    let guard = json!({"lock": "L", "fencing_token": 3});
    [
        json!({"value": {"a": [1, "x", null]}, "if_version": 2, "guard": guard, "request_id": "r"}),
        json!({"if_version": 0, "request_id": "r"}),
        json!({"fencing_token": 4, "progress": {"p": 0.5}, "guard": guard}),
        json!({"fencing_token": 4, "result": [1, 2]}),
        json!({"fencing_token": 4, "error": "boom", "retryable": false}),
        json!({"session_id": 1, "fencing_token": 9, "request_id": "r"}),
        json!({"session_id": 1, "term": 3}),
        json!({"name": "w", "capabilities": ["gpu"], "capacity": 2, "ttl_ms": 1000, "metadata": {"m": 1}}),
        json!({"kind": "k", "payload": {}, "required_capabilities": ["gpu"], "priority": -1,
               "max_attempts": 2, "lease_ms": 500, "not_before_ms": 10, "depends_on": [1, 2],
               "idempotency_key": "i"}),
        json!({"session_id": 1, "wait_ms": 100}),
        json!({"session_id": 1, "mode": "shared", "wait_ms": 0, "lock_delay_ms": 10, "previous_token": 2}),
        json!({"session_id": 1, "permits": 2, "limit": 3}),
        json!({"session_id": 1, "parties": 2}),
        json!({"session_id": 1, "value": "v", "priority": 1}),
        json!({"id": 4, "addr": "127.0.0.1:7004", "raft_addr": "127.0.0.1:8004", "voter": false}),
        json!({"offset_ms": -5}),
    ]
    .iter()
    .map(|value| serde_json::to_vec(value).unwrap())
    .collect()
}

#[test]
fn every_seed_is_accepted_by_some_body_type() {
    for seed in seeds() {
        parse_everything(&seed);
    }
    // And the classic hostile shapes are refused as client errors.
    for hostile in [
        &b""[..],
        b"{",
        b"[]",
        b"null",
        b"\"\\ud800\"",
        b"{\"value\": \"\\ud800\"}",
        b"{\"session_id\": -1}",
        b"{\"session_id\": 18446744073709551616}",
        b"{\"fencing_token\": 1e400}",
        &[0xff, 0xfe, 0x00][..],
    ] {
        parse_everything(hostile);
    }
    let deep = format!("{{\"value\": {}{}}}", "[".repeat(200), "]".repeat(200));
    parse_everything(deep.as_bytes());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic_a_body_parser(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        parse_everything(&bytes);
    }

    #[test]
    fn mutated_bodies_never_panic_a_body_parser(
        which in any::<usize>(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
    ) {
        let seeds = seeds();
        let mut bytes = seeds[which % seeds.len()].clone();
        for (at, byte) in edits {
            let len = bytes.len();
            bytes[at % len] = byte;
        }
        parse_everything(&bytes);
    }
}
