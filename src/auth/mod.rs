//! Who may call what: bearer tokens ([`token`]: signed JWTs with a subject, scopes
//! and an expiry) and scopes ([`scope`]: `admin`, `read`, `agent[:<kind>[:<prefix>]]`
//! and what each allows). A node either checks tokens ([`Auth::Keys`]) or runs open
//! ([`Auth::Open`], loopback dev mode only; see `config`).
//!
//! Which route needs what is the route table's business (`server::routes`); this
//! module decides only whether a caller meets a need. Must not depend on the HTTP
//! layer, storage or Raft.

pub mod scope;
pub mod token;

pub use scope::{Grants, Kind, Need, Scope};
pub use token::{Claims, Keys, TokenError};

use crate::limits::{MAX_VERIFIED_TOKENS, TOKEN_LEEWAY_S};

/// How a node authenticates client requests.
#[derive(Debug, Clone)]
pub enum Auth {
    /// No authentication: every caller may do everything (a single node on
    /// loopback, or explicitly forced; the node says so loudly at start-up).
    Open,
    /// Bearer tokens signed by one of these keys; those already verified are
    /// remembered (`Verified`).
    Keys(Keys, Verified),
}

/// Tokens this node has verified, by their exact text, with the caller each
/// names and its expiry: a token sent again (every request of an agent, and a
/// forwarded request at the leader) is not decoded and its signature not checked
/// again. Only a byte-for-byte equal token hits, so nothing unverified is ever
/// let in; an expired entry is a miss (and the full check then says `expired`).
/// At most [`MAX_VERIFIED_TOKENS`] entries: when full it is emptied. Keys change
/// only with a restart, so the entries never outlive the key that verified them.
#[derive(Debug, Clone, Default)]
pub struct Verified(std::sync::Arc<std::sync::Mutex<VerifiedEntries>>);

/// A verified token's text → the caller it names and its expiry (seconds).
type VerifiedEntries = std::collections::HashMap<Box<str>, (Caller, u64)>;

impl Verified {
    fn get(&self, token: &str, now_s: u64) -> Option<Caller> {
        let entries = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (caller, exp) = entries.get(token)?;
        (now_s <= exp.saturating_add(TOKEN_LEEWAY_S)).then(|| caller.clone())
    }

    fn remember(&self, token: &str, caller: &Caller, exp: u64) {
        let mut entries = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_VERIFIED_TOKENS {
            entries.clear();
        }
        entries.insert(token.into(), (caller.clone(), exp));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// The authenticated caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's subject (`anonymous` on an open node).
    pub subject: String,
    pub grants: Grants,
}

impl Caller {
    /// The caller of every request on an open node.
    pub fn open() -> Caller {
        Caller {
            subject: "anonymous".into(),
            grants: Grants::open(),
        }
    }
}

impl Auth {
    /// Token checking with `keys` (and an empty memory of verified tokens).
    pub fn with_keys(keys: Keys) -> Auth {
        Auth::Keys(keys, Verified::default())
    }

    pub fn is_open(&self) -> bool {
        matches!(self, Auth::Open)
    }

    /// Who sent a request with this `Authorization` header value (if any).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, TokenError> {
        let keys = match self {
            Auth::Open => return Ok(Caller::open()),
            Auth::Keys(keys, verified) => (keys, verified),
        };
        let (keys, verified) = keys;
        let header = authorization.ok_or(TokenError::Missing)?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or(TokenError::Malformed)?
            .trim();
        if let Some(caller) = verified.get(token, token::now_s()) {
            return Ok(caller);
        }
        let claims = keys.verify(token)?;
        let grants = Grants::new(&claims.scopes).map_err(TokenError::BadScope)?;
        let caller = Caller {
            subject: claims.sub,
            grants,
        };
        verified.remember(token, &caller, claims.exp);
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "a-key-that-is-at-least-32-bytes-long";

    fn auth() -> Auth {
        Auth::with_keys(Keys::new(&[KEY.to_string()]).unwrap())
    }

    #[test]
    fn an_open_node_lets_everyone_in_and_a_keyed_one_wants_a_bearer_token() {
        assert_eq!(Auth::Open.authenticate(None), Ok(Caller::open()));
        assert_eq!(auth().authenticate(None), Err(TokenError::Missing));
        assert_eq!(
            auth().authenticate(Some("Basic dXNlcjpwYXNz")),
            Err(TokenError::Malformed)
        );
        let Auth::Keys(keys, _) = auth() else {
            unreachable!()
        };
        let token = keys
            .issue("ops", &["admin".into()], token::now_s(), 60)
            .unwrap();
        let caller = auth()
            .authenticate(Some(&format!("Bearer {token}")))
            .unwrap();
        assert_eq!(caller.subject, "ops");
        assert!(caller.grants.is_admin());
    }

    #[test]
    fn a_verified_token_is_remembered_exactly_and_still_expires() {
        let auth = auth();
        let Auth::Keys(keys, verified) = &auth else {
            unreachable!()
        };
        let now = token::now_s();
        let token = keys.issue("ops", &["read".into()], now, 60).unwrap();
        let header = format!("Bearer {token}");
        let first = auth.authenticate(Some(&header)).unwrap();
        assert_eq!(verified.len(), 1);
        assert_eq!(auth.authenticate(Some(&header)).unwrap(), first);
        assert_eq!(verified.len(), 1, "the second call was a hit");
        // A token that differs by one byte is not a hit: it is checked, and refused.
        let mut tampered = token.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        assert!(auth
            .authenticate(Some(&format!("Bearer {tampered}")))
            .is_err());
        // A remembered token past its expiry is checked again and refused.
        let old = keys.issue("ops", &["read".into()], now - 200, 100).unwrap();
        verified.remember(&old, &first, now - 100);
        assert_eq!(
            auth.authenticate(Some(&format!("Bearer {old}"))),
            Err(TokenError::Expired)
        );
        // The memory stays bounded.
        for i in 0..MAX_VERIFIED_TOKENS + 10 {
            verified.remember(&format!("t{i}"), &first, now + 60);
        }
        assert!(verified.len() <= MAX_VERIFIED_TOKENS);
    }
}
