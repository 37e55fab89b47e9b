//! Scopes and what they allow.
//!
//! A token carries scopes:
//! - `admin`: everything (membership, snapshots, debug, every resource);
//! - `join`: adding members (`POST /v1/cluster/members`, what `serve --join`
//!   sends) and nothing else: a credential to provision nodes with;
//! - `read`: every read of state (GETs), no writes;
//! - `agent`, `agent:<kind>` or `agent:<kind>:<prefix>`: the agent operations
//!   (sessions, claims) and reads and writes of resources of `<kind>` (`kv`, `locks`,
//!   `semaphores`, `barriers`, `elections`, `tasks` — task kinds —, `proposals`,
//!   `txn`, or `*` for all) whose name starts with `<prefix>` (empty: any name).
//!
//! A route says what it needs ([`Need`]); [`Grants::allows`] decides. Pure: no IO,
//! no HTTP types.

use std::fmt;

/// A kind of named resource an agent scope can be limited to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Kv,
    Locks,
    Semaphores,
    Barriers,
    Elections,
    Tasks,
    Proposals,
    Txn,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Kv,
        Kind::Locks,
        Kind::Semaphores,
        Kind::Barriers,
        Kind::Elections,
        Kind::Tasks,
        Kind::Proposals,
        Kind::Txn,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Kv => "kv",
            Kind::Locks => "locks",
            Kind::Semaphores => "semaphores",
            Kind::Barriers => "barriers",
            Kind::Elections => "elections",
            Kind::Tasks => "tasks",
            Kind::Proposals => "proposals",
            Kind::Txn => "txn",
        }
    }

    fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.name() == text)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One scope of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Admin,
    Join,
    Read,
    /// `kind: None` is every kind; `prefix` empty is every name.
    Agent {
        kind: Option<Kind>,
        prefix: String,
    },
}

impl Scope {
    pub fn parse(text: &str) -> Result<Scope, String> {
        let mut parts = text.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("admin"), None, None) => Ok(Scope::Admin),
            (Some("join"), None, None) => Ok(Scope::Join),
            (Some("read"), None, None) => Ok(Scope::Read),
            (Some("agent"), kind, prefix) => {
                let kind = match kind {
                    None | Some("*") => None,
                    Some(name) => Some(Kind::parse(name).ok_or_else(|| {
                        format!("scope {text:?}: unknown kind {name:?} (kv, locks, semaphores, barriers, elections, tasks, proposals, txn or *)")
                    })?),
                };
                let prefix = prefix.unwrap_or("").to_owned();
                Ok(Scope::Agent { kind, prefix })
            }
            _ => Err(format!(
                "unknown scope {text:?} (admin, join, read, agent[:<kind>[:<prefix>]])"
            )),
        }
    }

    fn is_agent(&self) -> bool {
        matches!(self, Scope::Agent { .. })
    }

    /// Whether this agent scope covers resources of `kind` (any name).
    fn agent_of_kind(&self, of: Kind) -> bool {
        matches!(self, Scope::Agent { kind, .. } if kind.is_none_or(|k| k == of))
    }

    /// Whether this agent scope covers resource `name` of `kind`.
    fn agent_covers(&self, of: Kind, name: &str) -> bool {
        matches!(self, Scope::Agent { kind, prefix }
            if kind.is_none_or(|k| k == of) && name.starts_with(prefix.as_str()))
    }
}

/// What a request needs of its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Anyone, with or without a token (`/health`, `/ready`).
    Public,
    /// `admin`.
    Admin,
    /// `admin` or `join`: adding a member.
    Join,
    /// A read of state no prefix names (cluster facts, session and task lists,
    /// request lookups): `admin`, `read` or any agent scope.
    Read,
    /// A read of resource `name` of `kind`: `admin`, `read`, or an agent scope
    /// covering it.
    ReadOf(Kind, String),
    /// An agent operation no prefix names (sessions, claims): `admin` or any agent
    /// scope.
    Agent,
    /// An operation on a resource of `kind` whose name the handler checks (a task
    /// kind in the body): `admin` or an agent scope of that kind.
    AgentKind(Kind),
    /// A write to resource `name` of `kind`: `admin` or an agent scope covering it.
    AgentOf(Kind, String),
}

impl fmt::Display for Need {
    /// What would meet the need, in scope words (for a 403's message).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Need::Public => f.write_str("nothing"),
            Need::Admin => f.write_str("admin"),
            Need::Join => f.write_str("join"),
            Need::Read => f.write_str("read or an agent scope"),
            Need::ReadOf(kind, name) => {
                write!(f, "read, or agent:{kind} with a prefix of {name:?}")
            }
            Need::Agent => f.write_str("an agent scope"),
            Need::AgentKind(kind) => write!(f, "agent:{kind}"),
            Need::AgentOf(kind, name) => write!(f, "agent:{kind} with a prefix of {name:?}"),
        }
    }
}

/// The scopes of one caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants(Vec<Scope>);

impl Grants {
    /// The grants of a token's scopes; an unknown scope refuses the whole token.
    pub fn new(scopes: &[String]) -> Result<Grants, String> {
        scopes
            .iter()
            .map(|s| Scope::parse(s))
            .collect::<Result<_, _>>()
            .map(Grants)
    }

    /// Everything: a node running without authentication (loopback dev mode).
    pub fn open() -> Grants {
        Grants(vec![Scope::Admin])
    }

    pub fn is_admin(&self) -> bool {
        self.0.contains(&Scope::Admin)
    }

    /// Whether these grants read every resource (`admin` or `read`).
    pub fn reads_everything(&self) -> bool {
        self.is_admin() || self.0.contains(&Scope::Read)
    }

    /// `allows(&Need::ReadOf(kind, name))` without building the need (a watch
    /// asks it of every event it might send).
    pub fn may_read(&self, kind: Kind, name: &str) -> bool {
        self.reads_everything() || self.0.iter().any(|s| s.agent_covers(kind, name))
    }

    /// Whether these grants meet `need`.
    pub fn allows(&self, need: &Need) -> bool {
        if self.is_admin() || *need == Need::Public {
            return true;
        }
        let read = self.0.contains(&Scope::Read);
        let any = |test: &dyn Fn(&Scope) -> bool| self.0.iter().any(test);
        match need {
            Need::Public => true,
            Need::Admin => false,
            Need::Join => self.0.contains(&Scope::Join),
            Need::Read => read || any(&Scope::is_agent),
            Need::ReadOf(kind, name) => read || any(&|s| s.agent_covers(*kind, name)),
            Need::Agent => any(&Scope::is_agent),
            Need::AgentKind(kind) => any(&|s| s.agent_of_kind(*kind)),
            Need::AgentOf(kind, name) => any(&|s| s.agent_covers(*kind, name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(scopes: &[&str]) -> Grants {
        Grants::new(&scopes.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn of(kind: Kind, name: &str) -> Need {
        Need::AgentOf(kind, name.into())
    }

    #[test]
    fn join_adds_members_and_nothing_else() {
        let join = grants(&["join"]);
        assert!(join.allows(&Need::Join));
        for need in [Need::Admin, Need::Read, Need::Agent, of(Kind::Kv, "x")] {
            assert!(!join.allows(&need), "{need}");
        }
        assert!(grants(&["admin"]).allows(&Need::Join));
        assert!(!grants(&["read", "agent"]).allows(&Need::Join));
    }

    #[test]
    fn scopes_parse_and_unknown_ones_are_refused() {
        assert_eq!(Scope::parse("admin"), Ok(Scope::Admin));
        assert_eq!(Scope::parse("read"), Ok(Scope::Read));
        assert_eq!(
            Scope::parse("agent:kv:jobs/"),
            Ok(Scope::Agent {
                kind: Some(Kind::Kv),
                prefix: "jobs/".into()
            })
        );
        assert_eq!(
            Scope::parse("agent"),
            Ok(Scope::Agent {
                kind: None,
                prefix: String::new()
            })
        );
        assert!(Scope::parse("agent:keys").is_err());
        assert!(Scope::parse("root").is_err());
        assert!(Scope::parse("admin:x").is_err());
    }

    #[test]
    fn admin_may_do_everything_and_read_only_reads() {
        let admin = grants(&["admin"]);
        let read = grants(&["read"]);
        for need in [
            Need::Admin,
            Need::Read,
            Need::Agent,
            of(Kind::Locks, "x"),
            Need::ReadOf(Kind::Kv, "a".into()),
        ] {
            assert!(admin.allows(&need), "{need:?}");
        }
        assert!(read.allows(&Need::Read));
        assert!(read.allows(&Need::ReadOf(Kind::Kv, "anything".into())));
        assert!(!read.allows(&Need::Agent));
        assert!(!read.allows(&of(Kind::Kv, "a")));
        assert!(!read.allows(&Need::Admin));
    }

    #[test]
    fn an_agent_scope_covers_its_kind_and_prefix_only() {
        let agent = grants(&["agent:kv:jobs/", "agent:locks"]);
        assert!(agent.allows(&of(Kind::Kv, "jobs/7")));
        assert!(!agent.allows(&of(Kind::Kv, "config/db")));
        assert!(agent.allows(&of(Kind::Locks, "anything")));
        assert!(!agent.allows(&of(Kind::Semaphores, "jobs/7")));
        assert!(agent.allows(&Need::ReadOf(Kind::Kv, "jobs/".into())));
        assert!(!agent.allows(&Need::ReadOf(Kind::Kv, "".into())));
        assert!(agent.allows(&Need::Agent));
        assert!(agent.allows(&Need::Read));
        assert!(agent.allows(&Need::AgentKind(Kind::Kv)));
        assert!(!agent.allows(&Need::AgentKind(Kind::Tasks)));
        assert!(!agent.allows(&Need::Admin));
        let every = grants(&["agent:*:team-a/"]);
        assert!(every.allows(&of(Kind::Elections, "team-a/leader")));
        assert!(!every.allows(&of(Kind::Elections, "team-b/leader")));
    }

    #[test]
    fn public_needs_nothing() {
        assert!(grants(&[]).allows(&Need::Public));
        assert!(!grants(&[]).allows(&Need::Read));
    }
}
