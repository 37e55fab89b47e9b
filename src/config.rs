//! Node configuration: TOML file (or defaults) → [`Config`] → [`Config::resolve`] →
//! [`NodeConfig`], the validated form every constructor takes.
//!
//! With no file at all, a node is a single-node cluster: node id 1 on
//! `127.0.0.1:<base>` with its data in `./conclave-data`, where `<base>` is
//! `CONCLAVE_BASE_PORT` (7000 by default). In a file, node `i` listens by default on
//! `127.0.0.1:<base + i>`, and the members named in `initial_members` are found at
//! `127.0.0.1:<base + id>` unless `member_addrs` says otherwise. Raft timings and
//! snapshot policy are explicit here rather than left to openraft's defaults.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::limits::Limits;
use crate::raft_types::{Member, NodeId};
use crate::store::StoreOptions;

#[path = "config_raft.rs"]
mod raft;
pub use raft::RaftSettings;

/// Environment variable giving the base port (node `i` listens on base + i).
pub const BASE_PORT_ENV: &str = "CONCLAVE_BASE_PORT";
/// The base port when [`BASE_PORT_ENV`] is unset.
pub const DEFAULT_BASE_PORT: u16 = 7000;
/// A node's peer listener defaults to its client port plus this (7001 → 8001).
pub const RAFT_PORT_OFFSET: u16 = 1000;

/// The config file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's Raft id (stable for the life of its data directory).
    #[serde(default = "default_node_id")]
    pub node_id: NodeId,
    /// `host:port` to listen on for the client API.
    pub listen_addr: Option<String>,
    /// `host:port` forwarded clients use to reach this node's client API; defaults
    /// to `listen_addr`.
    pub advertise_addr: Option<String>,
    /// `host:port` to listen on for peers (`/raft/*`, cluster secret only); defaults
    /// to the client port + [`RAFT_PORT_OFFSET`] on the same host.
    pub raft_listen_addr: Option<String>,
    /// `host:port` other nodes use to reach this node's peer listener; defaults to
    /// `raft_listen_addr`.
    pub raft_advertise_addr: Option<String>,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Shared by every member; required on every `/raft/*` call. Required in a file
    /// that names more than one member.
    pub cluster_secret: Option<String>,
    /// Names the cluster (1–64 of `[A-Za-z0-9._-]`); make it unique per cluster (as
    /// `cluster/up.sh` does). Stored in the data directory at bootstrap and sent on
    /// every Raft RPC: a node refuses RPCs of another cluster and refuses to start on
    /// another cluster's data directory. Unset: a new cluster derives one from the
    /// secret and the initial members; a joining node adopts its cluster's.
    pub cluster_id: Option<String>,
    /// The voters a brand-new cluster starts with. A node whose storage is empty and
    /// whose id is listed initializes the cluster (every listed node may; they agree).
    /// Leave empty on a node that will be added later with `POST /v1/cluster/members`.
    #[serde(default)]
    pub initial_members: Vec<NodeId>,
    /// `DELETE /v1/cluster/members/{id}` is refused when it would leave fewer voters
    /// than this (default 1: any removal but the last voter's, which openraft
    /// refuses anyway). Set it to 3 on a production cluster so a mistaken removal
    /// cannot leave it without fault tolerance.
    #[serde(default = "default_min_voters")]
    pub min_voters: usize,
    /// Explicit addresses of initial members (by id as a string key).
    #[serde(default)]
    pub member_addrs: BTreeMap<String, String>,
    /// Explicit peer-listener addresses of initial members (by id); by default a
    /// member's client address with the port + [`RAFT_PORT_OFFSET`].
    #[serde(default)]
    pub member_raft_addrs: BTreeMap<String, String>,
    /// Address this node dials to reach a peer, overriding the membership address
    /// (used by the chaos harness to route each link through its own proxy).
    #[serde(default)]
    pub peer_dial_addrs: BTreeMap<String, String>,
    /// Address this node dials to forward a client request to a peer, overriding
    /// the membership's client address (the chaos harness routes forwarding
    /// through its proxy too, so a partition cuts it).
    #[serde(default)]
    pub forward_dial_addrs: BTreeMap<String, String>,
    #[serde(default)]
    pub raft: RaftSettings,
    #[serde(default)]
    pub storage: StorageSettings,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub debug: DebugSettings,
    #[serde(default)]
    pub auth: AuthSettings,
    #[serde(default)]
    pub admission: AdmissionSettings,
    /// `[tls]`: HTTPS on both listeners and for what this node dials (`tls`).
    #[serde(default)]
    pub tls: crate::tls::TlsSettings,
}

/// `[admission]`: optional per-subject request rate (see `server::admission`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdmissionSettings {
    /// Requests per second each token subject may send to this node (fractions
    /// allowed); unset, no rate is enforced. `admin` is never limited.
    pub rate_per_subject: Option<f64>,
    /// How many requests a subject may send at once before the rate applies;
    /// defaults to the rate (at least 1).
    pub burst_per_subject: Option<u32>,
}

impl AdmissionSettings {
    /// The bucket size for `per_s`.
    pub fn burst(&self, per_s: f64) -> f64 {
        match self.burst_per_subject {
            Some(burst) => f64::from(burst),
            None => per_s.ceil().max(1.0),
        }
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(per_s) = self.rate_per_subject {
            if !(per_s.is_finite() && per_s > 0.0 && per_s <= 1_000_000.0) {
                return Err(format!(
                    "admission.rate_per_subject must be above 0 and at most 1000000, got {per_s}"
                ));
            }
        }
        if self.burst_per_subject == Some(0) {
            return Err("admission.burst_per_subject must be at least 1".into());
        }
        Ok(())
    }
}

/// Environment variable with the cluster secret; when set it takes the place of
/// `cluster_secret`.
pub const CLUSTER_SECRET_ENV: &str = "CONCLAVE_CLUSTER_SECRET";
/// Environment variable that overrides `cluster_id`.
pub const CLUSTER_ID_ENV: &str = "CONCLAVE_CLUSTER_ID";

/// Environment variable with the token keys (comma-separated; the first signs).
/// When set it takes the place of `[auth] keys`.
pub const AUTH_KEYS_ENV: &str = "CONCLAVE_AUTH_KEYS";

/// Client authentication (see docs/security.md).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// The HS256 keys bearer tokens are signed with, each at least 32 bytes; the
    /// first signs (`conclave token issue`), any of them verifies, so a key is
    /// rotated by putting the new one first. None: the node runs open (every
    /// caller may do everything), which is allowed only on a loopback address.
    pub keys: Vec<String>,
    /// Runs open on a non-loopback address anyway. Never in production.
    pub insecure_open: bool,
    /// Refuses to start without keys (the cluster example configs set it; their
    /// keys come from the environment, which `cluster/up.sh` fills).
    pub required: bool,
}

impl AuthSettings {
    /// The keys in effect: the environment's if set, else the file's.
    pub fn effective_keys(&self) -> Vec<String> {
        match std::env::var(AUTH_KEYS_ENV) {
            Ok(text) if !text.trim().is_empty() => {
                text.split(',').map(|k| k.trim().to_owned()).collect()
            }
            _ => self.keys.clone(),
        }
    }
}

/// Whether this build has the test-only `[debug]` switches (the `test-switches`
/// cargo feature; the chaos harness builds with it, release builds do not). A build
/// that has them says so in `GET /v1/cluster`, `/metrics` and its start-up log; one
/// that does not refuses a config that sets them.
pub const TEST_SWITCHES_BUILT: bool = cfg!(feature = "test-switches");

/// Test-only switches, honoured only by a build with the `test-switches` cargo
/// feature ([`TEST_SWITCHES_BUILT`]). Never set them in production.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DebugSettings {
    /// Plants a known bug so the chaos harness can prove it catches it:
    /// `"stale-reads"` serves linearizable reads from the local replica on any node,
    /// without forwarding or a read-index round; `"unbounded-clock"` stamps the
    /// leader's wall clock unbounded (issue #10, bug 6: a clock jump expires leases
    /// early).
    pub inject_bug: Option<String>,
    /// Enables `GET`/`POST /v1/debug/clock`, which sets an offset added to this
    /// node's wall clock reading (the chaos harness's `clock-jump` nemesis). Off,
    /// the endpoint answers 404 `not_found`.
    #[serde(default)]
    pub clock_offset_endpoint: bool,
}

impl DebugSettings {
    /// Refuses any switch unless the build has them (`built` is
    /// [`TEST_SWITCHES_BUILT`]; a parameter so both answers are unit-tested).
    pub fn admitted_by(&self, built: bool) -> Result<(), String> {
        if !built && (self.inject_bug.is_some() || self.clock_offset_endpoint) {
            return Err(
                "[debug] inject_bug and clock_offset_endpoint are compiled only into \
                 builds with the `test-switches` cargo feature (jepsen-like/run.sh builds \
                 one); this build has none"
                    .into(),
            );
        }
        Ok(())
    }
}

fn default_node_id() -> NodeId {
    1
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("conclave-data")
}

/// Storage settings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    /// sled's page cache, in MiB (sled's own default of 1 GiB is never used).
    pub cache_capacity_mib: u64,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            cache_capacity_mib: 64,
        }
    }
}

/// A validated configuration, ready for the constructors.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: NodeId,
    pub listen_addr: SocketAddr,
    pub advertise_addr: String,
    /// The peer listener (`/raft/*`).
    pub raft_listen_addr: SocketAddr,
    pub raft_advertise_addr: String,
    pub data_dir: PathBuf,
    pub cluster_secret: String,
    /// The configured cluster id (`store::identity`), if any.
    pub cluster_id: Option<String>,
    /// Empty when this node must not initialize a cluster.
    pub initial_members: BTreeMap<NodeId, Member>,
    pub peer_dial_addrs: BTreeMap<NodeId, String>,
    pub forward_dial_addrs: BTreeMap<NodeId, String>,
    pub raft: openraft::Config,
    pub raft_settings: RaftSettings,
    pub store: StoreOptions,
    pub limits: Limits,
    /// `[admission]` (see `server::admission`).
    pub admission: AdmissionSettings,
    /// `[tls]` loaded; `None` serves and dials plain HTTP.
    pub tls: Option<std::sync::Arc<crate::tls::NodeTls>>,
    /// `[debug] inject_bug = "stale-reads"` (test-only).
    pub stale_reads_bug: bool,
    /// `[debug] clock_offset_endpoint = true` (test-only).
    pub clock_offset_endpoint: bool,
    /// `[debug] inject_bug = "unbounded-clock"` (test-only).
    pub unbounded_clock_bug: bool,
    /// Token checking, or open (loopback only unless forced).
    pub auth: crate::auth::Auth,
    /// `serve --join`: ask this member to add this node as a voter once it serves.
    /// See [`Config::min_voters`].
    pub min_voters: usize,
    pub join: Option<crate::join::Join>,
}

impl NodeConfig {
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.limits.write_timeout_ms)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_id: default_node_id(),
            listen_addr: None,
            advertise_addr: None,
            raft_listen_addr: None,
            raft_advertise_addr: None,
            data_dir: default_data_dir(),
            cluster_secret: None,
            cluster_id: None,
            initial_members: Vec::new(),
            min_voters: default_min_voters(),
            member_addrs: BTreeMap::new(),
            member_raft_addrs: BTreeMap::new(),
            peer_dial_addrs: BTreeMap::new(),
            forward_dial_addrs: BTreeMap::new(),
            raft: RaftSettings::default(),
            storage: StorageSettings::default(),
            limits: Limits::default(),
            debug: DebugSettings::default(),
            auth: AuthSettings::default(),
            admission: AdmissionSettings::default(),
            tls: crate::tls::TlsSettings::default(),
        }
    }
}

/// A config that cannot be used, with what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("invalid config: {0}")]
pub struct ConfigError(pub String);

fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError(message.into())
}

/// The base port from the environment.
pub fn base_port() -> Result<u16, ConfigError> {
    match std::env::var(BASE_PORT_ENV) {
        Ok(text) => text
            .parse()
            .map_err(|_| invalid(format!("{BASE_PORT_ENV}={text} is not a port"))),
        Err(_) => Ok(DEFAULT_BASE_PORT),
    }
}

fn port_for(base: u16, id: NodeId) -> Result<u16, ConfigError> {
    u16::try_from(u64::from(base) + id)
        .map_err(|_| invalid(format!("base port {base} + node id {id} is not a port")))
}

/// The default peer address for client address `addr`: the same host, the port
/// plus [`RAFT_PORT_OFFSET`].
pub fn raft_default(addr: &str) -> Result<String, ConfigError> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| invalid(format!("{addr:?} is not host:port")))?;
    let port: u16 = port
        .parse()
        .map_err(|_| invalid(format!("{addr:?} is not host:port")))?;
    let raft_port = port.checked_add(RAFT_PORT_OFFSET).ok_or_else(|| {
        invalid(format!(
            "{addr:?}: port + {RAFT_PORT_OFFSET} is not a port; set the raft address explicitly"
        ))
    })?;
    Ok(format!("{host}:{raft_port}"))
}

fn parse_id_map(
    name: &str,
    map: &BTreeMap<String, String>,
) -> Result<BTreeMap<NodeId, String>, ConfigError> {
    map.iter()
        .map(|(id, addr)| {
            let id = id
                .parse()
                .map_err(|_| invalid(format!("{name}: key {id:?} is not a node id")))?;
            Ok((id, addr.clone()))
        })
        .collect()
}

impl Config {
    /// Reads a TOML config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(format!("reading {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| invalid(format!("{}: {e}", path.display())))
    }

    /// The single-node default used by `conclave serve` with no `--config`: listens
    /// on the base port itself.
    pub fn single_node(base: u16) -> Self {
        Self {
            initial_members: vec![1],
            listen_addr: Some(format!("127.0.0.1:{base}")),
            ..Self::default()
        }
    }

    /// Validates everything and fills in derived values.
    pub fn resolve(self, base: u16) -> Result<NodeConfig, ConfigError> {
        if self.min_voters == 0 {
            return Err(ConfigError("min_voters must be at least 1".into()));
        }
        if self.node_id == 0 {
            return Err(invalid("node_id must be at least 1"));
        }
        let listen_text = match &self.listen_addr {
            Some(addr) => addr.clone(),
            None => format!("127.0.0.1:{}", port_for(base, self.node_id)?),
        };
        let listen_addr: SocketAddr = listen_text
            .parse()
            .map_err(|_| invalid(format!("listen_addr {listen_text:?} is not ip:port")))?;
        let advertise_addr = self.advertise_addr.clone().unwrap_or(listen_text);
        let raft_listen_text = match &self.raft_listen_addr {
            Some(addr) => addr.clone(),
            None => raft_default(&listen_addr.to_string())?,
        };
        let raft_listen_addr: SocketAddr = raft_listen_text.parse().map_err(|_| {
            invalid(format!(
                "raft_listen_addr {raft_listen_text:?} is not ip:port"
            ))
        })?;
        if raft_listen_addr == listen_addr {
            return Err(invalid(
                "raft_listen_addr must differ from listen_addr (peers and clients are kept apart)",
            ));
        }
        let raft_advertise_addr = match &self.raft_advertise_addr {
            Some(addr) => addr.clone(),
            None if self.advertise_addr.is_some() => raft_default(&advertise_addr)?,
            None => raft_listen_text,
        };

        let explicit = parse_id_map("member_addrs", &self.member_addrs)?;
        let explicit_raft = parse_id_map("member_raft_addrs", &self.member_raft_addrs)?;
        let mut initial_members = BTreeMap::new();
        for &id in &self.initial_members {
            let addr = match explicit.get(&id) {
                Some(addr) => addr.clone(),
                None if id == self.node_id => advertise_addr.clone(),
                None => format!("127.0.0.1:{}", port_for(base, id)?),
            };
            let raft_addr = match explicit_raft.get(&id) {
                Some(addr) => addr.clone(),
                None if id == self.node_id => raft_advertise_addr.clone(),
                None => raft_default(&addr)?,
            };
            initial_members.insert(id, Member { addr, raft_addr });
        }
        if !initial_members.is_empty() && !initial_members.contains_key(&self.node_id) {
            return Err(invalid(format!(
                "initial_members {:?} must include this node ({}) or be empty",
                self.initial_members, self.node_id
            )));
        }
        let file_secret = self.cluster_secret.clone();
        let env_secret = std::env::var(CLUSTER_SECRET_ENV)
            .ok()
            .filter(|s| !s.is_empty());
        let cluster_secret = match env_secret.or(file_secret) {
            Some(secret) if secret.len() >= 16 => secret,
            Some(_) => return Err(invalid("cluster_secret must be at least 16 characters")),
            None if initial_members.len() == 1 => random_secret(),
            None => {
                return Err(invalid(
                    "cluster_secret is required unless initial_members is exactly this node",
                ))
            }
        };
        let cluster_id = std::env::var(CLUSTER_ID_ENV)
            .ok()
            .filter(|s| !s.is_empty())
            .or(self.cluster_id.clone());
        if let Some(id) = &cluster_id {
            if !crate::store::identity::valid(id) {
                return Err(invalid(format!(
                    "cluster_id {id:?} must be 1 to 64 of A-Z a-z 0-9 . _ -"
                )));
            }
        }
        let peer_dial_addrs = parse_id_map("peer_dial_addrs", &self.peer_dial_addrs)?;
        let forward_dial_addrs = parse_id_map("forward_dial_addrs", &self.forward_dial_addrs)?;
        self.limits.validate().map_err(invalid)?;
        self.admission.validate().map_err(invalid)?;
        if self.storage.cache_capacity_mib == 0 {
            return Err(invalid("storage.cache_capacity_mib must be at least 1"));
        }
        let raft = raft_config(&self.raft)?;
        self.debug
            .admitted_by(TEST_SWITCHES_BUILT)
            .map_err(invalid)?;
        let (stale_reads_bug, unbounded_clock_bug) = match self.debug.inject_bug.as_deref() {
            None => (false, false),
            Some("stale-reads") => (true, false),
            Some("unbounded-clock") => (false, true),
            Some(other) => {
                return Err(invalid(format!(
                    "debug.inject_bug {other:?} is unknown (\"stale-reads\" or \"unbounded-clock\")"
                )))
            }
        };
        let keys = self.auth.effective_keys();
        let auth = if keys.is_empty() {
            if self.auth.required {
                return Err(invalid(format!(
                    "[auth] required = true but no keys are set ([auth] keys or {AUTH_KEYS_ENV})"
                )));
            }
            if !listen_addr.ip().is_loopback() && !self.auth.insecure_open {
                return Err(invalid(format!(
                    "listen_addr {listen_addr} is not loopback and no [auth] keys are set: \
                     set keys (or {AUTH_KEYS_ENV}), or insecure_open = true to run open anyway"
                )));
            }
            crate::auth::Auth::Open
        } else {
            crate::auth::Auth::with_keys(crate::auth::Keys::new(&keys).map_err(invalid)?)
        };
        Ok(NodeConfig {
            auth,
            join: None,
            min_voters: self.min_voters,
            node_id: self.node_id,
            listen_addr,
            advertise_addr,
            raft_listen_addr,
            raft_advertise_addr,
            data_dir: self.data_dir,
            cluster_secret,
            cluster_id,
            initial_members,
            peer_dial_addrs,
            forward_dial_addrs,
            raft,
            raft_settings: self.raft,
            store: StoreOptions {
                cache_capacity_bytes: self.storage.cache_capacity_mib * 1024 * 1024,
            },
            limits: self.limits,
            admission: self.admission,
            tls: crate::tls::NodeTls::load(&self.tls)
                .map_err(invalid)?
                .map(std::sync::Arc::new),
            stale_reads_bug,
            clock_offset_endpoint: self.debug.clock_offset_endpoint,
            unbounded_clock_bug,
        })
    }
}

fn default_min_voters() -> usize {
    1
}

/// A per-process secret for a node that has no peers yet (it can still be grown
/// later only after restarting it with a configured secret).
fn random_secret() -> String {
    use std::hash::{BuildHasher, Hasher};
    let state = std::collections::hash_map::RandomState::new();
    (0..4)
        .map(|i| {
            let mut hasher = state.build_hasher();
            hasher.write_u64(i);
            format!("{:016x}", hasher.finish())
        })
        .collect()
}

fn raft_config(settings: &RaftSettings) -> Result<openraft::Config, ConfigError> {
    if settings.snapshot_logs_since_last == 0 {
        return Err(invalid("raft.snapshot_logs_since_last must be at least 1"));
    }
    let config = openraft::Config {
        cluster_name: "conclave".into(),
        heartbeat_interval: settings.heartbeat_interval_ms,
        election_timeout_min: settings.election_timeout_min_ms,
        election_timeout_max: settings.election_timeout_max_ms,
        install_snapshot_timeout: settings.install_snapshot_timeout_ms,
        snapshot_max_chunk_size: settings.snapshot_max_chunk_bytes,
        max_payload_entries: settings.max_payload_entries,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(settings.snapshot_logs_since_last),
        max_in_snapshot_log_to_keep: settings.max_in_snapshot_log_to_keep,
        purge_batch_size: settings.purge_batch_size,
        ..Default::default()
    };
    config.validate().map_err(|e| invalid(format!("raft: {e}")))
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
