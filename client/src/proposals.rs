//! Proposals (`/v1/proposals`): create, vote, get (a long poll until decided) and
//! list, with their request and answer types; and [`Party`], the voter or
//! participant a request names, which `twophase.rs` shares. Built on `lib.rs`'s
//! read/write plumbing only; must not depend on the other endpoint modules or the
//! agent helpers.

use std::time::Duration;

use reqwest::Method;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::{query_pairs, Client, Consistency, Error};

/// A voter or participant: a name, or a session id (when the proposal's voters or
/// the transaction's participants are sessions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Party {
    Name(String),
    Session(u64),
}

impl From<&str> for Party {
    fn from(name: &str) -> Party {
        Party::Name(name.to_owned())
    }
}

impl From<String> for Party {
    fn from(name: String) -> Party {
        Party::Name(name)
    }
}

impl From<u64> for Party {
    fn from(session_id: u64) -> Party {
        Party::Session(session_id)
    }
}

/// How a proposal is decided (docs/api.md, Proposals). `Default` is `Majority`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Rule {
    /// yes > (voters − abstentions) / 2.
    #[default]
    Majority,
    /// Every voter that did not abstain voted yes, and at least one did.
    Unanimous,
    /// yes ≥ n (1 … the number of voters).
    Threshold(u32),
}

impl Serialize for Rule {
    /// `"majority"`, `"unanimous"` or `{"threshold": n}`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Threshold {
            threshold: u32,
        }
        match self {
            Rule::Majority => serializer.serialize_str("majority"),
            Rule::Unanimous => serializer.serialize_str("unanimous"),
            Rule::Threshold(threshold) => Threshold {
                threshold: *threshold,
            }
            .serialize(serializer),
        }
    }
}

/// A vote on a proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Vote {
    Yes,
    No,
    Abstain,
}

/// Body of `POST /v1/proposals`. Unset fields take the server's defaults.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProposalCreate {
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    pub voters: Vec<Party>,
    pub rule: Rule,
    /// Undecided at `now + deadline_ms` → `expired`.
    pub deadline_ms: u64,
    /// The voters are live session ids (server default `false`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voters_are_sessions: Option<bool>,
    /// How long the decided proposal is kept (server default 24 h).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Answer of `POST /v1/proposals`: the id is the creating command index.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ProposalCreated {
    pub proposal_id: u64,
    pub state: String,
    pub index: u64,
}

/// The counts of a tally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Tally {
    pub yes: u32,
    pub no: u32,
    pub abstain: u32,
}

/// Answer of a vote: the proposal right after it (this vote may have decided it).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ProposalVoted {
    pub proposal_id: u64,
    pub state: String,
    pub tally: Tally,
    pub index: u64,
}

/// Query of `GET /v1/proposals`. `Default` lists every proposal from the first.
#[derive(Debug, Clone, Default)]
pub struct ProposalList {
    /// `open`, `accepted`, `rejected` or `expired`.
    pub state: Option<String>,
    /// Only proposals this voter (a name, or a session id in decimal) votes on.
    pub voter: Option<String>,
    /// With `voter`: only open proposals it has not voted on yet.
    pub awaiting: bool,
    /// Start strictly after this `proposal_id` (a page's `next_after`).
    pub after: Option<u64>,
    pub limit: Option<u32>,
    pub consistency: Consistency,
}

#[derive(Serialize)]
struct VoteBody<'a> {
    voter: Party,
    vote: Vote,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

/// The `wait_ms` query pair of a long-polling read, when it waits.
pub(crate) fn wait_pair(wait: Option<Duration>) -> (&'static str, Option<String>) {
    ("wait_ms", wait.map(|wait| wait.as_millis().to_string()))
}

/// `Some("true")` for a set flag, else left out of the query.
pub(crate) fn flag(on: bool) -> Option<String> {
    on.then(|| "true".to_owned())
}

impl Client {
    /// `POST /v1/proposals`.
    pub async fn proposal_create(&self, create: &ProposalCreate) -> Result<ProposalCreated, Error> {
        self.write_idempotent(Method::POST, &["v1", "proposals"], create)
            .await
    }

    /// `POST /v1/proposals/{id}/votes`. The same vote again answers `200` with the
    /// current state (so the call is retried like a read, with or without a
    /// `request_id`); a different one is `Error::Api` with code `already_voted`.
    pub async fn proposal_vote(
        &self,
        proposal_id: u64,
        voter: impl Into<Party>,
        vote: Vote,
        request_id: Option<&str>,
    ) -> Result<ProposalVoted, Error> {
        let id = proposal_id.to_string();
        let body = VoteBody {
            voter: voter.into(),
            vote,
            request_id,
        };
        self.write_repeatable(Method::POST, &["v1", "proposals", &id, "votes"], &body)
            .await
    }

    /// `GET /v1/proposals/{id}`: the proposal with its whole tally. With `wait`, the
    /// server answers once it is decided or the wait ends (then still `open`); the
    /// call's deadline grows by the wait.
    pub async fn proposal_get(
        &self,
        proposal_id: u64,
        wait: Option<Duration>,
        consistency: Consistency,
    ) -> Result<Value, Error> {
        let id = proposal_id.to_string();
        self.read_waiting(&["v1", "proposals", &id], wait, consistency)
            .await
    }

    /// `GET segments?wait_ms=`: a read the server may hold for `wait` (a decision's
    /// long poll).
    pub(crate) async fn read_waiting(
        &self,
        segments: &[&str],
        wait: Option<Duration>,
        consistency: Consistency,
    ) -> Result<Value, Error> {
        let query = query_pairs(&[wait_pair(wait)]);
        self.read_query(segments, &query, consistency).await
    }

    /// `GET /v1/proposals`: `{"items": [view...], "next_after": id|null}`.
    pub async fn proposal_list(&self, list: &ProposalList) -> Result<Value, Error> {
        let query = query_pairs(&[
            ("state", list.state.clone()),
            ("voter", list.voter.clone()),
            ("awaiting", flag(list.awaiting)),
            ("after", list.after.map(|after| after.to_string())),
            ("limit", list.limit.map(|limit| limit.to_string())),
        ]);
        self.read_query(&["v1", "proposals"], &query, list.consistency)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_create_body_words_the_rule_and_parties_as_the_api_does() {
        let create = ProposalCreate {
            title: "deploy".into(),
            voters: vec!["alice".into(), Party::Session(7)],
            rule: Rule::Threshold(2),
            deadline_ms: 1000,
            ..ProposalCreate::default()
        };
        assert_eq!(
            serde_json::to_value(&create).unwrap(),
            json!({"title": "deploy", "voters": ["alice", 7], "rule": {"threshold": 2}, "deadline_ms": 1000})
        );
        for (rule, text) in [(Rule::Majority, "majority"), (Rule::Unanimous, "unanimous")] {
            assert_eq!(serde_json::to_value(rule).unwrap(), json!(text));
        }
    }

    #[test]
    fn a_vote_body_sends_the_request_id_only_when_given() {
        let body = VoteBody {
            voter: 3.into(),
            vote: Vote::Abstain,
            request_id: None,
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"voter": 3, "vote": "abstain"})
        );
    }

    #[test]
    fn only_a_set_wait_and_flag_reach_the_query() {
        let pairs = query_pairs(&[
            wait_pair(Some(Duration::from_millis(1500))),
            ("awaiting", flag(false)),
        ]);
        assert_eq!(pairs, vec![("wait_ms", "1500".to_string())]);
        assert_eq!(query_pairs(&[wait_pair(None)]), vec![]);
    }
}
