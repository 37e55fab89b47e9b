//! A client that disconnects mid-wait leaves no waiter behind, whether it waited at
//! the leader (hyper drops the handler on EOF; its drop guard withdraws) or through
//! a follower (dropping the forward closes the connection to the leader, whose
//! handler is then dropped the same way). Locks, semaphores and elections alike.
//! Issue #10 ("753 waiters stayed queued").

mod common;

use std::time::Duration;

use common::{wait_until, Cluster, Options};
use conclave_client::{Campaign, Client, Consistency, Error, LockAcquire, SemaphoreAcquire};

const LEADER_WAIT: Duration = Duration::from_secs(20);
const WITHDRAW_WAIT: Duration = Duration::from_secs(10);

async fn session(api: &Client) -> u64 {
    common::observer_session(api, "locker", 60_000).await
}

/// A resource that queues waiters: a lock, a one-permit semaphore, an election.
#[derive(Debug, Clone, Copy)]
enum Queueing {
    Lock,
    Semaphore,
    Election,
}

const RESOURCES: [Queueing; 3] = [Queueing::Lock, Queueing::Semaphore, Queueing::Election];

impl Queueing {
    /// Acquires (or campaigns) for `session`, waiting up to `wait_ms`.
    async fn acquire(
        self,
        api: &Client,
        session_id: u64,
        wait_ms: Option<u64>,
    ) -> Result<(), Error> {
        match self {
            Queueing::Lock => {
                let acquire = LockAcquire {
                    session_id,
                    wait_ms,
                    ..LockAcquire::default()
                };
                api.lock_acquire("L", &acquire).await.map(drop)
            }
            Queueing::Semaphore => {
                let acquire = SemaphoreAcquire {
                    session_id,
                    permits: Some(1),
                    limit: 1,
                    wait_ms,
                    ..SemaphoreAcquire::default()
                };
                api.semaphore_acquire("S", &acquire).await.map(drop)
            }
            Queueing::Election => {
                let campaign = Campaign {
                    session_id,
                    wait_ms,
                    ..Campaign::default()
                };
                api.election_campaign("E", &campaign).await.map(drop)
            }
        }
    }

    /// How many wait in its queue (`waiters`, or an election's `candidates`).
    async fn queued(self, api: &Client) -> usize {
        let linearizable = Consistency::Linearizable;
        let (view, field) = match self {
            Queueing::Lock => (api.lock_get("L", linearizable).await, "waiters"),
            Queueing::Semaphore => (api.semaphore_get("S", linearizable).await, "waiters"),
            Queueing::Election => (api.election_get("E", linearizable).await, "candidates"),
        };
        view.ok()
            .and_then(|view| view[field].as_array().map(Vec::len))
            .unwrap_or(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_wait_leaves_no_waiter_at_the_leader_or_via_a_follower() {
    let _serial = common::serial().await;
    let cluster = Cluster::start(3, Options::default()).await;
    let leader = cluster.wait_for_leader(LEADER_WAIT).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let api = common::api(&cluster.url(leader));
    for resource in RESOURCES {
        let holder = session(&api).await;
        if let Err(error) = resource.acquire(&api, holder, None).await {
            panic!("{resource:?}: {error}");
        }
        for (via, node) in [("the leader", leader), ("a follower", follower)] {
            let waiter = session(&api).await;
            // Each waiting client on its own connection, dropped mid-wait.
            let own = common::api(&cluster.url(node));
            let request =
                tokio::spawn(async move { resource.acquire(&own, waiter, Some(30_000)).await });
            let queued_once = wait_until(WITHDRAW_WAIT, || async {
                (resource.queued(&api).await == 1).then_some(())
            })
            .await;
            assert!(
                queued_once.is_some(),
                "{resource:?}: the wait via {via} never queued"
            );
            request.abort(); // the client goes away: its connection closes
            let gone = wait_until(WITHDRAW_WAIT, || async {
                (resource.queued(&api).await == 0).then_some(())
            })
            .await;
            assert!(
                gone.is_some(),
                "{resource:?}: a ghost waiter is left after a disconnect via {via}"
            );
        }
    }
}
