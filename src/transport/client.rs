//! The Raft network client: openraft's RPCs to peers over HTTP with bincode bodies.
//!
//! Every call carries the cluster secret, the cluster id (once known), the target
//! node id and the format it is encoded in (the cluster's active format,
//! `raft_types::Formats`) as headers (checked by `transport::server`); each reply
//! says which format the peer speaks, recorded for the upgrade. One pooled `reqwest::Client`
//! per node is shared by every peer client, so `new_client` (which openraft calls
//! inline on every election and read-index round) is a cheap clone. A peer that
//! that cannot be connected to, or that refuses the call with an HTTP error status,
//! is `Unreachable` (openraft then backs off); any other failure is a `Network`
//! error (openraft retries at once).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{CLUSTER_HEADER, FORMAT_HEADER, SECRET_HEADER, SPEAKS_HEADER, TARGET_HEADER};
use crate::codec;
use crate::raft_types::{Member, NodeId, TypeConfig};

/// How long openraft waits before retrying a peer it could not connect to.
const UNREACHABLE_BACKOFF: Duration = Duration::from_millis(200);

/// Builds peer clients. One per node.
#[derive(Clone)]
pub struct Network {
    http: reqwest::Client,
    secret: Arc<str>,
    identity: Arc<crate::store::ClusterIdentity>,
    dial_overrides: Arc<BTreeMap<NodeId, String>>,
    /// `http`, or `https` with `[tls]` (every node of a cluster uses the same).
    scheme: &'static str,
    shared: Shared,
}

/// What a node's peer clients share with the rest of the node.
#[derive(Clone)]
pub struct Shared {
    /// What peers acknowledged in this leader's term (see `PeerAcks`): kept across
    /// clients, which openraft rebuilds after errors.
    pub acks: crate::raft_types::PeerAcks,
    pub formats: crate::raft_types::Formats,
    /// The log's durable point: the commit index sent never passes it
    /// (`store::durable`, rule 2).
    pub durable: Arc<crate::store::durable::Durable>,
}

/// How long an AppendEntries waits for this leader's own flush to cover the commit
/// index it carries before sending a lower one (the next RPC carries the rest).
const COMMIT_FLUSH_WAIT: Duration = Duration::from_millis(50);

impl Network {
    pub fn new(
        http: reqwest::Client,
        secret: &str,
        identity: Arc<crate::store::ClusterIdentity>,
        dial_overrides: BTreeMap<NodeId, String>,
        scheme: &'static str,
        shared: Shared,
    ) -> Self {
        Self {
            http,
            secret: secret.into(),
            identity,
            dial_overrides: Arc::new(dial_overrides),
            scheme,
            shared,
        }
    }
}

/// Asks a peer to call an election (a leadership transfer's last step:
/// `POST /raft/campaign`) or tells it it was removed (`POST /raft/removed`); cluster
/// secret, the asking leader's term as the body.
#[derive(Clone)]
pub struct Campaigner {
    http: reqwest::Client,
    secret: Arc<str>,
    identity: Arc<crate::store::ClusterIdentity>,
    dial_overrides: Arc<BTreeMap<NodeId, String>>,
    scheme: &'static str,
    formats: crate::raft_types::Formats,
}

impl Network {
    /// A campaigner dialing peers as this network does.
    pub fn campaigner(&self) -> Campaigner {
        Campaigner {
            http: self.http.clone(),
            secret: self.secret.clone(),
            identity: self.identity.clone(),
            dial_overrides: self.dial_overrides.clone(),
            scheme: self.scheme,
            formats: self.shared.formats.clone(),
        }
    }
}

impl Campaigner {
    /// Sends node `target` (peer listener `raft_addr`) `path` (`/raft/campaign`:
    /// call an election; `/raft/removed`: you were removed) as the leader of
    /// `term`; `Err` says why it was not done.
    pub async fn ask(
        &self,
        path: &str,
        target: NodeId,
        raft_addr: &str,
        term: u64,
    ) -> Result<(), String> {
        let timeout = Duration::from_secs(2);
        match self.post(path, target, raft_addr, &term, timeout).await? {
            true => Ok(()),
            false => Err(format!("node {target} is no longer in term {term}")),
        }
    }

    /// Asks leader `target` (peer listener `raft_addr`) for its read index
    /// (`POST /raft/read_index`, an empty body): its answer, or `Err` when the call
    /// failed (unreachable, refused, cut), so that nothing is known.
    pub async fn read_index(
        &self,
        target: NodeId,
        raft_addr: &str,
        timeout: Duration,
    ) -> Result<Result<u64, crate::replica::read_index::ReadError>, String> {
        self.post("/raft/read_index", target, raft_addr, &(), timeout)
            .await
    }

    /// One peer RPC: `body` encoded to node `target`'s `path` with the cluster's
    /// headers, within `timeout`; the decoded 200 reply, or why there is none.
    async fn post<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        target: NodeId,
        raft_addr: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, String> {
        let addr = self
            .dial_overrides
            .get(&target)
            .map_or(raft_addr, String::as_str);
        let body = codec::encode(body).map_err(|e| e.to_string())?;
        let mut post = self.http.post(format!("{}://{addr}{path}", self.scheme));
        if let Some(cluster) = self.identity.get() {
            post = post.header(CLUSTER_HEADER, &*cluster);
        }
        let response = post
            .header(SECRET_HEADER, &*self.secret)
            .header(TARGET_HEADER, target.to_string())
            .header(FORMAT_HEADER, self.formats.active().to_string())
            .timeout(timeout)
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("node {target} refused: HTTP {status}"));
        }
        codec::decode(&bytes).map_err(|e| e.to_string())
    }
}

/// A client for one peer.
pub struct PeerClient {
    http: reqwest::Client,
    secret: Arc<str>,
    identity: Arc<crate::store::ClusterIdentity>,
    target: NodeId,
    base_url: String,
    shared: Shared,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerClient {
        // The peer listener, never the client API.
        let addr = self.dial_overrides.get(&target).unwrap_or(&node.raft_addr);
        PeerClient {
            http: self.http.clone(),
            secret: self.secret.clone(),
            identity: self.identity.clone(),
            target,
            base_url: format!("{}://{addr}", self.scheme),
            shared: self.shared.clone(),
        }
    }
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, Member, RaftError<NodeId, E>>>;

impl PeerClient {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        request: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = codec::encode(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut post = self.http.post(format!("{}{path}", self.base_url));
        if let Some(cluster) = self.identity.get() {
            post = post.header(CLUSTER_HEADER, &*cluster);
        }
        let response = post
            .header(SECRET_HEADER, &*self.secret)
            .header(TARGET_HEADER, self.target.to_string())
            .header(FORMAT_HEADER, self.shared.formats.active().to_string())
            .timeout(option.hard_ttl())
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    RPCError::Unreachable(Unreachable::new(&e))
                } else {
                    RPCError::Network(NetworkError::new(&e))
                }
            })?;
        let status = response.status();
        if status.is_success() {
            // A node of the previous release says nothing: it speaks that format.
            let speaks = response
                .headers()
                .get(SPEAKS_HEADER)
                .and_then(|value| value.to_str().ok()?.parse().ok())
                .unwrap_or(codec::PREVIOUS_FORMAT_VERSION);
            self.shared.formats.heard(self.target, speaks);
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes);
            let error = std::io::Error::other(format!(
                "{path} to node {}: HTTP {status}: {text}",
                self.target
            ));
            // A peer that refuses us (wrong secret, wrong node, other format) will
            // keep refusing: treat it as unreachable so openraft backs off instead of
            // retrying at once (and flooding the log).
            return Err(RPCError::Unreachable(Unreachable::new(&error)));
        }
        let result: Result<Resp, RaftError<NodeId, E>> =
            codec::decode(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        mut request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        let term = request.vote.leader_id().term;
        let prev = request.prev_log_id.map(|log_id| log_id.index);
        let last = request.entries.last().map(|e| e.log_id.index).or(prev);
        // Followers learn of a commit only once it is on this leader's disk too
        // (`store::durable`, rule 2); its flush began before the entries were sent,
        // so this rarely waits.
        request.leader_commit = self
            .shared
            .durable
            .commit_to_send(request.leader_commit, COMMIT_FLUSH_WAIT)
            .await;
        let response: AppendEntriesResponse<NodeId> =
            self.call("/raft/append", &request, &option).await?;
        let matched = self.shared.acks.get(self.target, term);
        match &response {
            AppendEntriesResponse::Success => {
                if let Some(last) = last {
                    self.shared.acks.record(self.target, term, last);
                }
            }
            AppendEntriesResponse::PartialSuccess(Some(upto)) => {
                self.shared.acks.record(self.target, term, upto.index);
            }
            // A peer that held index `matched` for this stream now says it has not
            // got `prev` ≤ it: its log went back (its directory was wiped, and it
            // came back at the same address under the same id). openraft panics on
            // that ("follower log reversion"), taking the leader down; answer as if
            // the peer were unreachable instead, until an operator removes it and
            // re-adds it (or it rejoins with `--join`, which does that).
            AppendEntriesResponse::Conflict if prev.is_some() && prev <= matched => {
                tracing::error!(
                    node = self.target,
                    matched,
                    "node {} lost log entries it had acknowledged (wiped?): not replicating to it; remove it and add it again (or restart it with --join)",
                    self.target
                );
                let error = std::io::Error::other("the peer's log went back");
                return Err(RPCError::Unreachable(Unreachable::new(&error)));
            }
            _ => {}
        }
        Ok(response)
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let term = request.vote.leader_id().term;
        let last = request.meta.last_log_id.map(|log_id| log_id.index);
        let done = request.done;
        let response = self.call("/raft/snapshot", &request, &option).await?;
        if let (true, Some(last)) = (done, last) {
            self.shared.acks.record(self.target, term, last);
        }
        Ok(response)
    }

    async fn vote(
        &mut self,
        request: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.call("/raft/vote", &request, &option).await
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(UNREACHABLE_BACKOFF))
    }
}
