//! Two-phase-commit endpoints (`/v1/2pc`): create, vote, ack, get (with `wait_ms`,
//! woken on apply until decided) and the participant's list of what awaits it
//! (with `wait_ms`, woken until something does). The rules are the state
//! machine's (`sm::twophase`); this file checks shapes against `Limits` and words
//! outcomes. Like every handler file it reaches the replica only through
//! `AppState`.

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::error_code::ErrorCode;
use super::extract::{Acting, JsonBody, QueryParams};
use super::input::{json_text, TransactionIdPath};
use super::proposals::{already_voted, decided_before, decision_ms, parties, party_json};
use super::proposals::{party_name, Party};
use super::sessions::raw;
use super::{AppState, Consistency};
use crate::sm::twophase::{
    Decision, NewTransaction, Transaction, TransactionId, TwoPhaseCommand, TwoPhaseOutcome,
    TwoPhaseState,
};
use crate::sm::Command;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    participants: Vec<Party>,
    timeout_ms: u64,
    payload: Option<super::input::JsonValue>,
    #[serde(default)]
    participants_are_sessions: bool,
    request_id: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DecisionName {
    Commit,
    Abort,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoteBody {
    participant: Party,
    vote: DecisionName,
    request_id: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    participant: Party,
    request_id: Option<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetQuery {
    /// Wait up to this long for the transaction to be decided.
    #[serde(default)]
    wait_ms: u64,
    #[serde(default)]
    #[param(inline)]
    consistency: Consistency,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only transactions this participant (a name, or a session id in decimal)
    /// takes part in.
    participant: Option<String>,
    state: Option<String>,
    /// With `participant`: only those awaiting its vote (preparing, not voted) or
    /// its ack (decided, not acked).
    #[serde(default)]
    awaiting: bool,
    /// Wait up to this long for at least one transaction to match (needs
    /// `participant`).
    #[serde(default)]
    wait_ms: u64,
    after: Option<TransactionId>,
    limit: Option<usize>,
    #[serde(default)]
    #[param(inline)]
    consistency: Consistency,
}

/// The full view of a transaction.
pub fn view(transaction: &Transaction) -> Value {
    let sessions = transaction.participants_are_sessions;
    let votes: serde_json::Map<String, Value> = transaction
        .votes
        .iter()
        .map(|(participant, ballot)| (participant.clone(), json!(ballot.decision.name())))
        .collect();
    let mut ballots: Vec<_> = transaction.votes.iter().collect();
    ballots.sort_by_key(|(_, ballot)| ballot.index);
    let ballots: Vec<Value> = ballots
        .into_iter()
        .map(|(participant, ballot)| {
            json!({
                "participant": party_json(participant, sessions),
                "vote": ballot.decision.name(),
                "index": ballot.index,
                "cast_by": ballot.cast_by,
            })
        })
        .collect();
    let list = |names: &mut dyn Iterator<Item = &String>| -> Vec<Value> {
        names.map(|name| party_json(name, sessions)).collect()
    };
    json!({
        "id": transaction.id,
        "state": transaction.state.name(),
        "participants": list(&mut transaction.participants.iter()),
        "participants_are_sessions": sessions,
        "payload": raw(&transaction.payload_json),
        "votes": votes,
        "ballots": ballots,
        "reason": transaction.reason.map(|reason| reason.name()),
        "acks": list(&mut transaction.acks.iter()),
        "created_at_ms": transaction.created_at_ms,
        "created_by": transaction.created_by,
        "timeout_at_ms": transaction.timeout_at_ms,
        "decided_at_index": transaction.decided_at_index,
    })
}

/// How a two-phase outcome reads over HTTP (see `outcome::describe`).
pub fn describe(outcome: &TwoPhaseOutcome) -> Result<Value, ApiError> {
    Ok(match outcome {
        TwoPhaseOutcome::Created { id } => json!({ "id": id, "state": "preparing" }),
        TwoPhaseOutcome::Voted { id, state } => json!({ "id": id, "state": state.name() }),
        TwoPhaseOutcome::Acked { id, state, removed } => {
            json!({ "id": id, "state": state.name(), "removed": removed })
        }
        TwoPhaseOutcome::NotFound { id } => {
            return Err(ApiError::NotFound {
                code: ErrorCode::TransactionNotFound,
                message: format!("no two-phase transaction {id} (or every participant acked it)"),
            })
        }
        TwoPhaseOutcome::NotAParticipant { participant } => {
            return Err(ApiError::Denied {
                code: ErrorCode::NotAParticipant,
                message: format!("{participant:?} is not a participant of this transaction"),
            })
        }
        TwoPhaseOutcome::AlreadyVoted { decision } => {
            return Err(already_voted("participant", decision.name()))
        }
        TwoPhaseOutcome::Decided { state } => {
            let code = ErrorCode::TransactionDecided;
            return Err(decided_before(code, "transaction", state.name()));
        }
        TwoPhaseOutcome::NotDecided => {
            let message = "the transaction is not decided yet: ack after the decision";
            return Err(ApiError::conflict(ErrorCode::NotDecided, message));
        }
    })
}

/// `POST /v1/2pc`.
pub async fn create(
    State(app): State<AppState>,
    acting: Acting,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<Response, ApiError> {
    let limits = &app.limits;
    let sessions = body.participants_are_sessions;
    let participants = parties(limits, "participants", body.participants, sessions)?;
    decision_ms(limits, "timeout_ms", body.timeout_ms)?;
    let new = NewTransaction {
        participants,
        participants_are_sessions: sessions,
        payload_json: json_text(limits, body.payload, "null")?,
        timeout_ms: body.timeout_ms,
        created_by: acting.owner(),
    };
    let command = Command::TwoPhase(TwoPhaseCommand::Create(new));
    app.propose_and_respond(&acting, body.request_id, None, command)
        .await
}

/// A participant named in a vote or ack (the record says whether it is a session).
fn participant(app: &AppState, party: Party) -> Result<String, ApiError> {
    party_name(&app.limits, "participant", party, false)
}

/// `POST /v1/2pc/{id}/vote`.
pub async fn vote(
    State(app): State<AppState>,
    acting: Acting,
    TransactionIdPath(id): TransactionIdPath,
    JsonBody(body): JsonBody<VoteBody>,
) -> Result<Response, ApiError> {
    let decision = match body.vote {
        DecisionName::Commit => Decision::Commit,
        DecisionName::Abort => Decision::Abort,
    };
    let command = Command::TwoPhase(TwoPhaseCommand::Vote {
        id,
        participant: participant(&app, body.participant)?,
        decision,
        cast_by: acting.owner(),
    });
    app.propose_and_respond(&acting, body.request_id, None, command)
        .await
}

/// `POST /v1/2pc/{id}/ack`.
pub async fn ack(
    State(app): State<AppState>,
    acting: Acting,
    TransactionIdPath(id): TransactionIdPath,
    JsonBody(body): JsonBody<AckBody>,
) -> Result<Response, ApiError> {
    let command = Command::TwoPhase(TwoPhaseCommand::Ack {
        id,
        participant: participant(&app, body.participant)?,
    });
    app.propose_and_respond(&acting, body.request_id, None, command)
        .await
}

/// `GET /v1/2pc/{id}`: with `wait_ms`, answers once the transaction is decided or
/// the wait ends (then still `preparing`).
pub async fn get(
    State(app): State<AppState>,
    TransactionIdPath(id): TransactionIdPath,
    QueryParams(query): QueryParams<GetQuery>,
) -> Result<Response, ApiError> {
    let look = |state: &crate::sm::State| {
        let item = state.two_phase.get(id)?;
        Some((item.state != TwoPhaseState::Preparing, view(item)))
    };
    let missing = || format!("no two-phase transaction {id} (or every participant acked it)");
    app.read_until_settled(
        query.consistency,
        query.wait_ms,
        look,
        ErrorCode::TransactionNotFound,
        missing,
    )
    .await
}

/// A list query checked: its state filter parsed.
struct Filter {
    participant: Option<String>,
    state: Option<TwoPhaseState>,
    awaiting: bool,
    after: Option<TransactionId>,
}

impl Filter {
    fn matches(&self, transaction: &Transaction) -> bool {
        if self.state.is_some_and(|state| transaction.state != state) {
            return false;
        }
        if !self.awaiting {
            return true;
        }
        let Some(participant) = &self.participant else {
            return false;
        };
        match transaction.state {
            TwoPhaseState::Preparing => !transaction.votes.contains_key(participant),
            _ => !transaction.acks.contains(participant),
        }
    }

    fn page<'a>(
        &'a self,
        state: &'a crate::sm::State,
    ) -> Box<dyn Iterator<Item = &'a Transaction> + 'a> {
        let all = &state.two_phase;
        let matching: Box<dyn Iterator<Item = &Transaction>> = match &self.participant {
            Some(participant) => Box::new(all.of_participant(participant, self.after)),
            None => Box::new(all.range_from(self.after)),
        };
        Box::new(matching.filter(|t| self.matches(t)))
    }
}

/// `GET /v1/2pc?participant=&state=&awaiting=&wait_ms=`: a page of transactions;
/// with `wait_ms`, waits (woken on apply) until at least one matches.
pub async fn list(
    State(app): State<AppState>,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = super::input::page_limit(&app.limits, query.limit)?;
    let deadline = tokio::time::Instant::now() + super::input::wait(&app.limits, query.wait_ms)?;
    let state =
        super::input::state_filter(query.state.as_deref(), "two-phase", TwoPhaseState::parse)?;
    // A wait re-checks the filter after every apply, so it must be one
    // participant's transactions, not every record.
    if (query.awaiting || query.wait_ms > 0) && query.participant.is_none() {
        let message = "awaiting=true and wait_ms need participant";
        return Err(ApiError::invalid(ErrorCode::InvalidQuery, message));
    }
    let filter = Filter {
        participant: query.participant,
        state,
        awaiting: query.awaiting,
        after: query.after,
    };
    let any = {
        let state = app.read(query.consistency).await?;
        let any = filter.page(&state).next().is_some();
        any
    };
    if !any && query.wait_ms > 0 {
        app.wait_for_state(deadline, |state| filter.page(state).next().map(|_| ()))
            .await;
    }
    let state = app.replica.state();
    let page = super::list_page(filter.page(&state).map(view), limit, "id");
    Ok(page)
}
