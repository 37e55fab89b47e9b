//! The client's endpoint list: the nodes it was given plus members it learned from
//! a node's `GET /v1/cluster`, which one the next attempt goes to, and which node id
//! lives at which endpoint (so a leader hint can be followed).
//!
//! Pure bookkeeping under short locks: no IO, no knowledge of the API. Must not
//! depend on anything else in the crate.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use reqwest::Url;

/// How often an unknown leader id may make the client read a member list.
const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct Endpoints {
    urls: RwLock<Vec<Url>>,
    /// The endpoint the next attempt goes to.
    current: AtomicUsize,
    /// Node id → index in `urls`.
    nodes: Mutex<HashMap<u64, usize>>,
    refreshed: Mutex<Option<Instant>>,
}

impl Endpoints {
    pub fn new(urls: Vec<Url>) -> Endpoints {
        assert!(!urls.is_empty(), "at least one endpoint");
        Endpoints {
            urls: RwLock::new(urls),
            current: AtomicUsize::new(0),
            nodes: Mutex::new(HashMap::new()),
            refreshed: Mutex::new(None),
        }
    }

    pub fn all(&self) -> Vec<Url> {
        self.urls.read().unwrap().clone()
    }

    /// The endpoint to try now, with its slot.
    pub fn pick(&self) -> (usize, Url) {
        let urls = self.urls.read().unwrap();
        let slot = self.current.load(Ordering::Relaxed) % urls.len();
        (slot, urls[slot].clone())
    }

    /// An attempt at `slot` failed: the next one goes to the next endpoint (unless
    /// another caller moved on already).
    pub fn failed(&self, slot: usize) {
        let len = self.urls.read().unwrap().len();
        let _ = self.current.compare_exchange(
            slot,
            (slot + 1) % len,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Makes node `id` the next endpoint if its address is known; its slot.
    pub fn prefer_node(&self, id: u64) -> Option<usize> {
        let slot = self.nodes.lock().unwrap().get(&id).copied()?;
        self.current.store(slot, Ordering::Relaxed);
        Some(slot)
    }

    /// Whether a member list may be read now (at most once per interval).
    pub fn may_refresh(&self) -> bool {
        let mut refreshed = self.refreshed.lock().unwrap();
        let now = Instant::now();
        if refreshed.is_some_and(|at| now.duration_since(at) < REFRESH_INTERVAL) {
            return false;
        }
        *refreshed = Some(now);
        true
    }

    /// Records that node `id` serves clients at `addr` (`host:port`, as the
    /// membership lists it), reached with `like`'s scheme and path prefix; an
    /// address not in the list is appended.
    pub fn learn(&self, id: u64, like: &Url, addr: &str) {
        let Some(url) = url_of(like, addr) else {
            return;
        };
        let mut urls = self.urls.write().unwrap();
        let slot = match urls.iter().position(|known| same_authority(known, &url)) {
            Some(slot) => slot,
            None => {
                urls.push(url);
                urls.len() - 1
            }
        };
        self.nodes.lock().unwrap().insert(id, slot);
    }
}

/// `like` with its host and port replaced by `addr`'s.
fn url_of(like: &Url, addr: &str) -> Option<Url> {
    let (host, port) = addr.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let mut url = like.clone();
    url.set_host(Some(host.trim_start_matches('[').trim_end_matches(']')))
        .ok()?;
    url.set_port(Some(port)).ok()?;
    Some(url)
}

fn same_authority(a: &Url, b: &Url) -> bool {
    a.host_str() == b.host_str() && a.port_or_known_default() == b.port_or_known_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn a_failure_moves_to_the_next_endpoint_and_wraps() {
        let endpoints = Endpoints::new(vec![url("http://a:1"), url("http://b:2")]);
        assert_eq!(endpoints.pick().0, 0);
        endpoints.failed(0);
        assert_eq!(endpoints.pick().1, url("http://b:2"));
        endpoints.failed(0); // stale: another caller moved on already
        assert_eq!(endpoints.pick().0, 1);
        endpoints.failed(1);
        assert_eq!(endpoints.pick().0, 0);
    }

    #[test]
    fn a_learned_leader_is_preferred_and_an_unknown_address_appended() {
        let endpoints = Endpoints::new(vec![url("http://127.0.0.1:7001/p")]);
        assert_eq!(endpoints.prefer_node(2), None);
        endpoints.learn(1, &url("http://127.0.0.1:7001/p"), "127.0.0.1:7001");
        endpoints.learn(2, &url("http://127.0.0.1:7001/p"), "127.0.0.1:7002");
        assert_eq!(endpoints.all().len(), 2);
        assert_eq!(endpoints.prefer_node(2), Some(1));
        assert_eq!(endpoints.pick().1.as_str(), "http://127.0.0.1:7002/p");
        assert_eq!(endpoints.prefer_node(1), Some(0));
        assert_eq!(endpoints.pick().0, 0);
    }

    #[test]
    fn refreshes_are_rate_limited() {
        let endpoints = Endpoints::new(vec![url("http://a:1")]);
        assert!(endpoints.may_refresh());
        assert!(!endpoints.may_refresh());
    }
}
