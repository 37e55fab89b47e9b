//! The etcd side: the same workloads over etcd's native gRPC API (KV, Lease,
//! Maintenance and the v3lock service), through tonic's generic unary client and the
//! hand-written messages of `etcd_proto.rs`. Clients share HTTP/2 connections
//! (`--clients-per-connection`), as etcd's own clients and benchmark tool do.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use http::uri::PathAndQuery;
use serde_json::Map;
use tonic::client::Grpc;
use tonic::codec::ProstCodec;
use tonic::transport::{Channel, Endpoint};

use crate::cli::{Placement, RunArgs, Workload};
use crate::driver::{closed_loop, Measured, Progress};
use crate::etcd_proto::{self as proto, path};
use crate::report::Report;

/// One gRPC connection to one etcd member.
#[derive(Clone)]
pub struct Etcd {
    grpc: Grpc<Channel>,
}

impl Etcd {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(url.to_owned())?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await
            .with_context(|| format!("connecting to etcd at {url}"))?;
        Ok(Self {
            grpc: Grpc::new(channel),
        })
    }

    async fn call<Req, Resp>(&self, path: &'static str, request: Req) -> Result<Resp, tonic::Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = self.grpc.clone();
        grpc.ready()
            .await
            .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
        let codec = ProstCodec::<Req, Resp>::default();
        let response = grpc
            .unary(
                tonic::Request::new(request),
                PathAndQuery::from_static(path),
                codec,
            )
            .await?;
        Ok(response.into_inner())
    }

    pub async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<(), tonic::Status> {
        let request = proto::PutRequest {
            key,
            value,
            lease: 0,
        };
        self.call::<_, proto::PutResponse>(path::PUT, request)
            .await
            .map(drop)
    }

    /// `serializable: false` is etcd's linearizable read.
    pub async fn get(
        &self,
        key: Vec<u8>,
        serializable: bool,
    ) -> Result<proto::RangeResponse, tonic::Status> {
        let request = proto::RangeRequest { key, serializable };
        self.call(path::RANGE, request).await
    }

    pub async fn grant_lease(&self, ttl_secs: i64) -> anyhow::Result<i64> {
        let request = proto::LeaseGrantRequest {
            ttl: ttl_secs,
            id: 0,
        };
        let granted: proto::LeaseGrantResponse = self.call(path::LEASE_GRANT, request).await?;
        anyhow::ensure!(granted.error.is_empty(), "lease grant: {}", granted.error);
        Ok(granted.id)
    }

    pub async fn revoke_lease(&self, id: i64) -> Result<(), tonic::Status> {
        let request = proto::LeaseRevokeRequest { id };
        self.call::<_, proto::LeaseRevokeResponse>(path::LEASE_REVOKE, request)
            .await
            .map(drop)
    }

    /// Waits until the lock is held; returns the key that represents ownership.
    pub async fn lock(&self, name: Vec<u8>, lease: i64) -> Result<Vec<u8>, tonic::Status> {
        let request = proto::LockRequest { name, lease };
        let locked: proto::LockResponse = self.call(path::LOCK, request).await?;
        Ok(locked.key)
    }

    pub async fn unlock(&self, key: Vec<u8>) -> Result<(), tonic::Status> {
        let request = proto::UnlockRequest { key };
        self.call::<_, proto::UnlockResponse>(path::UNLOCK, request)
            .await
            .map(drop)
    }

    pub async fn status(&self) -> Result<proto::StatusResponse, tonic::Status> {
        self.call(path::STATUS, proto::StatusRequest {}).await
    }
}

/// The failure kind of a gRPC error: `grpc <code>`.
pub fn grpc_error(status: tonic::Status) -> String {
    format!("grpc {:?}", status.code())
}

/// Which endpoint is the leader: (index in `endpoints`, leader member id).
pub async fn leader(endpoints: &[String]) -> anyhow::Result<(usize, u64)> {
    let mut members = Vec::new();
    let mut leader_id = 0;
    for endpoint in endpoints {
        let status = match Etcd::connect(endpoint).await {
            Ok(etcd) => etcd.status().await.ok(),
            Err(_) => None,
        };
        let member = status
            .as_ref()
            .and_then(|s| s.header.as_ref())
            .map(|h| h.member_id);
        if let Some(status) = &status {
            if status.leader != 0 {
                leader_id = status.leader;
            }
        }
        members.push(member);
    }
    let index = members
        .iter()
        .position(|member| *member == Some(leader_id) && leader_id != 0)
        .with_context(|| format!("no endpoint of {endpoints:?} is the leader"))?;
    Ok((index, leader_id))
}

/// Per-client state handed to every operation.
#[derive(Clone)]
struct Client {
    etcd: Etcd,
    index: usize,
    lease: i64,
    lock: Arc<[u8]>,
}

/// One connection per `clients_per_connection` clients of each endpoint; client `i`
/// uses endpoint `i % endpoints` (the same spread as the Conclave side).
async fn clients(args: &RunArgs, endpoints: &[String]) -> anyhow::Result<Vec<Client>> {
    let per_connection = args.clients_per_connection.max(1);
    let mut connections: Vec<Vec<Etcd>> = vec![Vec::new(); endpoints.len()];
    let mut clients = Vec::with_capacity(args.clients);
    for index in 0..args.clients {
        let endpoint = index % endpoints.len();
        let slot = (index / endpoints.len()) / per_connection;
        if connections[endpoint].len() <= slot {
            connections[endpoint].push(Etcd::connect(&endpoints[endpoint]).await?);
        }
        clients.push(Client {
            etcd: connections[endpoint][slot].clone(),
            index,
            lease: 0,
            lock: Arc::from(&b""[..]),
        });
    }
    Ok(clients)
}

pub async fn run(args: &RunArgs, progress: Arc<Progress>) -> anyhow::Result<Report> {
    let endpoints = match args.placement {
        Placement::Spread => args.endpoints.clone(),
        Placement::Leader => vec![args.endpoints[leader(&args.endpoints).await?.0].clone()],
    };
    let clients = clients(args, &endpoints).await?;
    let measured = match args.workload {
        Workload::Put | Workload::Get | Workload::StaleGet => {
            key_value(args, clients, progress).await?
        }
        Workload::Lock | Workload::ContendedLock => lock_cycle(args, clients, progress).await?,
        Workload::WatchFanout => {
            anyhow::bail!(
                "the watch-fanout workload is Conclave-only: the bench has no etcd watch client"
            )
        }
        other => anyhow::bail!("the {} workload is Conclave-only", other.name()),
    };
    Ok(Report {
        system: "etcd",
        workload: args.workload.name(),
        clients: args.clients,
        placement: args.placement.name().into(),
        measured,
        extra: Map::new(),
    })
}

async fn key_value(
    args: &RunArgs,
    clients: Vec<Client>,
    progress: Arc<Progress>,
) -> anyhow::Result<Measured> {
    let value = vec![b'x'; 64];
    let workload = args.workload;
    if workload != Workload::Put {
        for client in &clients {
            let key = format!("bench/{}", client.index).into_bytes();
            client.etcd.put(key, value.clone()).await?;
        }
    }
    let duration = Duration::from_secs(args.duration);
    closed_loop(clients, duration, progress, move |client, sequence| {
        let value = value.clone();
        async move {
            let index = client.index;
            match workload {
                Workload::Put => {
                    let key = format!("bench/{index}/{}", sequence % 1000).into_bytes();
                    client.etcd.put(key, value).await.map_err(grpc_error)
                }
                _ => {
                    let key = format!("bench/{index}").into_bytes();
                    let serializable = workload == Workload::StaleGet;
                    let found = client
                        .etcd
                        .get(key, serializable)
                        .await
                        .map_err(grpc_error)?;
                    match found.count {
                        1 => Ok(()),
                        _ => Err("key missing".to_owned()),
                    }
                }
            }
        }
    })
    .await
}

/// etcd's recipe (v3lock): a lease per client, granted once; then Lock(name, lease)
/// → Unlock(key) in a loop. One op = one Lock + Unlock. Leases are revoked after.
async fn lock_cycle(
    args: &RunArgs,
    mut clients: Vec<Client>,
    progress: Arc<Progress>,
) -> anyhow::Result<Measured> {
    let contended = args.workload == Workload::ContendedLock;
    let ttl = i64::try_from(args.ttl_secs())?;
    for client in &mut clients {
        client.lease = client.etcd.grant_lease(ttl).await?;
        let name = if contended {
            "bench-lock".to_owned()
        } else {
            format!("bench-lock-{}", client.index)
        };
        client.lock = Arc::from(name.into_bytes());
    }
    let leases: Vec<(Etcd, i64)> = clients.iter().map(|c| (c.etcd.clone(), c.lease)).collect();
    let duration = Duration::from_secs(args.duration);
    let measured = closed_loop(clients, duration, progress, |client, _| async move {
        let lock = client.etcd.lock(client.lock.to_vec(), client.lease);
        let key = lock.await.map_err(grpc_error)?;
        client.etcd.unlock(key).await.map_err(grpc_error)
    })
    .await?;
    for (etcd, lease) in leases {
        let _ = etcd.revoke_lease(lease).await;
    }
    Ok(measured)
}
