//! Bearer tokens: JWTs signed with HS256 (the `jsonwebtoken` crate), carrying a
//! subject (`sub`), scopes (`scopes`, see [`super::scope`]), issue and expiry
//! times (`iat`, `exp`, seconds since the Unix epoch).
//!
//! A node holds a list of keys ([`Keys`]): the first signs what `conclave token
//! issue` mints, and a token signed by any of them is accepted, so a key can be
//! rotated by adding the new one first, re-issuing tokens, then dropping the old.
//! Verification reads the wall clock (for `exp`); this is the HTTP edge, never the
//! state machine.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::limits::{MAX_TOKEN_BYTES, MIN_AUTH_KEY_BYTES, TOKEN_LEEWAY_S};

/// What a token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who the bearer is (an agent, a service, an operator).
    pub sub: String,
    /// What it may do: `admin`, `read`, `agent[:<kind>[:<prefix>]]`.
    pub scopes: Vec<String>,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: u64,
}

/// Why a token was not accepted (all answered 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no bearer token (send Authorization: Bearer <token>)")]
    Missing,
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's signature matches none of this cluster's keys")]
    BadSignature,
    #[error("the token expired")]
    Expired,
    #[error("the token's scopes are invalid: {0}")]
    BadScope(String),
}

/// The signing and verifying keys of a node (the first signs).
#[derive(Clone)]
pub struct Keys {
    encoding: EncodingKey,
    decoding: Vec<DecodingKey>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} keys)", self.decoding.len())
    }
}

impl Keys {
    /// Keys from their text (each used as raw bytes, at least
    /// [`MIN_AUTH_KEY_BYTES`] long).
    pub fn new(texts: &[String]) -> Result<Keys, String> {
        let Some(first) = texts.first() else {
            return Err("no auth keys".into());
        };
        if let Some(short) = texts.iter().position(|k| k.len() < MIN_AUTH_KEY_BYTES) {
            return Err(format!(
                "auth key {} is shorter than {MIN_AUTH_KEY_BYTES} bytes",
                short + 1
            ));
        }
        let text = |e: jsonwebtoken::errors::Error| e.to_string();
        Ok(Keys {
            encoding: EncodingKey::from_secret(first.as_bytes()).map_err(text)?,
            decoding: texts
                .iter()
                .map(|k| DecodingKey::from_secret(k.as_bytes()).map_err(text))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Mints a token for `sub` with `scopes`, valid for `ttl_s` seconds from
    /// `now_s`.
    pub fn issue(
        &self,
        sub: &str,
        scopes: &[String],
        now_s: u64,
        ttl_s: u64,
    ) -> Result<String, String> {
        for scope in scopes {
            super::scope::Scope::parse(scope)?;
        }
        let claims = Claims {
            sub: sub.to_owned(),
            scopes: scopes.to_vec(),
            iat: now_s,
            exp: now_s.saturating_add(ttl_s),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| e.to_string())
    }

    /// The claims of `token` if one of the keys signed it and it has not expired.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = TOKEN_LEEWAY_S;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let mut last = TokenError::BadSignature;
        for key in &self.decoding {
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(error) => match error.kind() {
                    ErrorKind::InvalidSignature => last = TokenError::BadSignature,
                    // The signature matched (expiry is checked after it).
                    ErrorKind::ExpiredSignature => return Err(TokenError::Expired),
                    _ => return Err(TokenError::Malformed),
                },
            }
        }
        Err(last)
    }
}

/// Seconds since the Unix epoch, from the wall clock.
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Parses a duration like `90s`, `30m`, `24h`, `7d` (or plain seconds).
pub fn parse_ttl(text: &str) -> Result<u64, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30m or 24h"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit is one of s, m, h, d")),
    };
    number
        .checked_mul(unit)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(texts: &[&str]) -> Keys {
        Keys::new(&texts.iter().map(|t| t.to_string()).collect::<Vec<_>>()).unwrap()
    }

    const A: &str = "a-key-that-is-at-least-32-bytes-long";
    const B: &str = "another-key-at-least-32-bytes-long!!";

    #[test]
    fn a_token_round_trips_with_its_claims() {
        let token = keys(&[A])
            .issue("agent-7", &["agent:kv:jobs/".into()], now_s(), 60)
            .unwrap();
        let claims = keys(&[A]).verify(&token).unwrap();
        assert_eq!(claims.sub, "agent-7");
        assert_eq!(claims.scopes, vec!["agent:kv:jobs/".to_string()]);
    }

    #[test]
    fn any_listed_key_verifies_and_the_first_signs() {
        let old = keys(&[A])
            .issue("x", &["read".into()], now_s(), 60)
            .unwrap();
        let rotated = keys(&[B, A]);
        assert!(rotated.verify(&old).is_ok(), "the old key still verifies");
        let new = rotated.issue("x", &["read".into()], now_s(), 60).unwrap();
        assert_eq!(keys(&[A]).verify(&new), Err(TokenError::BadSignature));
        assert!(keys(&[B]).verify(&new).is_ok());
    }

    #[test]
    fn expired_malformed_and_foreign_tokens_are_refused() {
        let expired = keys(&[A])
            .issue("x", &["read".into()], now_s() - 3_600, 60)
            .unwrap();
        assert_eq!(keys(&[A]).verify(&expired), Err(TokenError::Expired));
        assert_eq!(keys(&[A]).verify("not.a.jwt"), Err(TokenError::Malformed));
        let foreign = keys(&[B])
            .issue("x", &["read".into()], now_s(), 60)
            .unwrap();
        assert_eq!(keys(&[A]).verify(&foreign), Err(TokenError::BadSignature));
    }

    #[test]
    fn short_keys_and_bad_scopes_are_refused() {
        assert!(Keys::new(&["short".into()]).is_err());
        assert!(keys(&[A])
            .issue("x", &["root".into()], now_s(), 60)
            .is_err());
    }

    #[test]
    fn ttls_read_like_durations() {
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert_eq!(parse_ttl("30m"), Ok(1_800));
        assert_eq!(parse_ttl("24h"), Ok(86_400));
        assert_eq!(parse_ttl("7d"), Ok(604_800));
        assert_eq!(parse_ttl("15"), Ok(15));
        assert!(parse_ttl("1y").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
