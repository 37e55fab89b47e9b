//! Per-link TCP proxies: the network the nemesis can break.
//!
//! A [`Link`] is one *directed* peer link `from → to`: a listener on a free loopback
//! port forwarding every connection to `to`'s real address. Node `from` dials `to`
//! through it (the node config's `peer_dial_addrs`), so the link carries `from`'s
//! requests to `to` (Raft RPCs, forwarded client requests) *and their responses*;
//! `to`'s own requests to `from` use the separate link `to → from`. A [`Proxy`] owns
//! one link per ordered pair of nodes and lives inside the harness's tokio runtime;
//! dropping it stops every listener and closes every connection it carried.
//!
//! Each link is in one [`LinkMode`] at a time: open, blackholed (a silent partition),
//! refusing (a partition that resets connections), delayed (latency per chunk, order
//! kept) or resetting (connections closed abruptly now and then). Leaving `open`
//! for a cut always ends the connections already pooled on the link, so a kept-alive
//! HTTP connection cannot tunnel through a partition. [`LinkStats`] counts what each
//! link did (connections accepted, reset, held; bytes forwarded and dropped), which is
//! the nemesis' proof that a fault fired.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// How long the proxy waits to connect to the real target before resetting the
/// incoming connection (as a refused connection would be).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const CHUNK: usize = 16 * 1024;

/// What a link does with its traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum LinkMode {
    /// Forward everything.
    Open,
    /// A silent partition: bytes arriving on existing connections are dropped, new
    /// connections are accepted and never forwarded (the dialer waits for its own
    /// timeout, as with lost packets). Leaving this mode resets those connections
    /// (their streams have gaps).
    Blackhole,
    /// A loud partition: existing connections are reset now, new ones at once.
    Refuse,
    /// Forward every chunk `min_ms..=max_ms` after it arrived, in order.
    Delay { min_ms: u64, max_ms: u64 },
    /// Forward, but reset every live connection every `min_ms..=max_ms`.
    Reset { min_ms: u64, max_ms: u64 },
}

impl LinkMode {
    /// Blackhole or refuse: nothing gets through.
    pub fn is_cut(self) -> bool {
        matches!(self, LinkMode::Blackhole | LinkMode::Refuse)
    }
}

#[derive(Debug, Clone, Copy)]
struct LinkState {
    mode: LinkMode,
    /// Bumped to end every connection that started under an earlier epoch.
    epoch: u64,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    forwarded_bytes: AtomicU64,
    dropped_bytes: AtomicU64,
    delayed_chunks: AtomicU64,
    killed: AtomicU64,
    refused: AtomicU64,
    blackholed: AtomicU64,
    connect_failed: AtomicU64,
    reset_rounds: AtomicU64,
    live: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// What a link did, since it started (or between two snapshots, see
/// [`LinkStats::since`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LinkStats {
    /// Connections the dialer opened through the link.
    pub accepted: u64,
    /// Bytes delivered (both directions).
    pub forwarded_bytes: u64,
    /// Bytes read and thrown away while blackholed.
    pub dropped_bytes: u64,
    /// Chunks held back by a delay.
    pub delayed_chunks: u64,
    /// Connections ended abruptly by a cut, a reset round or leaving a blackhole.
    pub killed: u64,
    /// New connections reset at once while refusing.
    pub refused: u64,
    /// New connections accepted and never forwarded while blackholed.
    pub blackholed: u64,
    /// Connections reset because the target could not be reached (node down).
    pub connect_failed: u64,
    /// Reset rounds fired while resetting.
    pub reset_rounds: u64,
    /// Connections open right now (a gauge: [`LinkStats::since`] keeps the newer).
    pub live: u64,
}

impl LinkStats {
    /// The counts between `before` and `self` (`live` stays `self`'s).
    pub fn since(&self, before: &LinkStats) -> LinkStats {
        LinkStats {
            accepted: self.accepted.saturating_sub(before.accepted),
            forwarded_bytes: self.forwarded_bytes.saturating_sub(before.forwarded_bytes),
            dropped_bytes: self.dropped_bytes.saturating_sub(before.dropped_bytes),
            delayed_chunks: self.delayed_chunks.saturating_sub(before.delayed_chunks),
            killed: self.killed.saturating_sub(before.killed),
            refused: self.refused.saturating_sub(before.refused),
            blackholed: self.blackholed.saturating_sub(before.blackholed),
            connect_failed: self.connect_failed.saturating_sub(before.connect_failed),
            reset_rounds: self.reset_rounds.saturating_sub(before.reset_rounds),
            live: self.live,
        }
    }

    /// Field-wise sum (for totals over several links).
    pub fn plus(&self, other: &LinkStats) -> LinkStats {
        LinkStats {
            accepted: self.accepted + other.accepted,
            forwarded_bytes: self.forwarded_bytes + other.forwarded_bytes,
            dropped_bytes: self.dropped_bytes + other.dropped_bytes,
            delayed_chunks: self.delayed_chunks + other.delayed_chunks,
            killed: self.killed + other.killed,
            refused: self.refused + other.refused,
            blackholed: self.blackholed + other.blackholed,
            connect_failed: self.connect_failed + other.connect_failed,
            reset_rounds: self.reset_rounds + other.reset_rounds,
            live: self.live + other.live,
        }
    }
}

/// One directed link: a loopback listener forwarding to `target`.
pub struct Link {
    port: u16,
    target: SocketAddr,
    state: Arc<watch::Sender<LinkState>>,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl Link {
    /// Binds a free loopback port and starts forwarding to `target` (open). Must be
    /// called inside a tokio runtime. `seed` drives the per-chunk delays and the
    /// reset intervals.
    pub fn spawn(target: SocketAddr, seed: u64) -> std::io::Result<Link> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let listener = TcpListener::from_std(listener)?;
        let (state, _) = watch::channel(LinkState {
            mode: LinkMode::Open,
            epoch: 0,
        });
        let state = Arc::new(state);
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(serve(
            listener,
            target,
            state.clone(),
            counters.clone(),
            seed,
        ));
        Ok(Link {
            port,
            target,
            state,
            counters,
            task,
        })
    }

    /// The port dialers use.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn target(&self) -> SocketAddr {
        self.target
    }

    pub fn mode(&self) -> LinkMode {
        self.state.borrow().mode
    }

    /// Switches the link's behaviour. Entering `Refuse` resets every connection;
    /// leaving `Blackhole` resets the connections it held.
    pub fn set(&self, mode: LinkMode) {
        self.state.send_modify(|state| {
            let leaving_blackhole =
                state.mode == LinkMode::Blackhole && mode != LinkMode::Blackhole;
            if mode == LinkMode::Refuse || leaving_blackhole {
                state.epoch += 1;
            }
            state.mode = mode;
        });
    }

    /// Resets every live connection now (whatever the mode).
    pub fn reset_connections(&self) {
        self.state.send_modify(|state| state.epoch += 1);
    }

    pub fn stats(&self) -> LinkStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LinkStats {
            accepted: get(&c.accepted),
            forwarded_bytes: get(&c.forwarded_bytes),
            dropped_bytes: get(&c.dropped_bytes),
            delayed_chunks: get(&c.delayed_chunks),
            killed: get(&c.killed),
            refused: get(&c.refused),
            blackholed: get(&c.blackholed),
            connect_failed: get(&c.connect_failed),
            reset_rounds: get(&c.reset_rounds),
            live: get(&c.live),
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Aborting the listener task drops its JoinSet, which aborts every
        // connection task (their sockets close).
        self.task.abort();
    }
}

/// Every directed link between the nodes of a cluster: one to each peer's peer
/// listener (Raft) and one to its client API (forwarded requests). A fault on a
/// pair applies to both, as a real network fault would.
pub struct Proxy {
    links: BTreeMap<(u64, u64), Link>,
    forward_links: BTreeMap<(u64, u64), Link>,
}

impl Proxy {
    /// Open links for every ordered pair of distinct ids: to the peer listeners in
    /// `targets` and to the client APIs in `forward_targets` (node id → real
    /// address). Must be called inside a tokio runtime.
    pub fn start(
        targets: &BTreeMap<u64, SocketAddr>,
        forward_targets: &BTreeMap<u64, SocketAddr>,
    ) -> std::io::Result<Proxy> {
        let spawn = |targets: &BTreeMap<u64, SocketAddr>, salt: u64| {
            let mut links = BTreeMap::new();
            for &from in targets.keys() {
                for (&to, &addr) in targets {
                    if from != to {
                        let seed = salt + from * 1_000 + to;
                        links.insert((from, to), Link::spawn(addr, seed)?);
                    }
                }
            }
            Ok::<_, std::io::Error>(links)
        };
        Ok(Proxy {
            links: spawn(targets, 0)?,
            forward_links: spawn(forward_targets, 1_000_000)?,
        })
    }

    pub fn link(&self, from: u64, to: u64) -> &Link {
        &self.links[&(from, to)]
    }

    /// Every `(from, to)` pair.
    pub fn pairs(&self) -> Vec<(u64, u64)> {
        self.links.keys().copied().collect()
    }

    /// Sets both links of the pair (Raft and forwarding).
    pub fn set(&self, from: u64, to: u64, mode: LinkMode) {
        self.link(from, to).set(mode);
        self.forward_links[&(from, to)].set(mode);
    }

    /// What `from` should dial for each peer's peer listener: `(peer, proxy address)`.
    pub fn dial_addrs(&self, from: u64) -> Vec<(u64, SocketAddr)> {
        Self::dial(&self.links, from)
    }

    /// What `from` should dial to forward to each peer's client API.
    pub fn forward_dial_addrs(&self, from: u64) -> Vec<(u64, SocketAddr)> {
        Self::dial(&self.forward_links, from)
    }

    fn dial(links: &BTreeMap<(u64, u64), Link>, from: u64) -> Vec<(u64, SocketAddr)> {
        links
            .iter()
            .filter(|((f, _), _)| *f == from)
            .map(|((_, to), link)| (*to, link.addr()))
            .collect()
    }

    /// Opens every link; returns the pairs that were not open.
    pub fn heal(&self) -> Vec<(u64, u64)> {
        let mut healed = Vec::new();
        for (pair, link) in &self.links {
            let forward = &self.forward_links[pair];
            if link.mode() != LinkMode::Open || forward.mode() != LinkMode::Open {
                link.set(LinkMode::Open);
                forward.set(LinkMode::Open);
                healed.push(*pair);
            }
        }
        healed
    }

    /// Every pair's counters (both of its links).
    pub fn stats(&self) -> BTreeMap<(u64, u64), LinkStats> {
        self.links
            .iter()
            .map(|(pair, link)| (*pair, link.stats().plus(&self.forward_links[pair].stats())))
            .collect()
    }
}

/// Accepts connections and runs the reset rounds of `LinkMode::Reset`.
async fn serve(
    listener: TcpListener,
    target: SocketAddr,
    state: Arc<watch::Sender<LinkState>>,
    counters: Arc<Counters>,
    seed: u64,
) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut watcher = state.subscribe();
    let mut connections = JoinSet::new();
    let mut next_reset: Option<Instant> = None;
    let mut serial = 0u64;
    loop {
        while connections.try_join_next().is_some() {}
        match watcher.borrow_and_update().mode {
            LinkMode::Reset { min_ms, max_ms } => {
                if next_reset.is_none() {
                    let wait = rng.gen_range(min_ms..=max_ms.max(min_ms));
                    next_reset = Some(Instant::now() + Duration::from_millis(wait));
                }
            }
            _ => next_reset = None,
        }
        let reset_due = async {
            match next_reset {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    serial += 1;
                    connections.spawn(connection(
                        stream,
                        target,
                        state.subscribe(),
                        counters.clone(),
                        seed ^ serial.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            _ = reset_due => {
                next_reset = None;
                add(&counters.reset_rounds, 1);
                state.send_modify(|s| s.epoch += 1);
            }
            changed = watcher.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// Counts a connection as live while it exists.
struct Live(Arc<Counters>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Closes `stream` with a reset (RST) rather than an orderly FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Resolves once the link's epoch is no longer `epoch`.
async fn epoch_changed(state: &mut watch::Receiver<LinkState>, epoch: u64) {
    loop {
        if state.borrow_and_update().epoch != epoch {
            return;
        }
        if state.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

async fn connection(
    mut client: TcpStream,
    target: SocketAddr,
    mut state: watch::Receiver<LinkState>,
    counters: Arc<Counters>,
    seed: u64,
) {
    add(&counters.accepted, 1);
    add(&counters.live, 1);
    let _live = Live(counters.clone());
    let start = *state.borrow_and_update();
    let _ = client.set_nodelay(true);
    match start.mode {
        LinkMode::Refuse => {
            add(&counters.refused, 1);
            reset(client);
            return;
        }
        LinkMode::Blackhole => {
            add(&counters.blackholed, 1);
            // Read and drop until the dialer gives up or the blackhole ends.
            let mut buf = vec![0u8; CHUNK];
            loop {
                tokio::select! {
                    read = client.read(&mut buf) => match read {
                        Ok(0) | Err(_) => return,
                        Ok(n) => add(&counters.dropped_bytes, n as u64),
                    },
                    _ = epoch_changed(&mut state, start.epoch) => {
                        add(&counters.killed, 1);
                        reset(client);
                        return;
                    }
                }
            }
        }
        _ => {}
    }
    let mut server = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
        Ok(Ok(server)) => server,
        _ => {
            add(&counters.connect_failed, 1);
            reset(client);
            return;
        }
    };
    let _ = server.set_nodelay(true);
    let killed = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let up = pump(
            client_read,
            server_write,
            state.clone(),
            counters.clone(),
            seed,
        );
        let down = pump(
            server_read,
            client_write,
            state.clone(),
            counters.clone(),
            seed.rotate_left(17),
        );
        let both = async {
            let (mut up, mut down) = (pin!(up), pin!(down));
            let (mut up_done, mut down_done) = (false, false);
            while !(up_done && down_done) {
                tokio::select! {
                    clean = &mut up, if !up_done => {
                        if !clean { return; }
                        up_done = true;
                    }
                    clean = &mut down, if !down_done => {
                        if !clean { return; }
                        down_done = true;
                    }
                }
            }
        };
        tokio::select! {
            _ = both => false,
            _ = epoch_changed(&mut state, start.epoch) => true,
        }
    };
    if killed {
        add(&counters.killed, 1);
        reset(client);
        reset(server);
    }
}

/// Copies `from` to `to`, applying the link's mode per chunk: dropped while cut,
/// delivered late while delayed (a reader and a writer joined by a queue, so a
/// delay is latency, not a throughput cap). `true` when it ended cleanly (EOF).
async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    state: watch::Receiver<LinkState>,
    counters: Arc<Counters>,
    seed: u64,
) -> bool {
    let (queue, mut deliveries) = mpsc::channel::<(Instant, Vec<u8>)>(64);
    let reader_counters = counters.clone();
    let reader = async move {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut last = Instant::now();
        let mut buf = vec![0u8; CHUNK];
        let clean = loop {
            let n = match from.read(&mut buf).await {
                Ok(0) => break true,
                Ok(n) => n,
                Err(_) => break false,
            };
            let mode = state.borrow().mode;
            let at = match mode {
                LinkMode::Blackhole | LinkMode::Refuse => {
                    add(&reader_counters.dropped_bytes, n as u64);
                    continue;
                }
                LinkMode::Delay { min_ms, max_ms } => {
                    add(&reader_counters.delayed_chunks, 1);
                    let ms = rng.gen_range(min_ms..=max_ms.max(min_ms));
                    Instant::now() + Duration::from_millis(ms)
                }
                LinkMode::Open | LinkMode::Reset { .. } => Instant::now(),
            };
            // Never overtake an earlier chunk.
            last = at.max(last);
            if queue.send((last, buf[..n].to_vec())).await.is_err() {
                break false;
            }
        };
        // Closing the queue lets the writer drain it and finish.
        drop(queue);
        clean
    };
    let writer = async {
        while let Some((at, chunk)) = deliveries.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return false;
            }
            add(&counters.forwarded_bytes, chunk.len() as u64);
        }
        let _ = to.shutdown().await;
        true
    };
    let mut reader = pin!(reader);
    let mut writer = pin!(writer);
    tokio::select! {
        clean = &mut reader => {
            if !clean {
                return false;
            }
        }
        clean = &mut writer => return clean,
    }
    // The reader finished cleanly and closed the queue: the writer drains it.
    writer.await
}
