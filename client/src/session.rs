//! [`Session`]: an agent's session with a background keepalive and a **local lease**
//! the agent can trust without asking the server (Chubby's jeopardy, docs/client.md).
//!
//! The server expires a session `ttl` after the leader accepted its last renewal,
//! and the leader accepts a renewal no earlier than the client sent it; so the
//! client's `send time of the last acknowledged keepalive + ttl` is never later
//! than the server's expiry (cluster time runs within 1 % of the leader's clock,
//! which the safety margin covers). From it:
//!
//! - `local_deadline = last_ack_send + ttl − margin`: past it the session is
//!   [`SessionState::Expired`] here, whatever the server still thinks.
//! - `jeopardy_at = last_ack_send + interval + margin`: the renewal due at
//!   `interval` has not been acknowledged within the margin, so the session is in
//!   [`SessionState::Jeopardy`] until a renewal succeeds (back to `Live`) or the
//!   local deadline passes (`Expired`, final).
//! - a `404 session_not_found` from the server is `Expired` at once.
//!
//! Owns the keepalive task and the state; depends only on the typed endpoint
//! methods of [`Client`] (never on the lock, worker or watch helpers).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{Client, Error, SessionCreate};

/// The server's default `ttl_ms`.
const DEFAULT_TTL: Duration = Duration::from_millis(10_000);

/// What the client knows of its session's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// The last renewal was acknowledged in time.
    Live,
    /// Renewals are failing (or slow) past the margin: the lease may still hold on
    /// the server, but stop starting work that needs it.
    Jeopardy,
    /// The local deadline passed, or the server said the session is gone, or it was
    /// closed. Final: whatever it held must be considered lost.
    Expired,
}

/// Timing of a [`Session`]; `None` fields take defaults from the ttl.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// Time between renewals (default ttl / 3).
    pub keepalive_interval: Option<Duration>,
    /// Safety margin taken off the lease (default ttl / 10: covers the 1 % clock
    /// rate allowance and the time to act on `Expired`).
    pub safety_margin: Option<Duration>,
}

/// The timing a session runs with, resolved from the ttl.
#[derive(Debug, Clone, Copy)]
struct Timing {
    ttl: Duration,
    interval: Duration,
    margin: Duration,
}

impl Timing {
    fn new(ttl: Duration, options: &SessionOptions) -> Timing {
        let margin = options
            .safety_margin
            .unwrap_or(ttl / 10)
            .min(ttl / 4)
            .max(ttl / 100);
        let interval = options
            .keepalive_interval
            .unwrap_or(ttl / 3)
            .min(ttl.saturating_sub(margin * 3))
            .max(Duration::from_millis(10));
        Timing {
            ttl,
            interval,
            margin,
        }
    }

    fn deadline(&self, last_ack_send: Instant) -> Instant {
        last_ack_send + self.ttl - self.margin
    }

    fn jeopardy_at(&self, last_ack_send: Instant) -> Instant {
        last_ack_send + self.interval + self.margin
    }

    /// The state at `now` given the last acknowledged renewal's send time.
    fn state_at(&self, last_ack_send: Instant, now: Instant) -> SessionState {
        if now >= self.deadline(last_ack_send) {
            SessionState::Expired
        } else if now >= self.jeopardy_at(last_ack_send) {
            SessionState::Jeopardy
        } else {
            SessionState::Live
        }
    }
}

/// State shared between the handle and its keepalive task.
#[derive(Debug)]
struct Shared {
    state: watch::Sender<SessionState>,
    deadline: Mutex<Instant>,
}

impl Shared {
    fn set(&self, state: SessionState) {
        self.state.send_if_modified(|current| {
            // Expired is final.
            if *current == state || *current == SessionState::Expired {
                return false;
            }
            *current = state;
            true
        });
    }
}

/// A live session kept alive in the background (see the module docs).
#[derive(Debug)]
pub struct Session {
    client: Client,
    id: u64,
    timing: Timing,
    shared: Arc<Shared>,
    keepalive: JoinHandle<()>,
    closed: bool,
}

impl Session {
    /// Creates a session (`POST /v1/sessions`) and starts renewing it.
    pub async fn create(
        client: &Client,
        create: &SessionCreate,
        options: SessionOptions,
    ) -> Result<Session, Error> {
        let ttl = create
            .ttl_ms
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_TTL);
        let timing = Timing::new(ttl, &options);
        let sent = Instant::now();
        let created = client.session_create(create).await?;
        let (state, _) = watch::channel(SessionState::Live);
        let shared = Arc::new(Shared {
            state,
            deadline: Mutex::new(timing.deadline(sent)),
        });
        let keepalive = tokio::spawn(keep_alive(
            client.clone(),
            created.session_id,
            timing,
            sent,
            shared.clone(),
        ));
        Ok(Session {
            client: client.clone(),
            id: created.session_id,
            timing,
            shared,
            keepalive,
            closed: false,
        })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn ttl(&self) -> Duration {
        self.timing.ttl
    }

    /// Time between renewals.
    pub fn keepalive_interval(&self) -> Duration {
        self.timing.interval
    }

    pub fn state(&self) -> SessionState {
        *self.shared.state.borrow()
    }

    /// A watch of the state: `changed()` wakes on every transition.
    pub fn states(&self) -> watch::Receiver<SessionState> {
        self.shared.state.subscribe()
    }

    /// The local lease deadline: the last acknowledged renewal's send time + ttl −
    /// margin. Before it the server has not expired the session.
    pub fn local_deadline(&self) -> Instant {
        *self.shared.deadline.lock().unwrap()
    }

    /// Resolves once the session is `Expired`.
    pub async fn expired(&self) {
        let mut states = self.states();
        // The sender lives in `self`, so `wait_for` ends only on the state.
        let _ = states
            .wait_for(|state| *state == SessionState::Expired)
            .await;
    }

    /// `Err(SessionExpired)` unless the session is `Live` or in `Jeopardy`.
    pub fn check(&self) -> Result<(), Error> {
        match self.state() {
            SessionState::Expired => Err(Error::SessionExpired(self.id)),
            _ => Ok(()),
        }
    }

    /// Stops renewing and ends the session on the server (`DELETE`), releasing what
    /// it holds. A session already gone there is not an error.
    pub async fn close(mut self) -> Result<(), Error> {
        self.closed = true;
        self.keepalive.abort();
        self.shared.set(SessionState::Expired);
        match self.client.session_end(self.id).await {
            Ok(_) => Ok(()),
            Err(error) if error.code() == Some("session_not_found") => Ok(()),
            Err(error) => Err(error),
        }
    }
}

impl Drop for Session {
    /// Stops renewing; a session not closed is ended on the server best effort (a
    /// spawned `DELETE`, when a runtime is there to run it).
    fn drop(&mut self) {
        self.keepalive.abort();
        self.shared.set(SessionState::Expired);
        if self.closed {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (client, id) = (self.client.clone(), self.id);
            runtime.spawn(async move {
                let _ = client.session_end(id).await;
            });
        }
    }
}

/// Resolves when `states` shows `Expired` (or its session handle is gone).
pub(crate) async fn until_expired(states: &mut watch::Receiver<SessionState>) {
    // The `Ref` is dropped here, so callers' futures stay `Send`.
    let _ = states
        .wait_for(|state| *state == SessionState::Expired)
        .await
        .map(|_| ());
}

/// The keepalive task: renews every interval, moves the state on the way, and
/// ends when the session is `Expired`.
async fn keep_alive(
    client: Client,
    id: u64,
    timing: Timing,
    mut last_ack_send: Instant,
    shared: Arc<Shared>,
) {
    let retry_pause = (timing.margin / 4).max(Duration::from_millis(20));
    let mut next_renewal = last_ack_send + timing.interval;
    loop {
        if !wait_until(&timing, last_ack_send, next_renewal, &shared).await {
            return;
        }
        let sent = Instant::now();
        let deadline = timing.deadline(last_ack_send);
        let left = deadline.saturating_duration_since(sent);
        // Each attempt gets at most an interval, so a paused node is left in time
        // to try the next endpoint.
        let attempt = timing.interval.min(left).max(Duration::from_millis(1));
        let renewal = client.session_keepalive_within(id, left, attempt);
        tokio::pin!(renewal);
        let result = loop {
            let wake = next_transition(&timing, last_ack_send, Instant::now());
            tokio::select! {
                result = &mut renewal => break Some(result),
                _ = tokio::time::sleep_until(wake) => {
                    let state = timing.state_at(last_ack_send, Instant::now());
                    shared.set(state);
                    if state == SessionState::Expired {
                        break None;
                    }
                }
            }
        };
        match result {
            None => return,
            Some(Ok(_)) => {
                last_ack_send = sent;
                *shared.deadline.lock().unwrap() = timing.deadline(sent);
                shared.set(timing.state_at(sent, Instant::now()));
                next_renewal = sent + timing.interval;
            }
            Some(Err(error)) if error.code() == Some("session_not_found") => {
                shared.set(SessionState::Expired);
                return;
            }
            Some(Err(_)) => next_renewal = Instant::now() + retry_pause,
        }
    }
}

/// Sleeps until `until`, updating the state at each transition on the way; `false`
/// when the session expired meanwhile.
async fn wait_until(
    timing: &Timing,
    last_ack_send: Instant,
    until: Instant,
    shared: &Shared,
) -> bool {
    loop {
        let now = Instant::now();
        let state = timing.state_at(last_ack_send, now);
        shared.set(state);
        if state == SessionState::Expired {
            return false;
        }
        if now >= until {
            return true;
        }
        let wake = next_transition(timing, last_ack_send, now).min(until);
        tokio::time::sleep_until(wake).await;
    }
}

/// The next instant at which the state would change on its own.
fn next_transition(timing: &Timing, last_ack_send: Instant, now: Instant) -> Instant {
    let jeopardy = timing.jeopardy_at(last_ack_send);
    if now < jeopardy {
        jeopardy
    } else {
        timing.deadline(last_ack_send)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_come_from_the_ttl() {
        let timing = Timing::new(Duration::from_millis(3000), &SessionOptions::default());
        assert_eq!(timing.interval, Duration::from_millis(1000));
        assert_eq!(timing.margin, Duration::from_millis(300));
        // Jeopardy comes before the deadline, the deadline before the server's expiry.
        let start = Instant::now();
        assert!(timing.jeopardy_at(start) < timing.deadline(start));
        assert!(timing.deadline(start) < start + timing.ttl);
    }

    #[test]
    fn the_state_runs_live_jeopardy_expired() {
        let timing = Timing::new(Duration::from_millis(3000), &SessionOptions::default());
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        assert_eq!(timing.state_at(start, at(0)), SessionState::Live);
        assert_eq!(timing.state_at(start, at(1299)), SessionState::Live);
        assert_eq!(timing.state_at(start, at(1300)), SessionState::Jeopardy);
        assert_eq!(timing.state_at(start, at(2699)), SessionState::Jeopardy);
        assert_eq!(timing.state_at(start, at(2700)), SessionState::Expired);
        assert_eq!(next_transition(&timing, start, at(0)), at(1300));
        assert_eq!(next_transition(&timing, start, at(1300)), at(2700));
    }

    #[test]
    fn options_are_clamped_so_jeopardy_precedes_expiry() {
        let options = SessionOptions {
            keepalive_interval: Some(Duration::from_secs(60)),
            safety_margin: Some(Duration::from_secs(60)),
        };
        let timing = Timing::new(Duration::from_millis(1000), &options);
        let start = Instant::now();
        assert!(timing.jeopardy_at(start) < timing.deadline(start));
    }

    #[test]
    fn expired_is_final() {
        let (state, _) = watch::channel(SessionState::Live);
        let shared = Shared {
            state,
            deadline: Mutex::new(Instant::now()),
        };
        shared.set(SessionState::Expired);
        shared.set(SessionState::Live);
        assert_eq!(*shared.state.borrow(), SessionState::Expired);
    }
}
