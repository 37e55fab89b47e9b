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

/// How a node authenticates client requests.
#[derive(Debug, Clone)]
pub enum Auth {
    /// No authentication: every caller may do everything (a single node on
    /// loopback, or explicitly forced; the node says so loudly at start-up).
    Open,
    /// Bearer tokens signed by one of these keys.
    Keys(Keys),
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
    pub fn is_open(&self) -> bool {
        matches!(self, Auth::Open)
    }

    /// Who sent a request with this `Authorization` header value (if any).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, TokenError> {
        let keys = match self {
            Auth::Open => return Ok(Caller::open()),
            Auth::Keys(keys) => keys,
        };
        let header = authorization.ok_or(TokenError::Missing)?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or(TokenError::Malformed)?
            .trim();
        let claims = keys.verify(token)?;
        let grants = Grants::new(&claims.scopes).map_err(TokenError::BadScope)?;
        Ok(Caller {
            subject: claims.sub,
            grants,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "a-key-that-is-at-least-32-bytes-long";

    fn auth() -> Auth {
        Auth::Keys(Keys::new(&[KEY.to_string()]).unwrap())
    }

    #[test]
    fn an_open_node_lets_everyone_in_and_a_keyed_one_wants_a_bearer_token() {
        assert_eq!(Auth::Open.authenticate(None), Ok(Caller::open()));
        assert_eq!(auth().authenticate(None), Err(TokenError::Missing));
        assert_eq!(
            auth().authenticate(Some("Basic dXNlcjpwYXNz")),
            Err(TokenError::Malformed)
        );
        let Auth::Keys(keys) = auth() else {
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
}
