//! The coordination primitives: locks, semaphores, barriers and elections
//! (`/v1/locks`, `/v1/semaphores`, `/v1/barriers`, `/v1/elections`). A name is one
//! percent-encoded path segment. A `GET` of an unknown name is an empty view; a
//! room's list (`GET /v1/locks`, ...) shows the resources in use by name.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{query_pairs, Client, Consistency, Error};

/// A lock's mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    #[default]
    Exclusive,
    Shared,
}

/// Body of `POST /v1/locks/{name}/acquire`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LockAcquire {
    pub session_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<LockMode>,
    /// How long to wait; `0` (the default) answers `409 lock_held` at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_delay_ms: Option<u64>,
    /// The token of a hold lost to session expiry, to reclaim during its lock-delay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_token: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Body of `POST /v1/semaphores/{name}/acquire`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SemaphoreAcquire {
    pub session_id: u64,
    /// The semaphore's size; must match the current one while in use.
    pub limit: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permits: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Answer of a lock or semaphore acquire. `index` is absent when the grant came
/// after waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Acquired {
    pub fencing_token: u64,
    #[serde(default)]
    pub index: Option<u64>,
}

/// Body of a lock or semaphore release.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Release {
    pub session_id: u64,
    pub fencing_token: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Answer of a release or a resign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Released {
    pub released: bool,
    pub index: u64,
}

/// Body of `POST /v1/barriers/{name}/wait`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BarrierWait {
    pub session_id: u64,
    pub parties: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// Answer of a barrier wait; `index` only on the arrival that released it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct BarrierWaited {
    pub generation: u64,
    pub released: bool,
    pub broken: bool,
    #[serde(default)]
    pub index: Option<u64>,
}

/// Body of `POST /v1/elections/{name}/campaign`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Campaign {
    pub session_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Answer of a campaign: the election as it stood; `leader` says whether this
/// session leads. With no leader at all the other fields are `None`/`Null`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Campaigned {
    pub leader: bool,
    pub term: Option<u64>,
    pub leader_session_id: Option<u64>,
    #[serde(default)]
    pub value: Value,
}

/// Body of `POST /v1/elections/{name}/resign`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Resign {
    pub session_id: u64,
    pub term: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Query of a room's list (`GET /v1/locks`, `/v1/semaphores`, `/v1/barriers`,
/// `/v1/elections`). `Default` lists from the first name, a full page.
#[derive(Debug, Clone, Default)]
pub struct RoomList {
    /// Only names starting with it.
    pub prefix: Option<String>,
    /// Start strictly after this name (a page's `next_after`).
    pub after: Option<String>,
    pub limit: Option<u32>,
    pub consistency: Consistency,
}

impl Client {
    /// `GET /v1/locks`: `{"items": [view...], "next_after": name|null}`, each item as
    /// [`Client::lock_get`] shows it.
    pub async fn lock_list(&self, list: &RoomList) -> Result<Value, Error> {
        self.room_list("locks", list).await
    }

    /// `GET /v1/semaphores`: a page of views, as for [`Client::lock_list`].
    pub async fn semaphore_list(&self, list: &RoomList) -> Result<Value, Error> {
        self.room_list("semaphores", list).await
    }

    /// `GET /v1/barriers`: a page of views, as for [`Client::lock_list`].
    pub async fn barrier_list(&self, list: &RoomList) -> Result<Value, Error> {
        self.room_list("barriers", list).await
    }

    /// `GET /v1/elections`: a page of views, as for [`Client::lock_list`].
    pub async fn election_list(&self, list: &RoomList) -> Result<Value, Error> {
        self.room_list("elections", list).await
    }

    /// `GET /v1/{room}?prefix=&after=&limit=`.
    async fn room_list(&self, room: &str, list: &RoomList) -> Result<Value, Error> {
        let query = query_pairs(&[
            ("prefix", list.prefix.clone()),
            ("after", list.after.clone()),
            ("limit", list.limit.map(|limit| limit.to_string())),
        ]);
        self.read_query(&["v1", room], &query, list.consistency)
            .await
    }

    /// `POST /v1/locks/{name}/acquire`.
    pub async fn lock_acquire(&self, name: &str, acquire: &LockAcquire) -> Result<Acquired, Error> {
        self.write_idempotent(Method::POST, &["v1", "locks", name, "acquire"], acquire)
            .await
    }

    /// `POST /v1/locks/{name}/release`.
    pub async fn lock_release(&self, name: &str, release: &Release) -> Result<Released, Error> {
        self.write_idempotent(Method::POST, &["v1", "locks", name, "release"], release)
            .await
    }

    /// `GET /v1/locks/{name}`: holders and FIFO waiters.
    pub async fn lock_get(&self, name: &str, consistency: Consistency) -> Result<Value, Error> {
        self.read(&["v1", "locks", name], consistency).await
    }

    /// `POST /v1/semaphores/{name}/acquire`.
    pub async fn semaphore_acquire(
        &self,
        name: &str,
        acquire: &SemaphoreAcquire,
    ) -> Result<Acquired, Error> {
        self.write_idempotent(
            Method::POST,
            &["v1", "semaphores", name, "acquire"],
            acquire,
        )
        .await
    }

    /// `POST /v1/semaphores/{name}/release`.
    pub async fn semaphore_release(
        &self,
        name: &str,
        release: &Release,
    ) -> Result<Released, Error> {
        self.write_idempotent(
            Method::POST,
            &["v1", "semaphores", name, "release"],
            release,
        )
        .await
    }

    /// `GET /v1/semaphores/{name}`: limit, permits in use, holders, waiters.
    pub async fn semaphore_get(
        &self,
        name: &str,
        consistency: Consistency,
    ) -> Result<Value, Error> {
        self.read(&["v1", "semaphores", name], consistency).await
    }

    /// `POST /v1/barriers/{name}/wait`.
    pub async fn barrier_wait(
        &self,
        name: &str,
        wait: &BarrierWait,
    ) -> Result<BarrierWaited, Error> {
        self.write(Method::POST, &["v1", "barriers", name, "wait"], wait)
            .await
    }

    /// `GET /v1/barriers/{name}`: generation, arrivals, recent outcomes.
    pub async fn barrier_get(&self, name: &str, consistency: Consistency) -> Result<Value, Error> {
        self.read(&["v1", "barriers", name], consistency).await
    }

    /// `POST /v1/elections/{name}/campaign`.
    pub async fn election_campaign(
        &self,
        name: &str,
        campaign: &Campaign,
    ) -> Result<Campaigned, Error> {
        self.write_idempotent(
            Method::POST,
            &["v1", "elections", name, "campaign"],
            campaign,
        )
        .await
    }

    /// `POST /v1/elections/{name}/resign`.
    pub async fn election_resign(&self, name: &str, resign: &Resign) -> Result<Released, Error> {
        self.write_idempotent(Method::POST, &["v1", "elections", name, "resign"], resign)
            .await
    }

    /// `GET /v1/elections/{name}`: leader, term, value, queued candidates.
    pub async fn election_get(&self, name: &str, consistency: Consistency) -> Result<Value, Error> {
        self.read(&["v1", "elections", name], consistency).await
    }
}
