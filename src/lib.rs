//! Conclave: a Raft-replicated coordination server for multi-agent systems.
//!
//! One coordination log, replicated with openraft and persisted in sled, applied
//! as deterministic state-machine commands; any node serves any request over HTTP
//! and forwards what needs the leader.
//!
//! # Layout
//!
//! - [`sm`]: the deterministic state machine — one room per primitive (`kv/`,
//!   `locks/`, `tasks/`, …), `Command` and `Outcome` nesting their commands and
//!   outcomes, `State::apply_batch`.
//!   No IO, clock, RNG or Raft.
//! - [`codec`]: every byte encoding on disk and on the wire, and `FORMAT_VERSION`.
//! - [`limits`]: every named limit, replicated (compiled in) and per node.
//! - [`serve`]: the connection loop of both listeners (connection limit, header and
//!   body timeouts, `Content-Length` over the limit refused before reading).
//! - [`config`]: TOML → validated `NodeConfig`.
//! - [`raft_types`]: openraft's type configuration.
//! - [`store`]: the sled log store and state-machine store (where the fsyncs are).
//! - [`watch`]: the watch hub — the bounded in-memory history of applied events
//!   the store's apply feeds and every watch reads (`GET /v1/watch`).
//! - [`replica`]: the one front handlers use — propose, read at a consistency
//!   level, wait on the applied state, leader facts, membership changes; it owns
//!   the write batcher (`proposer`), the read-index batcher, the ticker and the
//!   bounded leader clock.
//! - [`auth`]: bearer tokens (signed JWTs) and scopes: who may call what.
//! - [`server`]: the client API (axum): the route table with each route's scope,
//!   input checks, error codes, forwarding, handlers.
//! - [`transport`]: peer traffic: the Raft RPC client and the `/raft/*` router.
//! - [`body`]: reading a request body within a limit (shared by the two fronts).
//! - [`join`]: `serve --join`: asking a member to add this node as a voter.
//! - [`metrics`]: the registry behind `/metrics` and the handles the layers feed
//!   (HTTP, proposer, applied events, Raft); [`logging`]: the tracing subscriber
//!   (text or JSON, colour only on a terminal).
//! - [`node`]: the composition root, `run(config, listener, raft_listener, shutdown)`:
//!   the client API and the peer listener, two routers that share nothing.
//!
//! The binary (`main.rs`) parses the command line, sets up logging and signals, and
//! calls [`node::run`].
pub mod auth;
pub mod body;
pub mod codec;
pub mod config;
pub mod join;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod raft_types;
pub mod replica;
pub mod serve;
pub mod server;
pub mod sm;
pub mod store;
pub mod tls;
pub mod transport;
pub mod watch;
