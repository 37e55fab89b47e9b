//! Agent sessions: liveness with a TTL, capabilities and a capacity.
//!
//! A session expires when cluster time passes its `expires_at_ms`; expiry happens on
//! apply (every replica at the same command), never on a node's own clock.
//! Keepalives arrive either one per command or, from the leader's keepalive batcher,
//! many per `Tick` as `(session_id, at_ms)` pairs: the renewal counts from `at_ms`,
//! the moment the leader accepted it, so batching adds no grace.
//!
//! Sessions with room are indexed twice: all of them by (load, id), the assignment
//! order, and the same entries grouped by the session's capability set ("profile")
//! with, per capability, the profiles that have it. Finding the best session for a
//! task then looks at the profiles holding its rarest required capability, never at
//! sessions one by one. The grouping is derived (not serialized) and rebuilt when a
//! `Sessions` is decoded.
//!
//! The records and the indexes are persistent maps and sets (`imbl`, since #16), as
//! the task records are (see `tasks::records`): a snapshot build's copy of the state
//! under its lock is a pointer copy. They encode byte for byte as the `BTreeMap`s and
//! `BTreeSet`s they replaced (`records_tests`).

use std::collections::BTreeSet;

use imbl::{OrdMap, OrdSet};
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
    /// The token subject that created it: only that subject (or `admin`) may act
    /// for it. `None` when created on an open node.
    pub owner: Option<String>,
    /// The semaphores, barriers and elections it joined (holds, waits on, arrived
    /// at, leads or stands in), so that its end visits those and no others: ending a
    /// session costs what it joined, not what exists. Entries it left may linger
    /// (a visit then finds nothing to do); those it left itself are removed.
    pub joined: BTreeSet<(Room, String)>,
}

/// A room a session can join by name, besides locks (which keep their own index,
/// `locks::WaitFor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Room {
    Semaphore,
    Barrier,
    Election,
    Proposal,
    TwoPhase,
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
    /// The creating token's subject (`None` on an open node).
    pub owner: Option<String>,
}

/// Sessions with room grouped by capability set. Holds no empty group, so equal
/// sessions always give equal indexes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RoomByProfile {
    /// (load, id) of the sessions with room, per capability set.
    by_profile: OrdMap<BTreeSet<String>, OrdSet<(u32, SessionId)>>,
    /// The capability sets in `by_profile` that have each capability.
    profiles_by_capability: OrdMap<String, OrdSet<BTreeSet<String>>>,
}

impl RoomByProfile {
    fn insert(&mut self, profile: &BTreeSet<String>, entry: (u32, SessionId)) {
        if let Some(sessions) = self.by_profile.get_mut(profile) {
            sessions.insert(entry);
            return;
        }
        self.by_profile.insert(profile.clone(), OrdSet::unit(entry));
        for capability in profile {
            self.profiles_by_capability
                .entry(capability.clone())
                .or_default()
                .insert(profile.clone());
        }
    }

    fn remove(&mut self, profile: &BTreeSet<String>, entry: (u32, SessionId)) {
        let Some(sessions) = self.by_profile.get_mut(profile) else {
            return;
        };
        sessions.remove(&entry);
        if !sessions.is_empty() {
            return;
        }
        self.by_profile.remove(profile);
        for capability in profile {
            if let Some(profiles) = self.profiles_by_capability.get_mut(capability) {
                profiles.remove(profile);
                if profiles.is_empty() {
                    self.profiles_by_capability.remove(capability);
                }
            }
        }
    }

    /// The least (load, id) among sessions with room whose capabilities include
    /// `required` (not empty): a look at each profile that has the rarest of them.
    fn best(&self, required: &BTreeSet<String>) -> Option<(u32, SessionId)> {
        let mut rarest: Option<&OrdSet<BTreeSet<String>>> = None;
        for capability in required {
            let profiles = self.profiles_by_capability.get(capability)?;
            if rarest.is_none_or(|fewest| profiles.len() < fewest.len()) {
                rarest = Some(profiles);
            }
        }
        #[cfg(test)]
        crate::sm::tasks::count_assignment_work(rarest.map_or(0, OrdSet::len));
        rarest?
            .iter()
            .filter(|profile| required.is_subset(profile))
            .filter_map(|profile| self.by_profile.get(profile)?.get_min().copied())
            .min()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredSessions")]
pub struct Sessions {
    by_id: OrdMap<SessionId, Session>,
    /// (expires_at_ms, id): the expiry order.
    by_expiry: OrdSet<(u64, SessionId)>,
    /// (load, id) of sessions with room: the assignment order.
    with_room: OrdSet<(u32, SessionId)>,
    /// The entries of `with_room` grouped by capability set (derived).
    #[serde(skip)]
    room_by_profile: RoomByProfile,
}

/// [`Sessions`] as serialized: every field but the derived `room_by_profile`, in
/// the same order, so decoding rebuilds that index.
#[derive(Deserialize)]
struct StoredSessions {
    by_id: OrdMap<SessionId, Session>,
    by_expiry: OrdSet<(u64, SessionId)>,
    with_room: OrdSet<(u32, SessionId)>,
}

impl From<StoredSessions> for Sessions {
    fn from(stored: StoredSessions) -> Self {
        let mut room_by_profile = RoomByProfile::default();
        for &(load, id) in &stored.with_room {
            if let Some(session) = stored.by_id.get(&id) {
                room_by_profile.insert(&session.capabilities, (load, id));
            }
        }
        Self {
            by_id: stored.by_id,
            by_expiry: stored.by_expiry,
            with_room: stored.with_room,
            room_by_profile,
        }
    }
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
            self.room_by_profile.insert(&new.capabilities, (0, id));
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
            owner: new.owner,
            joined: BTreeSet::new(),
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
        self.room_by_profile
            .remove(&session.capabilities, (session.load, id));
        Some(session)
    }

    /// Adds `delta` (±1) to a session's load, keeping the room index in step.
    pub fn change_load(&mut self, id: SessionId, delta: i32) {
        let Some(session) = self.by_id.get_mut(&id) else {
            return;
        };
        self.with_room.remove(&(session.load, id));
        self.room_by_profile
            .remove(&session.capabilities, (session.load, id));
        session.load = session.load.saturating_add_signed(delta);
        if session.has_room() {
            self.with_room.insert((session.load, id));
            self.room_by_profile
                .insert(&session.capabilities, (session.load, id));
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

    /// The first session of [`Self::with_room_in_order`] that has every capability in
    /// `required`, without walking sessions: O(profiles having the rarest required
    /// capability), and O(log) if no session with room has one of them.
    pub fn best_with_room(&self, required: &BTreeSet<String>) -> Option<SessionId> {
        if required.is_empty() {
            return self.with_room_in_order().next().map(|session| session.id);
        }
        self.room_by_profile.best(required).map(|(_, id)| id)
    }

    /// The earliest session due to expire at or before `now_ms`, if any.
    pub fn next_expired(&self, now_ms: u64) -> Option<SessionId> {
        let &(at, id) = self.by_expiry.get_min()?;
        (at <= now_ms).then_some(id)
    }

    /// When the next session expires.
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.by_expiry.get_min().map(|&(at, _)| at)
    }

    /// Panics unless the room indexes match what the session records alone give.
    #[cfg(test)]
    pub fn assert_indexes_consistent(&self) {
        let with_room: OrdSet<(u32, SessionId)> = self
            .by_id
            .values()
            .filter(|session| session.has_room())
            .map(|session| (session.load, session.id))
            .collect();
        assert_eq!(with_room, self.with_room, "sessions with room");
        let rebuilt = Sessions::from(StoredSessions {
            by_id: self.by_id.clone(),
            by_expiry: self.by_expiry.clone(),
            with_room,
        });
        assert_eq!(
            rebuilt.room_by_profile, self.room_by_profile,
            "room by capability set"
        );
    }
}

#[cfg(test)]
#[path = "records_tests.rs"]
mod tests;
