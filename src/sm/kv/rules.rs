//! The key/value rules as `State` methods: they keep the KV map and the sessions'
//! sets of ephemeral keys in step.

use super::KvCommand;
use crate::limits::Replicated;
use crate::sm::events::EventBody;
use crate::sm::sessions::{Session, SessionId};
use crate::sm::{KvOutcome, Refusal};
use crate::sm::{Outcome, State};

impl State {
    /// Applies one key/value command at command index `index`.
    pub(in crate::sm) fn apply_kv(&mut self, command: &KvCommand, index: u64) -> Outcome {
        match command {
            KvCommand::Put {
                key,
                value_json,
                if_version,
                session_id,
            } => self.put_key(key, value_json, *if_version, *session_id, index),
            KvCommand::Delete { key, if_version } => {
                let owner = self.kv.get(key).and_then(|entry| entry.session_id);
                let previous_version = self.kv.get(key).map_or(0, |entry| entry.version);
                let outcome = super::delete(&mut self.kv, key, *if_version);
                if matches!(outcome, Outcome::Kv(KvOutcome::Deleted { existed: true })) {
                    self.unbind_key(owner, key);
                    self.emit(EventBody::KvDeleted {
                        key: key.clone(),
                        previous_version,
                    });
                }
                outcome
            }
        }
    }

    /// The session-end hook: deletes the ended session's ephemeral keys (those
    /// still bound to it).
    pub(in crate::sm) fn kv_on_session_end(&mut self, session: &Session) {
        for key in &session.ephemeral_keys {
            let Some(entry) = self.kv.get(key) else {
                continue;
            };
            if entry.session_id == Some(session.id) {
                let previous_version = entry.version;
                self.kv.remove(key);
                self.emit(EventBody::KvExpired {
                    key: key.clone(),
                    previous_version,
                    session_id: session.id,
                });
            }
        }
    }

    fn put_key(
        &mut self,
        key: &str,
        value_json: &str,
        if_version: Option<u64>,
        session_id: Option<SessionId>,
        index: u64,
    ) -> Outcome {
        if let Some(id) = session_id {
            if self.sessions.get(id).is_none() {
                return Outcome::Refused(Refusal::SessionNotFound { session_id: id });
            }
        }
        if !self.kv.contains_key(key) && self.kv.len() >= Replicated::MAX_KEYS {
            return crate::sm::too_many("keys", Replicated::MAX_KEYS);
        }
        let previous_owner = self.kv.get(key).and_then(|entry| entry.session_id);
        let outcome = super::put(&mut self.kv, key, value_json, if_version, session_id, index);
        if matches!(outcome, Outcome::Kv(KvOutcome::Written { .. })) {
            self.unbind_key(previous_owner, key);
            if let Some(session) = session_id.and_then(|id| self.sessions.get_mut(id)) {
                session.ephemeral_keys.insert(key.to_owned());
            }
            let create_index = self.kv.get(key).map_or(index, |entry| entry.create_index);
            self.emit(EventBody::KvPut {
                key: key.to_owned(),
                value: value_json.to_owned(),
                version: index,
                create_index,
                session_id,
            });
        }
        outcome
    }

    fn unbind_key(&mut self, owner: Option<SessionId>, key: &str) {
        if let Some(session) = owner.and_then(|id| self.sessions.get_mut(id)) {
            session.ephemeral_keys.remove(key);
        }
    }
}
