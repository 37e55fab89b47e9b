//! Proposal endpoints: create, vote, get (with `wait_ms`, woken on apply until the
//! proposal is decided) and list (by state and by voter). The rules are the
//! state machine's (`sm::proposals`); this file checks the shape of requests
//! against `Limits` and words outcomes. Like every handler file it reaches the
//! replica only through `AppState`.

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::error_code::ErrorCode;
use super::extract::{Acting, JsonBody, QueryParams};
use super::input::{json_text, ProposalIdPath};
use super::sessions::raw;
use super::{AppState, Consistency};
use crate::limits::{Limits, Replicated};
use crate::sm::proposals::{
    NewProposal, Proposal, ProposalCommand, ProposalId, ProposalOutcome, ProposalState, Rule, Vote,
};
use crate::sm::Command;

/// A voter or participant as a request names it: a name, or a session id.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Party {
    Session(u64),
    Name(String),
}

/// The parties of a request as the state machine records them: names as given,
/// session ids in canonical decimal. Refuses an empty list, too many, a bad name,
/// or (with `sessions`) anything that is not a session id.
pub fn parties(
    limits: &Limits,
    field: &str,
    given: Vec<Party>,
    sessions: bool,
) -> Result<Vec<String>, ApiError> {
    let invalid = |message: String| ApiError::invalid(ErrorCode::InvalidVoters, message);
    if given.is_empty() || given.len() > limits.max_voters {
        return Err(invalid(format!(
            "{field} must list 1 to {} entries",
            limits.max_voters
        )));
    }
    let mut names = Vec::with_capacity(given.len());
    for party in given {
        names.push(party_name(limits, field, party, sessions)?);
    }
    let distinct: std::collections::BTreeSet<&String> = names.iter().collect();
    if distinct.len() != names.len() {
        return Err(invalid(format!("{field} names each entry once")));
    }
    Ok(names)
}

/// One party as recorded (see [`parties`]).
pub fn party_name(
    limits: &Limits,
    field: &str,
    party: Party,
    sessions: bool,
) -> Result<String, ApiError> {
    let invalid = |message: String| ApiError::invalid(ErrorCode::InvalidVoters, message);
    match (party, sessions) {
        (Party::Session(id), _) => Ok(id.to_string()),
        (Party::Name(text), true) => {
            super::input::path_id(&text, ErrorCode::InvalidVoters, "session")
                .map(|id| id.to_string())
        }
        (Party::Name(text), false) => {
            if text.is_empty() || text.len() > limits.max_name_bytes {
                return Err(invalid(format!(
                    "each of {field} is 1 to {} bytes",
                    limits.max_name_bytes
                )));
            }
            Ok(text)
        }
    }
}

/// A party as a view shows it: a session id as a number, a name as text.
pub fn party_json(name: &str, sessions: bool) -> Value {
    match (sessions, name.parse::<u64>()) {
        (true, Ok(id)) => json!(id),
        _ => json!(name),
    }
}

/// `"majority"`, `"unanimous"` or `{"threshold": n}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum RuleBody {
    Named(NamedRule),
    Threshold { threshold: u32 },
}

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NamedRule {
    Majority,
    Unanimous,
}

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VoteName {
    Yes,
    No,
    Abstain,
}

impl From<VoteName> for Vote {
    fn from(vote: VoteName) -> Self {
        match vote {
            VoteName::Yes => Vote::Yes,
            VoteName::No => Vote::No,
            VoteName::Abstain => Vote::Abstain,
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    title: String,
    payload: Option<super::input::JsonValue>,
    voters: Vec<Party>,
    rule: RuleBody,
    deadline_ms: u64,
    #[serde(default)]
    voters_are_sessions: bool,
    /// How long the decided proposal is kept (default 24 h).
    retention_ms: Option<u64>,
    request_id: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoteBody {
    voter: Party,
    vote: VoteName,
    request_id: Option<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetQuery {
    /// Wait up to this long for the proposal to be decided.
    #[serde(default)]
    wait_ms: u64,
    #[serde(default)]
    #[param(inline)]
    consistency: Consistency,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    state: Option<String>,
    /// Only proposals this voter (a name, or a session id in decimal) votes on.
    voter: Option<String>,
    /// With `voter`: only open proposals it has not voted on yet.
    #[serde(default)]
    awaiting: bool,
    after: Option<ProposalId>,
    limit: Option<usize>,
    #[serde(default)]
    #[param(inline)]
    consistency: Consistency,
}

/// The rule as the API writes it.
pub fn rule_json(rule: Rule) -> Value {
    match rule {
        Rule::Majority => json!("majority"),
        Rule::Unanimous => json!("unanimous"),
        Rule::Threshold(n) => json!({ "threshold": n }),
    }
}

/// The full view of a proposal, with its whole tally.
pub fn view(proposal: &Proposal) -> Value {
    let sessions = proposal.voters_are_sessions;
    let counts = proposal.counts();
    let mut votes: Vec<(&String, &crate::sm::proposals::Cast)> = proposal.votes.iter().collect();
    votes.sort_by_key(|(_, cast)| cast.index);
    let votes: Vec<Value> = votes
        .into_iter()
        .map(|(voter, cast)| {
            json!({
                "voter": party_json(voter, sessions),
                "vote": cast.vote.name(),
                "index": cast.index,
                "cast_by": cast.cast_by,
            })
        })
        .collect();
    let voters: Vec<Value> = proposal
        .voters
        .iter()
        .map(|voter| party_json(voter, sessions))
        .collect();
    json!({
        "proposal_id": proposal.id,
        "title": proposal.title,
        "payload": raw(&proposal.payload_json),
        "rule": rule_json(proposal.rule),
        "voters": voters,
        "voters_are_sessions": sessions,
        "state": proposal.state.name(),
        "tally": {
            "yes": counts.yes, "no": counts.no, "abstain": counts.abstain,
            "votes": votes,
        },
        "created_at_ms": proposal.created_at_ms,
        "created_by": proposal.created_by,
        "deadline_at_ms": proposal.deadline_at_ms,
        "retention_ms": proposal.retention_ms,
        "decided_at_index": proposal.decided_at_index,
        "decided_at_ms": proposal.decided_at_ms,
    })
}

/// How a proposal outcome reads over HTTP (see `outcome::describe`).
pub fn describe(outcome: &ProposalOutcome) -> Result<Value, ApiError> {
    Ok(match outcome {
        ProposalOutcome::Created { proposal_id, state } => {
            json!({ "proposal_id": proposal_id, "state": state.name() })
        }
        ProposalOutcome::Voted {
            proposal_id,
            state,
            counts,
        } => json!({
            "proposal_id": proposal_id,
            "state": state.name(),
            "tally": { "yes": counts.yes, "no": counts.no, "abstain": counts.abstain },
        }),
        ProposalOutcome::NotFound { proposal_id } => {
            return Err(ApiError::NotFound {
                code: ErrorCode::ProposalNotFound,
                message: format!("no proposal {proposal_id}"),
            })
        }
        ProposalOutcome::NotAVoter { voter } => {
            return Err(ApiError::Denied {
                code: ErrorCode::NotAVoter,
                message: format!("{voter:?} is not a voter of this proposal"),
            })
        }
        ProposalOutcome::AlreadyVoted { vote } => return Err(already_voted("voter", vote.name())),
        ProposalOutcome::Decided { state } => {
            let code = ErrorCode::ProposalDecided;
            return Err(decided_before(code, "proposal", state.name()));
        }
    })
}

/// `409 already_voted`: a `party` (voter, participant) voted otherwise before.
pub fn already_voted(party: &str, vote: &str) -> ApiError {
    let message = format!("this {party} already voted {vote:?}; a vote cannot be changed");
    ApiError::conflict(ErrorCode::AlreadyVoted, message)
}

/// A first vote on a `what` already decided (`state`): not counted.
pub fn decided_before(code: ErrorCode, what: &str, state: &str) -> ApiError {
    let message = format!("the {what} was decided ({state}) before this vote; it is not counted");
    ApiError::conflict(code, message)
}

/// `POST /v1/proposals`.
pub async fn create(
    State(app): State<AppState>,
    acting: Acting,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<Response, ApiError> {
    let limits = &app.limits;
    if body.title.is_empty() || body.title.len() > limits.max_title_bytes {
        return Err(ApiError::invalid(
            ErrorCode::InvalidTitle,
            format!("title must be 1 to {} bytes", limits.max_title_bytes),
        ));
    }
    let sessions = body.voters_are_sessions;
    let voters = parties(limits, "voters", body.voters, sessions)?;
    let rule = match body.rule {
        RuleBody::Named(NamedRule::Majority) => Rule::Majority,
        RuleBody::Named(NamedRule::Unanimous) => Rule::Unanimous,
        RuleBody::Threshold { threshold } => {
            if threshold == 0 || threshold as usize > voters.len() {
                return Err(ApiError::invalid(
                    ErrorCode::InvalidRule,
                    format!(
                        "threshold must be 1 to the number of voters ({}), got {threshold}",
                        voters.len()
                    ),
                ));
            }
            Rule::Threshold(threshold)
        }
    };
    decision_ms(limits, "deadline_ms", body.deadline_ms)?;
    let retention_ms = body
        .retention_ms
        .unwrap_or(Replicated::PROPOSAL_RETENTION_MS);
    if retention_ms > limits.max_retention_ms {
        return Err(ApiError::invalid(
            ErrorCode::InvalidDuration,
            format!("retention_ms is at most {}", limits.max_retention_ms),
        ));
    }
    let new = NewProposal {
        title: body.title,
        payload_json: json_text(limits, body.payload, "null")?,
        rule,
        voters,
        voters_are_sessions: sessions,
        deadline_ms: body.deadline_ms,
        retention_ms,
        created_by: acting.owner(),
    };
    let command = Command::Proposal(ProposalCommand::Create(new));
    app.propose_and_respond(&acting, body.request_id, None, command)
        .await
}

/// A proposal's `deadline_ms` or a two-phase `timeout_ms`: 1 to `max_decision_ms`.
pub fn decision_ms(limits: &Limits, field: &str, value: u64) -> Result<(), ApiError> {
    if value == 0 || value > limits.max_decision_ms {
        return Err(ApiError::invalid(
            ErrorCode::InvalidDuration,
            format!("{field} must be 1 to {} ms", limits.max_decision_ms),
        ));
    }
    Ok(())
}

/// `POST /v1/proposals/{id}/votes`. The proposal's own record says whether its
/// voters are sessions, so a session id may be given as a number or in decimal.
pub async fn vote(
    State(app): State<AppState>,
    acting: Acting,
    ProposalIdPath(proposal_id): ProposalIdPath,
    JsonBody(body): JsonBody<VoteBody>,
) -> Result<Response, ApiError> {
    let voter = match body.voter {
        Party::Session(id) => id.to_string(),
        Party::Name(name) => party_name(&app.limits, "voter", Party::Name(name), false)?,
    };
    let command = Command::Proposal(ProposalCommand::Vote {
        proposal_id,
        voter,
        vote: body.vote.into(),
        cast_by: acting.owner(),
    });
    app.propose_and_respond(&acting, body.request_id, None, command)
        .await
}

/// `GET /v1/proposals/{id}`: with `wait_ms`, answers once the proposal is decided
/// (woken by the apply that decides it) or the wait ends (then still `open`).
pub async fn get(
    State(app): State<AppState>,
    ProposalIdPath(id): ProposalIdPath,
    QueryParams(query): QueryParams<GetQuery>,
) -> Result<Response, ApiError> {
    let look = |state: &crate::sm::State| {
        let item = state.proposals.get(id)?;
        Some((item.state != ProposalState::Open, view(item)))
    };
    let missing = || format!("no proposal {id}");
    app.read_until_settled(
        query.consistency,
        query.wait_ms,
        look,
        ErrorCode::ProposalNotFound,
        missing,
    )
    .await
}

impl super::resource::ListQuery for ListQuery {
    fn page(&self) -> (Option<usize>, Consistency) {
        (self.limit, self.consistency)
    }

    fn list(self, applied: &crate::sm::State, limit: usize) -> Result<Response, ApiError> {
        let state =
            super::input::state_filter(self.state.as_deref(), "proposal", ProposalState::parse)?;
        if self.awaiting && self.voter.is_none() {
            let message = "awaiting=true needs voter";
            return Err(ApiError::invalid(ErrorCode::InvalidQuery, message));
        }
        let voter = self.voter.clone().unwrap_or_default();
        let awaits = |p: &Proposal| p.state == ProposalState::Open && !p.votes.contains_key(&voter);
        let proposals = &applied.proposals;
        let matching: Box<dyn Iterator<Item = &Proposal>> = match &self.voter {
            Some(voter) => Box::new(proposals.of_voter(voter, self.after)),
            None => Box::new(proposals.range_from(self.after)),
        };
        let views = matching
            .filter(|p| state.is_none_or(|s| p.state == s))
            .filter(|p| !self.awaiting || awaits(p))
            .map(view);
        Ok(super::list_page(views, limit, "proposal_id"))
    }
}
