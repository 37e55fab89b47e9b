//! Two-phase commit (`/v1/2pc`): create, vote, ack, get (a long poll until
//! decided) and the list of what awaits a participant (a long poll until something
//! does), with their request and answer types. Built on `lib.rs`'s read/write
//! plumbing and the [`Party`] of `proposals.rs` only; must not depend on the other
//! endpoint modules or the agent helpers.

use std::time::Duration;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::proposals::{flag, wait_pair, Party};
use crate::{query_pairs, Client, Consistency, Error};

/// A participant's vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TwoPhaseVote {
    Commit,
    Abort,
}

/// Body of `POST /v1/2pc`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TwoPhaseCreate {
    pub participants: Vec<Party>,
    /// A vote still missing at `now + timeout_ms` aborts.
    pub timeout_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// The participants are live session ids (server default `false`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participants_are_sessions: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Answer of a create (`preparing`; the id is the creating command index) or of a
/// vote (the state right after it).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TwoPhaseWritten {
    pub id: u64,
    pub state: String,
    pub index: u64,
}

/// Answer of an ack; `removed` when it was the last one and the record is gone.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TwoPhaseAcked {
    pub id: u64,
    pub state: String,
    pub removed: bool,
    pub index: u64,
}

/// Query of `GET /v1/2pc`. `awaiting` and `wait` need `participant`.
#[derive(Debug, Clone, Default)]
pub struct TwoPhaseList {
    /// A name, or a session id in decimal.
    pub participant: Option<String>,
    /// `preparing`, `committed` or `aborted`.
    pub state: Option<String>,
    /// Only those awaiting the participant's vote or its ack.
    pub awaiting: bool,
    /// When nothing matches, wait up to this long until something does.
    pub wait: Option<Duration>,
    pub after: Option<u64>,
    pub limit: Option<u32>,
    pub consistency: Consistency,
}

#[derive(Serialize)]
struct VoteBody<'a> {
    participant: Party,
    vote: TwoPhaseVote,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

#[derive(Serialize)]
struct AckBody<'a> {
    participant: Party,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

impl Client {
    /// `POST /v1/2pc`.
    pub async fn twophase_create(&self, create: &TwoPhaseCreate) -> Result<TwoPhaseWritten, Error> {
        self.write_idempotent(Method::POST, &["v1", "2pc"], create)
            .await
    }

    /// `POST /v1/2pc/{id}/vote`. The same vote again answers `200` with the current
    /// state (the record stays until this participant acks), so the call is retried
    /// like a read; a different vote is `already_voted`, a first vote after the
    /// timeout decided it `transaction_decided`.
    pub async fn twophase_vote(
        &self,
        id: u64,
        participant: impl Into<Party>,
        vote: TwoPhaseVote,
        request_id: Option<&str>,
    ) -> Result<TwoPhaseWritten, Error> {
        let id = id.to_string();
        let body = VoteBody {
            participant: participant.into(),
            vote,
            request_id,
        };
        self.write_repeatable(Method::POST, &["v1", "2pc", &id, "vote"], &body)
            .await
    }

    /// `POST /v1/2pc/{id}/ack` (after the decision; `not_decided` before). Not
    /// idempotent by nature — a repeat of the last ack finds the record gone (`404
    /// transaction_not_found`) — so it is repeated only with a `request_id`.
    pub async fn twophase_ack(
        &self,
        id: u64,
        participant: impl Into<Party>,
        request_id: Option<&str>,
    ) -> Result<TwoPhaseAcked, Error> {
        let id = id.to_string();
        let body = AckBody {
            participant: participant.into(),
            request_id,
        };
        self.write_idempotent(Method::POST, &["v1", "2pc", &id, "ack"], &body)
            .await
    }

    /// `GET /v1/2pc/{id}`: the transaction's view. With `wait`, the server answers
    /// once it is decided or the wait ends (then still `preparing`); the call's
    /// deadline grows by the wait.
    pub async fn twophase_get(
        &self,
        id: u64,
        wait: Option<Duration>,
        consistency: Consistency,
    ) -> Result<Value, Error> {
        let id = id.to_string();
        self.read_waiting(&["v1", "2pc", &id], wait, consistency)
            .await
    }

    /// `GET /v1/2pc`: `{"items": [view...], "next_after": id|null}`.
    pub async fn twophase_list(&self, list: &TwoPhaseList) -> Result<Value, Error> {
        let query = query_pairs(&[
            ("participant", list.participant.clone()),
            ("state", list.state.clone()),
            ("awaiting", flag(list.awaiting)),
            wait_pair(list.wait),
            ("after", list.after.map(|after| after.to_string())),
            ("limit", list.limit.map(|limit| limit.to_string())),
        ]);
        self.read_query(&["v1", "2pc"], &query, list.consistency)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_name_parties_and_votes_as_the_api_does() {
        let create = TwoPhaseCreate {
            participants: vec!["db".into(), 9.into()],
            timeout_ms: 500,
            ..TwoPhaseCreate::default()
        };
        assert_eq!(
            serde_json::to_value(&create).unwrap(),
            json!({"participants": ["db", 9], "timeout_ms": 500})
        );
        let vote = VoteBody {
            participant: "db".into(),
            vote: TwoPhaseVote::Abort,
            request_id: Some("r"),
        };
        assert_eq!(
            serde_json::to_value(&vote).unwrap(),
            json!({"participant": "db", "vote": "abort", "request_id": "r"})
        );
    }
}
