//! Test harness: real `conclave` processes on free loopback ports, each with its own
//! sled directory under a temp dir. Processes are stopped by the PID we started
//! (`Child`), never by name, and killed when the harness is dropped. Waits poll HTTP
//! state until a condition holds or a deadline passes; no test sleeps a fixed time
//! to synchronize.
#![allow(dead_code)]

pub mod ops;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const SECRET: &str = "integration-test-cluster-secret";
/// The token signing key of every test cluster (`[auth] keys`).
pub const AUTH_KEY: &str = "integration-test-token-signing-key-0123456789";

/// A token for `subject` with `scopes`, signed with [`AUTH_KEY`], valid for an hour.
pub fn token(subject: &str, scopes: &[&str]) -> String {
    let keys = conclave::auth::Keys::new(&[AUTH_KEY.to_string()]).unwrap();
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    keys.issue(subject, &scopes, conclave::auth::token::now_s(), 3_600)
        .unwrap()
}

/// The `admin` token every harness client sends.
pub fn admin_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| token("test-admin", &["admin"]))
}

/// Cluster tests share two cores; running them one at a time keeps election timing
/// honest. Every test that starts processes holds this.
/// (tokio's mutex works across the per-test runtimes and is held across awaits.)
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// `count` distinct free loopback ports: every listener stays open until all are
/// picked, so the kernel cannot hand the same port out twice (a node whose peer
/// port another node already had failed to bind, and its peers reached the other).
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_conclave")
}

/// Runs `conclave <args>` with the admin token in `CONCLAVE_TOKEN`: whether it
/// succeeded, and its stdout (stderr appended on failure).
pub fn cli(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let output = cli_output(args, Some(admin_token()));
    let mut text = String::from_utf8_lossy(&output.stdout).to_string();
    if !output.status.success() {
        text.push_str(&String::from_utf8_lossy(&output.stderr));
    }
    (output.status.success(), text)
}

/// Runs `conclave <args>` to its end with `token` (if any) in `CONCLAVE_TOKEN`.
pub fn cli_output(args: &[&std::ffi::OsStr], token: Option<&str>) -> std::process::Output {
    let mut command = Command::new(binary());
    command.args(args).env_remove("CONCLAVE_TOKEN");
    if let Some(token) = token {
        command.env("CONCLAVE_TOKEN", token);
    }
    command.output().unwrap()
}

pub struct Node {
    pub id: u64,
    pub port: u16,
    /// The peer listener's port (`/raft/*`).
    pub raft_port: u16,
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    pub child: Option<Child>,
    /// `https` when the cluster runs with `[tls]` (`Options::tls_ca_pem`).
    pub scheme: &'static str,
    /// Extra `serve` arguments (e.g. `--join`).
    pub args: Vec<String>,
    /// Another `conclave` binary to run (the previous release's, for upgrades).
    pub binary: Option<PathBuf>,
    /// Extra environment of the process (after the harness's own `CONCLAVE_LOG`, so
    /// it may override it).
    pub env: Vec<(String, String)>,
}

impl Node {
    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    /// The base URL of the node's peer listener.
    pub fn raft_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.raft_port)
    }

    /// The peer address as the membership records it.
    pub fn raft_addr(&self) -> String {
        format!("127.0.0.1:{}", self.raft_port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    /// The `cluster_id` every node's config names.
    pub cluster_id: String,
    pub nodes: Vec<Node>,
    pub http: reqwest::Client,
}

/// Extra TOML appended to every node's config (e.g. a `[raft]` table).
#[derive(Default)]
pub struct Options {
    pub extra_toml: String,
    /// Runs the nodes open (no `[auth]` keys); by default they require tokens.
    pub open: bool,
    /// The CA the nodes' `[tls]` certificates chain to (the `[tls]` table itself goes
    /// in `extra_toml`): the harness then speaks HTTPS, trusting only it.
    pub tls_ca_pem: Option<Vec<u8>>,
    /// Runs every node on this binary instead of this build's (`Node::binary`).
    pub binary: Option<PathBuf>,
    /// `(node id, variable, value)`: extra environment of that node (`Node::env`).
    pub env: Vec<(u64, String, String)>,
}

impl Cluster {
    /// Starts `size` nodes that form one cluster and waits until a leader serves.
    pub async fn start(size: u64, options: Options) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let all_ports = free_ports(2 * size as usize);
        let (ports, raft_ports) = all_ports.split_at(size as usize);
        let raft_addrs: String = (1..=size)
            .map(|id| format!("{id} = \"127.0.0.1:{}\"\n", raft_ports[id as usize - 1]))
            .collect();
        let members: Vec<String> = (1..=size).map(|id| id.to_string()).collect();
        let addrs: String = (1..=size)
            .map(|id| format!("{id} = \"127.0.0.1:{}\"\n", ports[id as usize - 1]))
            .collect();
        // A fresh cluster id per cluster, as `cluster/up.sh` makes: an orphaned node of
        // an earlier test on reused ports refuses this cluster's RPCs.
        let cluster_id: String = dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        let mut nodes = Vec::new();
        for id in 1..=size {
            let port = ports[id as usize - 1];
            let raft_port = raft_ports[id as usize - 1];
            let data_dir = dir.path().join(format!("node{id}"));
            let config = format!(
                "node_id = {id}\nlisten_addr = \"127.0.0.1:{port}\"\n\
                 raft_listen_addr = \"127.0.0.1:{raft_port}\"\ndata_dir = \"{}\"\ncluster_secret = \"{SECRET}\"\n\
                 cluster_id = \"test-{cluster_id}\"\ninitial_members = [{}]\n{}\n{}[member_addrs]\n{addrs}[member_raft_addrs]\n{raft_addrs}",
                data_dir.display(),
                members.join(", "),
                options.extra_toml,
                if options.open {
                    String::new()
                } else {
                    format!("[auth]\nkeys = [\"{AUTH_KEY}\"]\n")
                },
            );
            let config_path = dir.path().join(format!("node{id}.toml"));
            std::fs::write(&config_path, config).unwrap();
            let log_path = dir.path().join(format!("node{id}.log"));
            nodes.push(Node {
                id,
                port,
                raft_port,
                config_path,
                data_dir,
                log_path,
                child: None,
                scheme: if options.tls_ca_pem.is_some() {
                    "https"
                } else {
                    "http"
                },
                args: Vec::new(),
                binary: options.binary.clone(),
                env: (options.env.iter())
                    .filter(|(node, _, _)| *node == id)
                    .map(|(_, name, value)| (name.clone(), value.clone()))
                    .collect(),
            });
        }
        let mut cluster = Cluster {
            cluster_id: format!("test-{cluster_id}"),
            dir,
            nodes,
            http: match &options.tls_ca_pem {
                None => client(),
                Some(ca) => client_builder()
                    .tls_built_in_root_certs(false)
                    .add_root_certificate(reqwest::Certificate::from_pem(ca).unwrap())
                    .timeout(Duration::from_secs(15))
                    .build()
                    .unwrap(),
            },
        };
        for id in 1..=size {
            cluster.spawn(id);
        }
        cluster.wait_for_leader(Duration::from_secs(30)).await;
        cluster
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[id as usize - 1]
    }

    pub fn url(&self, id: u64) -> String {
        self.node(id).url()
    }

    /// A typed client of node `id` sharing the harness's connection pool.
    pub fn api(&self, id: u64) -> conclave_client::Client {
        conclave_client::Client::with_http(&self.url(id), self.http.clone()).unwrap()
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|node| node.child.is_some())
            .map(|node| node.id)
            .collect()
    }

    /// Starts (or restarts) node `id`'s process on its config and data directory.
    pub fn spawn(&mut self, id: u64) {
        let node = &mut self.nodes[id as usize - 1];
        assert!(node.child.is_none(), "node {id} already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .unwrap();
        let program = node.binary.clone().unwrap_or_else(|| binary().into());
        let child = Command::new(program)
            .args(["serve", "--config"])
            .arg(&node.config_path)
            .args(&node.args)
            .env("CONCLAVE_LOG", "info,openraft=warn")
            .envs(node.env.iter().map(|(name, value)| (name, value)))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn conclave");
        node.child = Some(child);
    }

    /// Adds node `id` (not yet started) whose config lists no initial members and
    /// which starts with `serve --join` at node `via`, presenting a `join` token. An
    /// existing (stopped) node `id` is replaced: new ports, the same data directory.
    pub fn add_joiner(&mut self, id: u64, via: u64) {
        let ports = free_ports(2);
        let (port, raft_port) = (ports[0], ports[1]);
        let data_dir = self.dir.path().join(format!("node{id}"));
        let config = format!(
            "node_id = {id}\nlisten_addr = \"127.0.0.1:{port}\"\n\
             raft_listen_addr = \"127.0.0.1:{raft_port}\"\ndata_dir = \"{}\"\ncluster_secret = \"{SECRET}\"\n\
             cluster_id = \"{}\"\ninitial_members = []\n[auth]\nkeys = [\"{AUTH_KEY}\"]\n",
            data_dir.display(),
            self.cluster_id,
        );
        let config_path = self.dir.path().join(format!("node{id}.toml"));
        std::fs::write(&config_path, config).unwrap();
        let join = format!("127.0.0.1:{}", self.node(via).port);
        let node = Node {
            id,
            port,
            raft_port,
            config_path,
            data_dir,
            log_path: self.dir.path().join(format!("node{id}.log")),
            child: None,
            scheme: "http",
            args: vec![
                "--join".into(),
                join,
                "--join-token".into(),
                token("provisioner", &["join"]),
            ],
            binary: None,
            env: Vec::new(),
        };
        match self.nodes.get_mut(id as usize - 1) {
            Some(existing) => {
                assert!(existing.child.is_none(), "node {id} is running");
                *existing = node;
            }
            None => self.nodes.push(node),
        }
    }

    /// Node `id`'s exit status if its process has exited (then it is reaped).
    pub fn try_wait(&mut self, id: u64) -> Option<std::process::ExitStatus> {
        let node = &mut self.nodes[id as usize - 1];
        let status = node.child.as_mut()?.try_wait().ok()??;
        node.child = None;
        Some(status)
    }

    /// SIGKILL: the process gets no chance to flush anything.
    pub fn kill(&mut self, id: u64) {
        let node = &mut self.nodes[id as usize - 1];
        if let Some(mut child) = node.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Sends a signal to node `id`'s process by its PID (SIGSTOP / SIGCONT / SIGTERM).
    pub fn signal(&self, id: u64, signal: &str) {
        let pid = self.node(id).pid().expect("node is running");
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(&self.node(id).log_path).unwrap_or_default()
    }

    /// `GET /v1/cluster` on node `id`, if it answers.
    pub async fn status(&self, id: u64) -> Option<Value> {
        let response = self
            .http
            .get(format!("{}/v1/cluster", self.url(id)))
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }

    /// Waits until every running node names the same running leader; returns it.
    pub async fn wait_for_leader(&self, timeout: Duration) -> u64 {
        let running = self.running();
        let found = wait_until(timeout, || async {
            let mut leaders = Vec::new();
            for &id in &running {
                leaders.push(self.status(id).await?["leader_id"].as_u64()?);
            }
            let leader = leaders[0];
            (leaders.iter().all(|&l| l == leader) && running.contains(&leader)).then_some(leader)
        })
        .await;
        found.unwrap_or_else(|| {
            panic!(
                "no agreed leader among {running:?} within {timeout:?}\n{}",
                self.logs()
            )
        })
    }

    /// Waits until node `id` has applied at least raft log index `index`.
    pub async fn wait_applied(&self, id: u64, index: u64, timeout: Duration) {
        let reached = wait_until(timeout, || async {
            let applied = self.status(id).await?["last_applied_index"].as_u64()?;
            (applied >= index).then_some(())
        })
        .await;
        assert!(
            reached.is_some(),
            "node {id} did not apply index {index} within {timeout:?}"
        );
    }

    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("--- node {} ---\n{}", node.id, tail(&self.log(node.id), 30)))
            .collect()
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A client builder that sends the admin token on every request.
pub fn client_builder() -> reqwest::ClientBuilder {
    client_builder_as(admin_token())
}

/// A client builder that sends `token` on every request.
pub fn client_builder_as(token: &str) -> reqwest::ClientBuilder {
    let mut headers = reqwest::header::HeaderMap::new();
    let bearer = format!("Bearer {token}");
    headers.insert(reqwest::header::AUTHORIZATION, bearer.parse().unwrap());
    reqwest::Client::builder()
        // Under the server's keep-alive idle timeout (`header_read_timeout_ms`, 30 s),
        // so a pooled connection is never reused just as the server closes it.
        .pool_idle_timeout(std::time::Duration::from_secs(10))
        .default_headers(headers)
}

pub fn client() -> reqwest::Client {
    client_builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

/// A typed client of the node at `base` with its own pool (for spawned tasks).
/// Creates a session that takes no tasks (a lock holder, a waiter, a candidate)
/// through the typed client and returns its id: the one session helper of the
/// integration tests that use the client.
pub async fn observer_session(api: &conclave_client::Client, name: &str, ttl_ms: u64) -> u64 {
    let create = conclave_client::SessionCreate {
        name: name.into(),
        capacity: Some(0),
        ttl_ms: Some(ttl_ms),
        ..conclave_client::SessionCreate::default()
    };
    api.session_create(&create)
        .await
        .expect("session created")
        .session_id
}

pub fn api(base: &str) -> conclave_client::Client {
    conclave_client::Client::with_http(base, client()).unwrap()
}

/// A typed client of the node at `base` that sends `token` instead of the admin's,
/// each call once (no retry, no leader following, no generated ids): what a test of
/// one node under a scoped token needs.
pub fn api_as(base: &str, token: &str) -> conclave_client::Client {
    conclave_client::Client::builder()
        .endpoint(base)
        .token(token)
        .retry(false)
        .discover(false)
        .request_ids(false)
        .build()
        .unwrap()
}

/// A raw client carrying `token`, without a total timeout (a stream lasts; SSE
/// framing is tested on the wire).
pub fn stream_client(token: &str) -> reqwest::Client {
    client_builder_as(token)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Typed clients of the nodes at `urls`, one per node, each sending every call
/// once (a test that spreads its calls over the nodes and counts each failure
/// itself), sharing one pool whose requests time out after `timeout`.
pub fn apis(urls: &[String], timeout: Duration) -> Vec<conclave_client::Client> {
    let http = client_builder().timeout(timeout).build().unwrap();
    (urls.iter())
        .map(|url| conclave_client::Client::with_http(url, http.clone()).unwrap())
        .collect()
}

/// Takes lock `name` for `session_id` at once (it must be free).
pub async fn acquire(
    api: &conclave_client::Client,
    name: &str,
    session_id: u64,
) -> conclave_client::Acquired {
    let acquire = conclave_client::LockAcquire {
        session_id,
        ..conclave_client::LockAcquire::default()
    };
    api.lock_acquire(name, &acquire)
        .await
        .expect("lock granted")
}

/// The status and API error code of a call expected to be refused.
pub fn refusal<T: std::fmt::Debug>(result: Result<T, conclave_client::Error>) -> (u16, String) {
    let error = result.expect_err("expected a refusal");
    (
        error.status().unwrap_or(0),
        error.code().unwrap_or_default().to_owned(),
    )
}

/// Polls `check` until it yields `Some` or `timeout` passes.
pub async fn wait_until<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends a body over the limit: it is refused from its `Content-Length` before it is
/// read, so the client reads `413 payload_too_large`, or, if it was still writing the
/// body when the server closed the connection, gets a send error (broken pipe).
pub async fn expect_too_large(request: reqwest::RequestBuilder) {
    if let Ok(response) = request.send().await {
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (413, Some("payload_too_large")),
            "{body}"
        );
    }
}

/// A response's status and JSON body (Null when the body is not JSON).
pub async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("request failed to send");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// `PUT /v1/kv/{key}` raw: for the wire-level tests (auth, admission, TLS,
/// connections, decisions) that must see every status; semantic tests use the
/// client.
pub async fn put(http: &reqwest::Client, base: &str, key: &str, body: Value) -> (u16, Value) {
    send(http.put(format!("{base}/v1/kv/{key}")).json(&body)).await
}

/// `GET /v1/kv/{key}` raw, for the same wire-level tests.
pub async fn get(http: &reqwest::Client, base: &str, key: &str) -> (u16, Value) {
    send(http.get(format!("{base}/v1/kv/{key}"))).await
}

/// A response's body as text (the request must get one).
pub async fn text(request: reqwest::RequestBuilder) -> String {
    request.send().await.unwrap().text().await.unwrap()
}

/// The value of metric `name` in `/metrics` of the node at `base`.
pub async fn metric(http: &reqwest::Client, base: &str, name: &str) -> u64 {
    let text = text(http.get(format!("{base}/metrics"))).await;
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .parse()
        .unwrap()
}
