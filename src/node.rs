//! The composition root: builds storage, network, Raft, the proposer, the read-index
//! batcher and the HTTP server from a [`NodeConfig`], and runs them until shutdown.
//!
//! IO edges are injected: the caller passes the bound listeners (the client API's
//! and the peers') and the shutdown future, so tests and the binary share this
//! path. The two listeners serve two routers that share nothing: the client API
//! (`server`, bearer tokens) and `/raft/*` (`transport`, the cluster secret only).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};

use crate::config::NodeConfig;
use crate::raft_types::Raft;
use crate::replica::clock::LeaderClock;
use crate::replica::Replica;
use crate::serve;
use crate::server::{self, App};
use crate::store;
use crate::transport::{self, Network, Peers};

/// Starting or running a node failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("creating data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Open(#[from] store::OpenError),
    #[error("building the HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
    #[error("starting raft: {0}")]
    Raft(String),
    #[error("serving HTTP: {0}")]
    Serve(std::io::Error),
}

/// Runs a node, the client API on `listener` and `/raft/*` on `raft_listener`,
/// until `shutdown` resolves.
pub async fn run(
    config: NodeConfig,
    listener: tokio::net::TcpListener,
    raft_listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| NodeError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let db = store::open_db(&config.data_dir, &config.store)?;
    let members: Vec<u64> = config.initial_members.keys().copied().collect();
    let bootstrap =
        (!members.is_empty()).then(|| store::identity::derive(&config.cluster_secret, &members));
    let identity = Arc::new(store::ClusterIdentity::open(
        &db,
        &config.data_dir.display().to_string(),
        config.cluster_id.as_deref(),
        bootstrap,
    )?);
    let hub = crate::watch::Hub::new(crate::watch::HubLimits::of(&config.limits));
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let observer: Arc<dyn store::ApplyObserver> = metrics.clone();
    let (log_store, state_machine) =
        store::open(&db, &config.data_dir, hub.clone(), Some(observer))?;
    // A leader's own appends flush in the background; nothing is applied before
    // it is on this node's disk (`store::durable`).
    let log_store = log_store.owned_by(config.node_id);
    let state_machine = state_machine.applying_when_durable(log_store.durable());

    let mut http = reqwest::Client::builder()
        .tcp_nodelay(true)
        // Under the peers' keep-alive idle timeout (their header-read timeout), so a
        // pooled connection is not reused just as the peer closes it.
        .pool_idle_timeout(Duration::from_millis(
            config.limits.header_read_timeout_ms / 3,
        ))
        .connect_timeout(Duration::from_millis(config.raft.election_timeout_min));
    if let Some(tls) = &config.tls {
        // Dials peers and the leader over HTTPS, trusting only `[tls] ca`.
        http = tls.client(http)?;
    }
    let http = http.build()?;
    let scheme = crate::tls::scheme(config.tls.as_deref());
    let acks = crate::raft_types::PeerAcks::default();
    let formats = state_machine.formats();
    let network = Network::new(
        http.clone(),
        &config.cluster_secret,
        identity.clone(),
        config.peer_dial_addrs.clone(),
        scheme,
        transport::client::Shared {
            acks: acks.clone(),
            formats: formats.clone(),
            durable: log_store.durable(),
        },
    );
    let campaigner = network.campaigner();
    let leader_reads = campaigner.clone();
    let read_index: crate::replica::read_index::LeaderCall =
        Arc::new(move |leader, raft_addr, timeout| {
            let leader_reads = leader_reads.clone();
            Box::pin(async move { leader_reads.read_index(leader, &raft_addr, timeout).await })
        });
    let peer_call: server::PeerCall = Arc::new(move |path, target, raft_addr, term| {
        let campaigner = campaigner.clone();
        Box::pin(async move { campaigner.ask(path, target, &raft_addr, term).await })
    });
    let removed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let raft = Raft::new(
        config.node_id,
        Arc::new(config.raft.clone()),
        network,
        log_store,
        state_machine.clone(),
    )
    .await
    .map_err(|e| NodeError::Raft(e.to_string()))?;
    // Whether this node starts with empty storage (a `--join` says so).
    let fresh = !raft.is_initialized().await.unwrap_or(true);
    initialize_if_new(&raft, &config).await?;

    let clock = Arc::new(
        LeaderClock::new(config.clock_offset_endpoint)
            .with_unbounded_bug(config.unbounded_clock_bug),
    );
    let replica = Replica::start(
        config.node_id,
        raft.clone(),
        state_machine,
        &config.limits,
        clock,
        config.stale_reads_bug,
        crate::replica::PeerNotes {
            acks,
            removed: removed.clone(),
            read_index,
        },
        metrics.proposer.clone(),
    );
    tokio::spawn(crate::metrics::raft::count_changes(
        raft.metrics(),
        metrics.clone(),
    ));
    let app = Arc::new(App {
        node_id: config.node_id,
        replica,
        http: http.clone(),
        forward_dial_addrs: config.forward_dial_addrs.clone(),
        limits: config.limits.clone(),
        auth: config.auth.clone(),
        identity: identity.clone(),
        admission: crate::server::admission::Admission::new(&config.limits, &config.admission),
        scheme,
        peer_call,
        min_voters: config.min_voters,
        metrics,
        request_ids: server::observe::RequestIds::new(config.node_id),
    });
    tracing::info!(node_id = config.node_id, cluster_id = identity.get().as_deref().unwrap_or("(adopted from the first peer)"), addr = %config.listen_addr, raft_addr = %config.raft_listen_addr, data_dir = %config.data_dir.display(), "serving");
    match &config.tls {
        Some(tls) => tracing::info!(
            peer_client_auth = tls.peer_client_auth,
            "TLS on both listeners; dialing peers with [tls] ca as the only roots"
        ),
        None => tracing::warn!("TLS is off: client and peer traffic is plain HTTP (see [tls])"),
    }
    if crate::config::TEST_SWITCHES_BUILT {
        tracing::warn!(
            "THIS BUILD HAS TEST SWITCHES (cargo feature test-switches): [debug] inject_bug \
             and clock_offset_endpoint can plant bugs; never run it in production"
        );
    }
    if config.auth.is_open() {
        tracing::warn!(
            addr = %config.listen_addr,
            "AUTHENTICATION IS OFF: every caller may do everything, membership changes \
             included. Set [auth] keys (or {}) to require tokens; see docs/security.md",
            crate::config::AUTH_KEYS_ENV
        );
    }
    let peers = Arc::new(Peers {
        node_id: config.node_id,
        raft: raft.clone(),
        cluster_secret: config.cluster_secret.clone(),
        identity: identity.clone(),
        max_body_bytes: max_raft_body_bytes(&config),
        max_snapshot_bytes: config.limits.max_snapshot_bytes as u64,
        snapshot_receipt: Default::default(),
        removed,
        read_timeout: std::time::Duration::from_millis(config.limits.read_timeout_ms),
    });
    // Two listeners, two routers: a client route is a 404 on the peer listener and
    // `/raft/*` a 404 on the client one.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let leaving = app.clone();
    tokio::spawn(async move {
        shutdown.await;
        // A leader hands over before it goes (SIGTERM, Ctrl-C), so a rolling
        // restart costs a transfer, not an election timeout. Bounded; on failure
        // the others elect as after a crash.
        let others = leaving
            .replica
            .raft_facts()
            .await
            .members
            .iter()
            .any(|m| m.voter && m.id != leaving.node_id);
        if leaving.replica.is_leader() && others {
            match server::cluster::transfer(&leaving, None).await {
                Ok(to) => tracing::info!(to, "stopping: handed leadership over"),
                Err(error) => tracing::warn!("stopping without handing leadership over: {error}"),
            }
        }
        // Watch streams never finish on their own: end them so the listener's
        // graceful shutdown does not wait out its grace period for them.
        hub.close();
        let _ = stop.send(true);
    });
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let limits = &config.limits;
    let client_hygiene = serve::Hygiene {
        max_connections: serve::fit_to_descriptors(
            limits.max_connections,
            limits.max_peer_connections,
        ),
        header_read_timeout: Duration::from_millis(limits.header_read_timeout_ms),
        body_read_timeout: Duration::from_millis(limits.body_read_timeout_ms),
        max_body_bytes: limits.max_body_bytes,
    };
    let peer_hygiene = serve::Hygiene {
        max_connections: limits.max_peer_connections,
        max_body_bytes: peers.max_body_bytes,
        ..client_hygiene
    };
    if client_hygiene.max_connections < limits.max_connections {
        tracing::warn!(
            max_connections = client_hygiene.max_connections,
            "the descriptor limit (ulimit -n) lowers limits.max_connections"
        );
    }
    let clients = serve::serve(
        listener,
        server::catch_panics(server::router(app)),
        client_hygiene,
        config.tls.as_ref().map(|tls| tls.client_listener.clone()),
        until_stopped(stopped.clone()),
    );
    let peers = serve::serve(
        raft_listener,
        server::catch_panics(transport::router(peers)),
        peer_hygiene,
        config.tls.as_ref().map(|tls| tls.peer_listener.clone()),
        until_stopped(stopped),
    );
    if let Some(join) = config.join.clone() {
        let (http, raft) = (http.clone(), raft.clone());
        let (id, addr, raft_addr) = (
            config.node_id,
            config.advertise_addr.clone(),
            config.raft_advertise_addr.clone(),
        );
        tokio::spawn(async move {
            let voter = |raft: &Raft| {
                let metrics = raft.metrics();
                let metrics = metrics.borrow();
                metrics
                    .membership_config
                    .membership()
                    .voter_ids()
                    .any(|v| v == id)
            };
            if voter(&raft) {
                tracing::info!(join = %join.addr, "already a voter: not asking to join");
                return;
            }
            tracing::info!(join = %join.addr, fresh, "asking to join the cluster as a voter");
            match crate::join::run(&http, scheme, &join, id, (&addr, &raft_addr), fresh).await {
                crate::join::Joined::Voter => tracing::info!("joined the cluster as a voter"),
                crate::join::Joined::Refused(status, body) => {
                    tracing::error!("the cluster refused to add this node ({status}): {body}")
                }
                crate::join::Joined::GaveUp(last) => {
                    tracing::error!("gave up joining the cluster; last answer: {last}")
                }
            }
        });
    }
    let (clients, peers) = tokio::join!(clients, peers);
    let served = clients.and(peers);
    if let Err(e) = raft.shutdown().await {
        tracing::warn!("raft shutdown: {e}");
    }
    // FSYNC: everything acknowledged is already durable; this only shortens recovery.
    let _ = db.flush_async().await;
    served.map_err(NodeError::Serve)
}

/// A brand-new node listed in `initial_members` initializes the cluster; a node with
/// existing storage (a restart) is simply reopened.
async fn initialize_if_new(raft: &Raft, config: &NodeConfig) -> Result<(), NodeError> {
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;
    if initialized || config.initial_members.is_empty() {
        return Ok(());
    }
    match raft.initialize(config.initial_members.clone()).await {
        Ok(()) => {
            tracing::info!(members = ?config.initial_members.keys().collect::<Vec<_>>(), "initialized a new cluster");
            Ok(())
        }
        // Another member's initialization reached us first: the same membership.
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(e) => Err(NodeError::Raft(e.to_string())),
    }
}

/// Largest `/raft/*` body: a full AppendEntries of maximal batches, or a snapshot
/// chunk, with room for framing.
fn max_raft_body_bytes(config: &NodeConfig) -> usize {
    let entries =
        config.raft.max_payload_entries as usize * (config.limits.max_batch_bytes + 64 * 1024);
    entries.max(config.raft.snapshot_max_chunk_size as usize) + 1024 * 1024
}
