//! Which cluster a data directory belongs to: the cluster id, stored in the `meta`
//! tree at bootstrap (or when a joining node first hears from its cluster) and sent
//! on every Raft RPC (`transport`). A node refuses to start on a data directory of
//! another cluster, and refuses RPCs of another cluster: before this an orphaned
//! node of an earlier run, sharing the secret and reusing the ports, could answer a
//! new cluster's RPCs.
//!
//! Depends only on sled and `codec`.

use std::sync::{Arc, RwLock};

use super::OpenError;
use crate::codec;

const CLUSTER_ID_KEY: &[u8] = b"cluster_id";

/// Longest cluster id, in bytes.
pub const MAX_CLUSTER_ID_BYTES: usize = 64;

/// Whether `id` is a well-formed cluster id: 1..=64 of `[A-Za-z0-9._-]`.
pub fn valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CLUSTER_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The id a brand-new cluster with no configured id starts with: derived from the
/// secret and the initial members, so every initial member derives the same one
/// (a one-way hash: it reveals nothing about the secret).
pub fn derive(secret: &str, initial_members: &[u64]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(b"conclave cluster id\0");
    hasher.update(secret.as_bytes());
    for member in initial_members {
        hasher.update(member.to_be_bytes());
    }
    let digest = hasher.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// This node's cluster id (`None` until a joining node first hears from its
/// cluster).
#[derive(Debug)]
pub struct ClusterIdentity {
    db: sled::Db,
    meta: sled::Tree,
    /// Shared, not cloned, by every outgoing RPC (`get`).
    current: RwLock<Option<Arc<str>>>,
}

impl ClusterIdentity {
    /// Reads the stored id. A stored id that differs from `configured` is refused;
    /// with none stored, `configured` (else `bootstrap`, a new cluster's derived id)
    /// is stored and flushed before anything else happens.
    pub fn open(
        db: &sled::Db,
        path: &str,
        configured: Option<&str>,
        bootstrap: Option<String>,
    ) -> Result<Self, OpenError> {
        let sled_error = |source| OpenError::Sled {
            path: path.to_owned(),
            source,
        };
        let meta = db.open_tree("meta").map_err(sled_error)?;
        let stored: Option<String> = match meta.get(CLUSTER_ID_KEY).map_err(sled_error)? {
            Some(bytes) => Some(codec::decode(&bytes).map_err(|source| OpenError::Corrupt {
                path: path.to_owned(),
                source,
            })?),
            None => None,
        };
        let current = match (stored, configured) {
            (Some(stored), Some(configured)) if stored != configured => {
                return Err(OpenError::OtherCluster {
                    path: path.to_owned(),
                    stored,
                    configured: configured.to_owned(),
                })
            }
            (Some(stored), _) => Some(stored),
            (None, configured) => match configured.map(str::to_owned).or(bootstrap) {
                Some(id) => {
                    let bytes = codec::encode(&id).expect("a string always encodes");
                    meta.insert(CLUSTER_ID_KEY, bytes).map_err(sled_error)?;
                    // FSYNC: the cluster id is durable before the node serves anything.
                    db.flush().map_err(sled_error)?;
                    Some(id)
                }
                None => None,
            },
        };
        Ok(Self {
            db: db.clone(),
            meta,
            current: RwLock::new(current.map(Arc::from)),
        })
    }

    /// The cluster id, if known yet.
    pub fn get(&self) -> Option<Arc<str>> {
        self.current.read().expect("not poisoned").clone()
    }

    /// Checks a peer's cluster id against this node's. A node with none yet (a
    /// joiner) adopts the first one it hears, durably, before it answers.
    pub async fn admit(&self, sender: Option<&str>) -> Result<(), Mismatch> {
        let mine = self.get();
        match (mine, sender) {
            (Some(mine), Some(sender)) if &*mine == sender => Ok(()),
            (Some(mine), sender) => Err(Mismatch {
                this: mine.to_string(),
                sender: sender.map(str::to_owned),
            }),
            (None, None) => Ok(()),
            (None, Some(sender)) => {
                if !valid(sender) {
                    return Err(Mismatch {
                        this: String::new(),
                        sender: Some(sender.to_owned()),
                    });
                }
                let refused = |this: String| Mismatch {
                    this,
                    sender: Some(sender.to_owned()),
                };
                let bytes = codec::encode(&sender.to_owned()).expect("a string always encodes");
                // The first id heard wins, on disk too (two first RPCs may race).
                let swapped = self
                    .meta
                    .compare_and_swap(CLUSTER_ID_KEY, None::<&[u8]>, Some(bytes))
                    .map_err(|_| refused(String::new()))?;
                let adopted = match swapped {
                    Ok(()) => sender.to_owned(),
                    Err(existing) => existing
                        .current
                        .and_then(|bytes| codec::decode::<String>(&bytes).ok())
                        .unwrap_or_default(),
                };
                // FSYNC: adopted durably before the first RPC of the cluster is answered.
                self.db
                    .flush_async()
                    .await
                    .map_err(|_| refused(String::new()))?;
                *self.current.write().expect("not poisoned") = Some(Arc::from(adopted.as_str()));
                if adopted == sender {
                    Ok(())
                } else {
                    Err(refused(adopted))
                }
            }
        }
    }
}

/// A peer of another cluster (or one that sent none).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this node belongs to cluster {this:?}; the sender to {sender:?}")]
pub struct Mismatch {
    pub this: String,
    pub sender: Option<String>,
}
