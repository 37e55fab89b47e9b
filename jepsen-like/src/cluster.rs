//! Cluster control: real `conclave` processes with their own data directories,
//! stopped, paused and resumed by the PID this harness started (never by name).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

pub const SECRET: &str = "jepsen-like-cluster-secret";

pub struct Node {
    pub id: u64,
    pub port: u16,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    pub child: Option<Child>,
    pub paused: bool,
}

pub struct Cluster {
    pub binary: PathBuf,
    pub nodes: Vec<Node>,
    pub http: reqwest::Client,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Cluster {
    /// Writes configs under `dir` and starts `size` nodes.
    pub fn start(
        binary: &Path,
        dir: &Path,
        size: u64,
        extra_toml: &str,
    ) -> anyhow::Result<Cluster> {
        std::fs::create_dir_all(dir)?;
        let ports: Vec<u16> = (0..size).map(|_| free_port()).collect::<Result<_, _>>()?;
        let addrs: String = ports
            .iter()
            .enumerate()
            .map(|(i, port)| format!("{} = \"127.0.0.1:{port}\"\n", i + 1))
            .collect();
        let members: Vec<String> = (1..=size).map(|id| id.to_string()).collect();
        let mut nodes = Vec::new();
        for id in 1..=size {
            let port = ports[id as usize - 1];
            let config = format!(
                "node_id = {id}\nlisten_addr = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\ncluster_secret = \"{SECRET}\"\n\
                 initial_members = [{}]\n{extra_toml}\n[member_addrs]\n{addrs}",
                dir.join(format!("node{id}")).display(),
                members.join(", "),
            );
            let config_path = dir.join(format!("node{id}.toml"));
            std::fs::write(&config_path, config)?;
            let log_path = dir.join(format!("node{id}.log"));
            nodes.push(Node {
                id,
                port,
                config_path,
                log_path,
                child: None,
                paused: false,
            });
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let mut cluster = Cluster {
            binary: binary.to_owned(),
            nodes,
            http,
        };
        for id in 1..=size {
            cluster.spawn(id)?;
        }
        Ok(cluster)
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[id as usize - 1]
    }

    pub fn url(&self, id: u64) -> String {
        format!("http://127.0.0.1:{}", self.node(id).port)
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    pub fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
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
            .env("CONCLAVE_LOG", "info,openraft=error")
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

    /// Resumes paused nodes and restarts dead ones.
    pub fn heal(&mut self) -> anyhow::Result<()> {
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
        for id in self.ids() {
            self.kill(id);
        }
    }
}
