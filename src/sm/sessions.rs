//! Agent sessions: liveness with a TTL, capabilities and a capacity.
//!
//! A session expires when cluster time passes its `expires_at_ms`; expiry happens on
//! apply (every replica at the same command), never on a node's own clock.
//! Keepalives arrive either one per command or, from the leader's keepalive batcher,
//! many per `Tick` as `(session_id, at_ms)` pairs: the renewal counts from `at_ms`,
//! the moment the leader accepted it, so batching adds no grace.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub type SessionId = u64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: SessionId,
    pub name: String,
    pub capabilities: BTreeSet<String>,
    pub capacity: u32,
    pub ttl_ms: u64,
    /// JSON text as sent.
    pub metadata_json: String,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    /// Tasks currently assigned to this session.
    pub load: u32,
    /// Ephemeral KV keys deleted when the session ends.
    pub ephemeral_keys: BTreeSet<String>,
}

impl Session {
    pub fn has_capabilities(&self, required: &BTreeSet<String>) -> bool {
        required.is_subset(&self.capabilities)
    }

    pub fn has_room(&self) -> bool {
        self.load < self.capacity
    }
}

/// The fields a new session is created with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewSession {
    pub name: String,
    pub capabilities: BTreeSet<String>,
    pub capacity: u32,
    pub ttl_ms: u64,
    pub metadata_json: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sessions {
    by_id: BTreeMap<SessionId, Session>,
    /// (expires_at_ms, id): the expiry order.
    by_expiry: BTreeSet<(u64, SessionId)>,
    /// (load, id) of sessions with room: the assignment order.
    with_room: BTreeSet<(u32, SessionId)>,
}

impl Sessions {
    pub fn get(&self, id: SessionId) -> Option<&Session> {
        self.by_id.get(&id)
    }

    pub fn get_mut(&mut self, id: SessionId) -> Option<&mut Session> {
        self.by_id.get_mut(&id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Session> {
        self.by_id.values()
    }

    pub fn create(&mut self, id: SessionId, new: NewSession, now_ms: u64) -> &Session {
        let expires_at_ms = now_ms.saturating_add(new.ttl_ms);
        self.by_expiry.insert((expires_at_ms, id));
        if new.capacity > 0 {
            self.with_room.insert((0, id));
        }
        let session = Session {
            id,
            name: new.name,
            capabilities: new.capabilities,
            capacity: new.capacity,
            ttl_ms: new.ttl_ms,
            metadata_json: new.metadata_json,
            created_at_ms: now_ms,
            expires_at_ms,
            load: 0,
            ephemeral_keys: BTreeSet::new(),
        };
        self.by_id.entry(id).or_insert(session)
    }

    /// Extends a live session to `at_ms + ttl` (never shortens it). `None` if unknown
    /// or if it had already expired at `at_ms`.
    pub fn renew(&mut self, id: SessionId, at_ms: u64) -> Option<u64> {
        let session = self.by_id.get_mut(&id)?;
        if at_ms >= session.expires_at_ms {
            return None;
        }
        let expires_at_ms = session
            .expires_at_ms
            .max(at_ms.saturating_add(session.ttl_ms));
        if expires_at_ms != session.expires_at_ms {
            self.by_expiry.remove(&(session.expires_at_ms, id));
            self.by_expiry.insert((expires_at_ms, id));
            session.expires_at_ms = expires_at_ms;
        }
        Some(expires_at_ms)
    }

    pub fn remove(&mut self, id: SessionId) -> Option<Session> {
        let session = self.by_id.remove(&id)?;
        self.by_expiry.remove(&(session.expires_at_ms, id));
        self.with_room.remove(&(session.load, id));
        Some(session)
    }

    /// Adds `delta` (±1) to a session's load, keeping the room index in step.
    pub fn change_load(&mut self, id: SessionId, delta: i32) {
        let Some(session) = self.by_id.get_mut(&id) else {
            return;
        };
        self.with_room.remove(&(session.load, id));
        session.load = session.load.saturating_add_signed(delta);
        if session.has_room() {
            self.with_room.insert((session.load, id));
        }
    }

    pub fn any_room(&self) -> bool {
        !self.with_room.is_empty()
    }

    /// Sessions with room, least loaded first, ties by id.
    pub fn with_room_in_order(&self) -> impl Iterator<Item = &Session> {
        self.with_room
            .iter()
            .filter_map(|(_, id)| self.by_id.get(id))
    }

    /// The earliest session due to expire at or before `now_ms`, if any.
    pub fn next_expired(&self, now_ms: u64) -> Option<SessionId> {
        self.by_expiry
            .first()
            .filter(|(at, _)| *at <= now_ms)
            .map(|&(_, id)| id)
    }

    /// When the next session expires.
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.by_expiry.first().map(|&(at, _)| at)
    }
}
