//! Cluster control: real `conclave` processes with their own data directories,
//! stopped, paused and resumed by the PID this harness started (never by name), and
//! the [`Proxy`] their peer links run through.
//!
//! Every node dials every peer through its own directed proxy link (the node
//! config's `[peer_dial_addrs]`), while the membership keeps the real addresses and
//! clients talk to the nodes directly. The proxy ports are fixed for the cluster's
//! life, so a restarted node keeps its links. A node can also be wiped (data
//! directory removed, config rewritten with `initial_members = []`) so that it can
//! rejoin through `POST /v1/cluster/members` as a fresh node.
//!
//! A cluster may also have *spare* nodes (ids after the founding ones): their
//! links and configs (`initial_members = []`) exist from the start, but they run
//! only while the `membership` nemesis has them join (`serve --join`) and are
//! stopped and wiped once it removed them again. [`Cluster::ids`] names the
//! founding nodes only, the ones the workloads talk to and the run converges.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::proxy::Proxy;

/// A cluster secret of its own for every cluster the harness starts: nodes refuse
/// Raft RPCs with another secret, so a node left running by an earlier run (an
/// orphan after the harness was killed) can never join a new cluster that happens
/// to reuse its ports. With one fixed secret this happened once, and the old node's
/// log contaminated the new cluster's Raft.
/// The token signing key of every cluster this process starts (`[auth] keys`),
/// and the `admin` token minted with it by the first cluster's binary. Every
/// harness client sends that token (`auth_headers`).
static AUTH: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();

/// Mints the harness's admin token with `binary token issue`.
fn mint_admin_token(binary: &Path, key: &str) -> anyhow::Result<String> {
    let output = Command::new(binary)
        .args([
            "token",
            "issue",
            "--subject",
            "jepsen-like",
            "--scope",
            "admin",
        ])
        .args(["--ttl", "7d"])
        .env("CONCLAVE_AUTH_KEYS", key)
        .output()
        .context("running conclave token issue")?;
    if !output.status.success() {
        bail!(
            "conclave token issue failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

/// The `Authorization` header of the harness's clients (none before the first
/// cluster started).
pub fn auth_headers() -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some((_, token)) = AUTH.get() {
        if let Ok(value) = format!("Bearer {token}").parse() {
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
    }
    headers
}

fn fresh_secret() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..32)
        .map(|_| char::from(b"0123456789abcdef"[rng.gen_range(0..16)]))
        .collect()
}

pub struct Node {
    pub id: u64,
    pub port: u16,
    /// The peer listener's port (`/raft/*`); peers reach it through the proxy.
    pub raft_port: u16,
    pub data_dir: PathBuf,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    pub child: Option<Child>,
    pub paused: bool,
}

pub struct Cluster {
    pub binary: PathBuf,
    /// The founding nodes (ids `1..=founding`), then the spares.
    pub nodes: Vec<Node>,
    founding: u64,
    pub http: reqwest::Client,
    /// Every directed peer link (`from → to`).
    pub proxy: Proxy,
    extra_toml: String,
    /// This cluster's secret ([`fresh_secret`]), the same across node restarts.
    secret: String,
}

/// `count` distinct free loopback ports, with their listeners still open: the
/// caller keeps them until nothing else will bind port 0 (then drops them just
/// before the nodes bind), so no two nodes and no proxy link get the same port.
fn free_ports(count: u64) -> anyhow::Result<(Vec<u16>, Vec<std::net::TcpListener>)> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let ports = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?;
    Ok((ports, listeners))
}

impl Cluster {
    /// Starts one proxy link per ordered pair of nodes (spares included), writes
    /// configs under `dir` (each node dialing its peers through its links) and
    /// starts the `founding` nodes; the `spares` wait for [`Cluster::spawn_joining`].
    /// Must be called inside a tokio runtime (the proxy runs on it).
    pub fn start(
        binary: &Path,
        dir: &Path,
        founding: u64,
        spares: u64,
        extra_toml: &str,
    ) -> anyhow::Result<Cluster> {
        let size = founding + spares;
        std::fs::create_dir_all(dir)?;
        if AUTH.get().is_none() {
            let key = fresh_secret();
            let token = mint_admin_token(binary, &key)?;
            let _ = AUTH.set((key, token));
        }
        let (all_ports, reserved) = free_ports(2 * size)?;
        let (ports, raft_ports) = all_ports.split_at(size as usize);
        // The proxy links lead to the peer listeners.
        let targets: BTreeMap<u64, SocketAddr> = (1..=size)
            .map(|id| {
                (
                    id,
                    SocketAddr::from(([127, 0, 0, 1], raft_ports[id as usize - 1])),
                )
            })
            .collect();
        let forward_targets: BTreeMap<u64, SocketAddr> = (1..=size)
            .map(|id| {
                (
                    id,
                    SocketAddr::from(([127, 0, 0, 1], ports[id as usize - 1])),
                )
            })
            .collect();
        let proxy =
            Proxy::start(&targets, &forward_targets).context("starting the link proxies")?;
        let nodes = (1..=size)
            .map(|id| Node {
                id,
                port: ports[id as usize - 1],
                raft_port: raft_ports[id as usize - 1],
                data_dir: dir.join(format!("node{id}")),
                config_path: dir.join(format!("node{id}.toml")),
                log_path: dir.join(format!("node{id}.log")),
                child: None,
                paused: false,
            })
            .collect();
        let http = reqwest::Client::builder()
            // Under the server's keep-alive idle timeout (`header_read_timeout_ms`, 30 s),
            // so a pooled connection is never reused just as the server closes it.
            .pool_idle_timeout(std::time::Duration::from_secs(10))
            .default_headers(auth_headers())
            .timeout(Duration::from_secs(2))
            .build()?;
        let mut cluster = Cluster {
            binary: binary.to_owned(),
            nodes,
            founding,
            http,
            proxy,
            extra_toml: extra_toml.to_owned(),
            secret: fresh_secret(),
        };
        drop(reserved);
        for id in 1..=size {
            cluster.write_config(id, id <= founding)?;
        }
        for id in 1..=founding {
            cluster.spawn(id)?;
        }
        Ok(cluster)
    }

    /// Writes node `id`'s config: the original members as `initial_members` when
    /// `initial` (a founding node), else `[]` (a node that joins by being added).
    fn write_config(&self, id: u64, initial: bool) -> anyhow::Result<()> {
        let node = self.node(id);
        let members: Vec<String> = if initial {
            self.ids().iter().map(u64::to_string).collect()
        } else {
            Vec::new()
        };
        let member_addrs: String = self
            .nodes
            .iter()
            .map(|n| format!("{} = \"127.0.0.1:{}\"\n", n.id, n.port))
            .collect();
        let member_raft_addrs: String = self
            .nodes
            .iter()
            .map(|n| format!("{} = \"127.0.0.1:{}\"\n", n.id, n.raft_port))
            .collect();
        let dial_addrs: String = self
            .proxy
            .dial_addrs(id)
            .iter()
            .map(|(peer, addr)| format!("{peer} = \"{addr}\"\n"))
            .collect();
        let forward_dial_addrs: String = self
            .proxy
            .forward_dial_addrs(id)
            .iter()
            .map(|(peer, addr)| format!("{peer} = \"{addr}\"\n"))
            .collect();
        let config = format!(
            "node_id = {id}\nlisten_addr = \"127.0.0.1:{}\"\nraft_listen_addr = \"127.0.0.1:{}\"\n\
             data_dir = \"{}\"\ncluster_secret = \"{}\"\n\
             initial_members = [{}]\n{}\n[auth]\nkeys = [\"{}\"]\n[member_addrs]\n{member_addrs}\n\
             [member_raft_addrs]\n{member_raft_addrs}\n[peer_dial_addrs]\n{dial_addrs}\n\
             [forward_dial_addrs]\n{forward_dial_addrs}",
            node.port,
            node.raft_port,
            node.data_dir.display(),
            self.secret,
            members.join(", "),
            self.extra_toml,
            AUTH.get().map_or("", |(key, _)| key.as_str()),
        );
        std::fs::write(&node.config_path, config)?;
        Ok(())
    }

    /// Removes stopped node `id`'s data directory and rewrites its config with
    /// `initial_members = []`, so that its next start is a fresh node waiting to be
    /// added (`docs/operations.md`, re-adding a wiped node).
    pub fn wipe(&mut self, id: u64) -> anyhow::Result<()> {
        if self.node(id).child.is_some() {
            bail!("node {id} is running; stop it before wiping it");
        }
        let data_dir = self.node(id).data_dir.clone();
        if data_dir.exists() {
            std::fs::remove_dir_all(&data_dir)
                .with_context(|| format!("wiping {}", data_dir.display()))?;
        }
        self.write_config(id, false)
    }

    /// `host:port` of node `id` as the membership records it.
    pub fn addr(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.node(id).port)
    }

    /// `host:port` of node `id`'s peer listener as the membership records it.
    pub fn raft_addr(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.node(id).raft_port)
    }

    /// The HTTP client and every node's base URL (spares included), to probe
    /// nodes without holding the cluster.
    pub fn probe(&self) -> (reqwest::Client, Vec<(u64, String)>) {
        (
            self.http.clone(),
            self.nodes.iter().map(|n| (n.id, self.url(n.id))).collect(),
        )
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[id as usize - 1]
    }

    pub fn url(&self, id: u64) -> String {
        format!("http://127.0.0.1:{}", self.node(id).port)
    }

    /// The founding nodes: the cluster the workloads use and the run converges.
    pub fn ids(&self) -> Vec<u64> {
        (1..=self.founding).collect()
    }

    /// The spare nodes, which run only while the `membership` nemesis has them in.
    pub fn spare_ids(&self) -> Vec<u64> {
        (self.founding + 1..=self.nodes.len() as u64).collect()
    }

    pub fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        self.spawn_with(id, &[])
    }

    /// Starts node `id` (a fresh spare, or a wiped node) with `serve --join` at
    /// node `via`, presenting the harness's admin token (`CONCLAVE_JOIN_TOKEN`): it
    /// asks the cluster to add it as a voter once it serves.
    pub fn spawn_joining(&mut self, id: u64, via: u64) -> anyhow::Result<()> {
        let join = self.addr(via);
        self.spawn_with(id, &["--join", &join])
    }

    fn spawn_with(&mut self, id: u64, args: &[&str]) -> anyhow::Result<()> {
        let binary = self.binary.clone();
        let node = &mut self.nodes[id as usize - 1];
        if node.child.is_some() {
            bail!("node {id} already running");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)?;
        let child = Command::new(&binary)
            .args(["serve", "--config"])
            .arg(&node.config_path)
            .args(args)
            .env("CONCLAVE_LOG", "info,openraft=error")
            .env(
                "CONCLAVE_JOIN_TOKEN",
                AUTH.get().map_or("", |(_, token)| token.as_str()),
            )
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// SIGKILL node `id`; returns its PID as proof.
    pub fn kill(&mut self, id: u64) -> Option<u32> {
        let node = &mut self.nodes[id as usize - 1];
        let mut child = node.child.take()?;
        let pid = child.id();
        if node.paused {
            signal(pid, "CONT");
            node.paused = false;
        }
        let _ = child.kill();
        let _ = child.wait();
        Some(pid)
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`) node `id`; returns its PID as proof.
    pub fn pause(&mut self, id: u64, pause: bool) -> Option<u32> {
        let node = &mut self.nodes[id as usize - 1];
        let pid = node.child.as_ref()?.id();
        if node.paused == pause {
            return None;
        }
        signal(pid, if pause { "STOP" } else { "CONT" });
        node.paused = pause;
        Some(pid)
    }

    /// Opens every proxy link, resumes paused nodes and restarts dead founding
    /// ones (spares stay as the nemesis left them: stopped once removed).
    /// (Membership is restored by the nemesis before it returns: that needs the API.)
    pub fn heal(&mut self) -> anyhow::Result<()> {
        self.proxy.heal();
        for id in self.ids() {
            self.pause(id, false);
            if self.node(id).child.is_none() {
                self.spawn(id)?;
            }
        }
        Ok(())
    }

    pub async fn get_json(&self, id: u64, path: &str) -> Option<Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.url(id)))
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }

    /// The leader every live, unpaused node agrees on, waiting up to `timeout`.
    pub async fn agreed_leader(&self, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let mut leaders = Vec::new();
            for node in self.nodes.iter().filter(|n| n.child.is_some() && !n.paused) {
                leaders.push(
                    self.get_json(node.id, "/v1/cluster")
                        .await
                        .and_then(|c| c["leader_id"].as_u64()),
                );
            }
            if let Some(Some(first)) = leaders.first() {
                if leaders.iter().all(|l| *l == Some(*first)) {
                    return Some(*first);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// The current leader per any live node (a hint for nemeses).
    pub async fn leader_hint(&self) -> Option<u64> {
        for node in self.nodes.iter().filter(|n| n.child.is_some() && !n.paused) {
            if let Some(leader) = self
                .get_json(node.id, "/v1/cluster")
                .await
                .and_then(|c| c["leader_id"].as_u64())
            {
                return Some(leader);
            }
        }
        None
    }
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in 1..=self.nodes.len() as u64 {
            self.kill(id);
        }
    }
}
