//! The events of apply: what each command changed, typed, in the order it changed
//! it, each stamped with the command index that caused it.
//!
//! Rooms push events as they change state (`State::emit`, or the [`Events`] sink
//! passed to a room's own helpers); `State::take_events` hands them out after each
//! log entry. They are derived from the commands alone, so every replica emits the
//! same sequence. The buffer is not state: it is never serialized, never compared
//! and always empty between entries. Numbering events within a command (the SSE
//! `<index>.<seq>` id), retention and delivery belong to the watch hub
//! (`replica::events`), filtering and rendering to the HTTP layer (`server::watch`).
//!
//! Like all of `sm`, it must not depend on storage, Raft, clocks or IO.

use serde::Serialize;

use super::sessions::SessionId;
use super::tasks::TaskId;

/// One change, at command index `index`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub index: u64,
    #[serde(flatten)]
    pub body: EventBody,
}

/// Why a holder lost what it held without releasing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LostReason {
    /// Its session expired (missed keepalives).
    SessionExpired,
    /// Its session was ended (by its owner or, with `admin`, by force).
    SessionEnded,
}

impl LostReason {
    pub fn of(expired: bool) -> LostReason {
        if expired {
            LostReason::SessionExpired
        } else {
            LostReason::SessionEnded
        }
    }
}

/// What changed. The `type` names are the SSE `event:` names (`docs/watch.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type")]
pub enum EventBody {
    #[serde(rename = "kv.put")]
    KvPut {
        key: String,
        #[serde(serialize_with = "raw_json")]
        value: String,
        version: u64,
        create_index: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        session_id: Option<SessionId>,
    },
    #[serde(rename = "kv.deleted")]
    KvDeleted { key: String, previous_version: u64 },
    /// An ephemeral key removed because its session ended or expired.
    #[serde(rename = "kv.expired")]
    KvExpired {
        key: String,
        previous_version: u64,
        session_id: SessionId,
    },
    #[serde(rename = "session.opened")]
    SessionOpened {
        session_id: SessionId,
        name: String,
        capabilities: Vec<String>,
        expires_at_ms: u64,
    },
    #[serde(rename = "session.expired")]
    SessionExpired { session_id: SessionId },
    #[serde(rename = "session.ended")]
    SessionEnded { session_id: SessionId },
    #[serde(rename = "task.submitted")]
    TaskSubmitted {
        task_id: TaskId,
        kind: String,
        state: &'static str,
    },
    /// Assigned by the scheduler to a session (a push), or claimed by one.
    #[serde(rename = "task.assigned")]
    TaskAssigned {
        task_id: TaskId,
        kind: String,
        session_id: SessionId,
        fencing_token: u64,
        attempt: u32,
    },
    #[serde(rename = "task.claimed")]
    TaskClaimed {
        task_id: TaskId,
        kind: String,
        session_id: SessionId,
        fencing_token: u64,
        attempt: u32,
    },
    /// Cancellation asked of a running task: its worker learns it here (or from
    /// its next heartbeat's answer).
    #[serde(rename = "task.cancel_requested")]
    TaskCancelRequested {
        task_id: TaskId,
        kind: String,
        session_id: SessionId,
    },
    #[serde(rename = "task.succeeded")]
    TaskSucceeded {
        task_id: TaskId,
        kind: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        session_id: Option<SessionId>,
    },
    /// An attempt ended without success and another will follow (after a backoff).
    #[serde(rename = "task.retrying")]
    TaskRetrying {
        task_id: TaskId,
        kind: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        session_id: Option<SessionId>,
        attempt: u32,
        reason: String,
    },
    /// Failed for good (no attempts left): a dead letter.
    #[serde(rename = "task.dead")]
    TaskDead {
        task_id: TaskId,
        kind: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        session_id: Option<SessionId>,
        attempt: u32,
        reason: String,
    },
    /// Failed by its worker with retries left (`failed`, waiting for its backoff).
    #[serde(rename = "task.failed")]
    TaskFailed {
        task_id: TaskId,
        kind: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        session_id: Option<SessionId>,
        attempt: u32,
    },
    #[serde(rename = "task.cancelled")]
    TaskCancelled {
        task_id: TaskId,
        kind: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        session_id: Option<SessionId>,
    },
    #[serde(rename = "lock.granted")]
    LockGranted {
        name: String,
        session_id: SessionId,
        fencing_token: u64,
        mode: &'static str,
    },
    #[serde(rename = "lock.released")]
    LockReleased {
        name: String,
        session_id: SessionId,
        fencing_token: u64,
    },
    #[serde(rename = "lock.lost")]
    LockLost {
        name: String,
        session_id: SessionId,
        fencing_token: u64,
        reason: LostReason,
    },
    #[serde(rename = "semaphore.granted")]
    SemaphoreGranted {
        name: String,
        session_id: SessionId,
        fencing_token: u64,
        permits: u32,
    },
    #[serde(rename = "semaphore.released")]
    SemaphoreReleased {
        name: String,
        session_id: SessionId,
        fencing_token: u64,
    },
    #[serde(rename = "semaphore.lost")]
    SemaphoreLost {
        name: String,
        session_id: SessionId,
        fencing_token: u64,
        reason: LostReason,
    },
    #[serde(rename = "barrier.released")]
    BarrierReleased { name: String, generation: u64 },
    /// A generation broken because a waiting session ended (`session_id`).
    #[serde(rename = "barrier.broken")]
    BarrierBroken {
        name: String,
        generation: u64,
        session_id: SessionId,
    },
    /// The election has a new leader (`session_id` absent: nobody leads now).
    #[serde(rename = "election.leader")]
    ElectionLeader {
        name: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        session_id: Option<SessionId>,
        term: u64,
    },
    #[serde(rename = "election.resigned")]
    ElectionResigned {
        name: String,
        session_id: SessionId,
        term: u64,
    },
    #[serde(rename = "election.lost")]
    ElectionLost {
        name: String,
        session_id: SessionId,
        term: u64,
        reason: LostReason,
    },
    #[serde(rename = "proposal.created")]
    ProposalCreated { proposal_id: u64, title: String },
    #[serde(rename = "proposal.decided")]
    ProposalDecided { proposal_id: u64, state: String },
    #[serde(rename = "2pc.created")]
    TwoPhaseCreated { id: u64 },
    #[serde(rename = "2pc.decided")]
    TwoPhaseDecided {
        id: u64,
        state: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A membership entry applied (Raft's, not a command: it takes an index of its
    /// own in the command sequence so the stream has a place for it).
    #[serde(rename = "membership.changed")]
    MembershipChanged {
        voters: Vec<u64>,
        learners: Vec<u64>,
    },
}

/// Every event type name (`EventBody::type_name`), for checking a watch's
/// `?types=`; the events tests check every emitted type is here.
pub const TYPE_NAMES: [&str; 31] = [
    "kv.put",
    "kv.deleted",
    "kv.expired",
    "session.opened",
    "session.expired",
    "session.ended",
    "task.submitted",
    "task.assigned",
    "task.claimed",
    "task.cancel_requested",
    "task.succeeded",
    "task.retrying",
    "task.dead",
    "task.failed",
    "task.cancelled",
    "lock.granted",
    "lock.released",
    "lock.lost",
    "semaphore.granted",
    "semaphore.released",
    "semaphore.lost",
    "barrier.released",
    "barrier.broken",
    "election.leader",
    "election.resigned",
    "election.lost",
    "proposal.created",
    "proposal.decided",
    "2pc.created",
    "2pc.decided",
    "membership.changed",
];

/// What a watcher's token must be allowed to read to see an event
/// (`auth::Need::ReadOf(kind, name)`, or any read for the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readable<'a> {
    Kv(&'a str),
    Locks(&'a str),
    Semaphores(&'a str),
    Barriers(&'a str),
    Elections(&'a str),
    /// Sessions, tasks, proposals, 2PC, membership: any read scope (as their GETs).
    Any,
}

impl EventBody {
    /// The `type` name (the SSE `event:` field).
    pub fn type_name(&self) -> &'static str {
        use EventBody::*;
        match self {
            KvPut { .. } => "kv.put",
            KvDeleted { .. } => "kv.deleted",
            KvExpired { .. } => "kv.expired",
            SessionOpened { .. } => "session.opened",
            SessionExpired { .. } => "session.expired",
            SessionEnded { .. } => "session.ended",
            TaskSubmitted { .. } => "task.submitted",
            TaskAssigned { .. } => "task.assigned",
            TaskClaimed { .. } => "task.claimed",
            TaskCancelRequested { .. } => "task.cancel_requested",
            TaskSucceeded { .. } => "task.succeeded",
            TaskRetrying { .. } => "task.retrying",
            TaskDead { .. } => "task.dead",
            TaskFailed { .. } => "task.failed",
            TaskCancelled { .. } => "task.cancelled",
            LockGranted { .. } => "lock.granted",
            LockReleased { .. } => "lock.released",
            LockLost { .. } => "lock.lost",
            SemaphoreGranted { .. } => "semaphore.granted",
            SemaphoreReleased { .. } => "semaphore.released",
            SemaphoreLost { .. } => "semaphore.lost",
            BarrierReleased { .. } => "barrier.released",
            BarrierBroken { .. } => "barrier.broken",
            ElectionLeader { .. } => "election.leader",
            ElectionResigned { .. } => "election.resigned",
            ElectionLost { .. } => "election.lost",
            ProposalCreated { .. } => "proposal.created",
            ProposalDecided { .. } => "proposal.decided",
            TwoPhaseCreated { .. } => "2pc.created",
            TwoPhaseDecided { .. } => "2pc.decided",
            MembershipChanged { .. } => "membership.changed",
        }
    }

    /// The name `?prefix=` matches: a key, a lock, semaphore, barrier or election
    /// name, or a task's kind. Sessions, proposals, 2PC and membership have none.
    pub fn key(&self) -> Option<&str> {
        use EventBody::*;
        match self {
            KvPut { key, .. } | KvDeleted { key, .. } | KvExpired { key, .. } => Some(key),
            TaskSubmitted { kind, .. }
            | TaskAssigned { kind, .. }
            | TaskClaimed { kind, .. }
            | TaskCancelRequested { kind, .. }
            | TaskSucceeded { kind, .. }
            | TaskRetrying { kind, .. }
            | TaskDead { kind, .. }
            | TaskFailed { kind, .. }
            | TaskCancelled { kind, .. } => Some(kind),
            LockGranted { name, .. }
            | LockReleased { name, .. }
            | LockLost { name, .. }
            | SemaphoreGranted { name, .. }
            | SemaphoreReleased { name, .. }
            | SemaphoreLost { name, .. }
            | BarrierReleased { name, .. }
            | BarrierBroken { name, .. }
            | ElectionLeader { name, .. }
            | ElectionResigned { name, .. }
            | ElectionLost { name, .. } => Some(name),
            SessionOpened { .. }
            | SessionExpired { .. }
            | SessionEnded { .. }
            | ProposalCreated { .. }
            | ProposalDecided { .. }
            | TwoPhaseCreated { .. }
            | TwoPhaseDecided { .. }
            | MembershipChanged { .. } => None,
        }
    }

    /// The session the event concerns (`?session_id=` matches it), if any.
    pub fn session(&self) -> Option<SessionId> {
        use EventBody::*;
        match self {
            KvPut { session_id, .. }
            | TaskSucceeded { session_id, .. }
            | TaskRetrying { session_id, .. }
            | TaskDead { session_id, .. }
            | TaskFailed { session_id, .. }
            | TaskCancelled { session_id, .. }
            | ElectionLeader { session_id, .. } => *session_id,
            KvExpired { session_id, .. }
            | SessionOpened { session_id, .. }
            | SessionExpired { session_id }
            | SessionEnded { session_id }
            | TaskAssigned { session_id, .. }
            | TaskClaimed { session_id, .. }
            | TaskCancelRequested { session_id, .. }
            | LockGranted { session_id, .. }
            | LockReleased { session_id, .. }
            | LockLost { session_id, .. }
            | SemaphoreGranted { session_id, .. }
            | SemaphoreReleased { session_id, .. }
            | SemaphoreLost { session_id, .. }
            | BarrierBroken { session_id, .. }
            | ElectionResigned { session_id, .. }
            | ElectionLost { session_id, .. } => Some(*session_id),
            KvDeleted { .. }
            | TaskSubmitted { .. }
            | BarrierReleased { .. }
            | ProposalCreated { .. }
            | ProposalDecided { .. }
            | TwoPhaseCreated { .. }
            | TwoPhaseDecided { .. }
            | MembershipChanged { .. } => None,
        }
    }

    /// What reading it needs (the same as the GET of the resource it concerns).
    pub fn readable(&self) -> Readable<'_> {
        use EventBody::*;
        match self {
            KvPut { key, .. } | KvDeleted { key, .. } | KvExpired { key, .. } => Readable::Kv(key),
            LockGranted { name, .. } | LockReleased { name, .. } | LockLost { name, .. } => {
                Readable::Locks(name)
            }
            SemaphoreGranted { name, .. }
            | SemaphoreReleased { name, .. }
            | SemaphoreLost { name, .. } => Readable::Semaphores(name),
            BarrierReleased { name, .. } | BarrierBroken { name, .. } => Readable::Barriers(name),
            ElectionLeader { name, .. }
            | ElectionResigned { name, .. }
            | ElectionLost { name, .. } => Readable::Elections(name),
            _ => Readable::Any,
        }
    }

    /// A rough size in bytes, for the hub's byte bound (not exact JSON length).
    pub fn size_hint(&self) -> usize {
        use EventBody::*;
        let text = match self {
            KvPut { key, value, .. } => key.len() + value.len(),
            SessionOpened {
                name, capabilities, ..
            } => name.len() + capabilities.iter().map(|c| c.len() + 3).sum::<usize>(),
            ProposalCreated { title, .. } => title.len(),
            TaskRetrying { kind, reason, .. } | TaskDead { kind, reason, .. } => {
                kind.len() + reason.len()
            }
            MembershipChanged { voters, learners } => 8 * (voters.len() + learners.len()),
            other => other.key().map_or(0, str::len),
        };
        128 + text
    }
}

/// Serializes compact JSON text as the JSON it is (not as a string).
fn raw_json<S: serde::Serializer>(text: &str, serializer: S) -> Result<S::Ok, S::Error> {
    match serde_json::value::RawValue::from_string(text.to_owned()) {
        Ok(raw) => raw.serialize(serializer),
        Err(_) => serializer.serialize_str(text),
    }
}

/// The events of the entry being applied. Not state: never serialized, equal to
/// any other buffer (so `State`'s equality and hash ignore it), and drained after
/// every entry.
#[derive(Debug, Clone, Default)]
pub struct Events(Vec<Event>);

impl PartialEq for Events {
    fn eq(&self, _: &Events) -> bool {
        true
    }
}

impl Eq for Events {}

impl Events {
    pub fn push(&mut self, index: u64, body: EventBody) {
        self.0.push(Event { index, body });
    }

    pub fn take(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.0)
    }
}
