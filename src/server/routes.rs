//! The one route table of the client API: every route's method, path, what its
//! caller needs ([`Access`]), where it is served ([`Place`]) and its handler. The
//! router is built from it (`server::router`), and so are the authorization gate of
//! each route and the tests that call every route with every kind of wrong token:
//! a route without a scope cannot exist. (axum cannot list its routes afterwards,
//! hence the table.)
//!
//! Must not depend on storage, Raft or `transport`; handlers stay in their files.

use axum::extract::{FromRequestParts, Query, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};

use super::error::ApiError;
use super::error_code::ErrorCode;
use super::propose::propose;
use super::room_list::RoomListQuery;
use super::{cluster, debug_clock, kv, locks, primitives, proposals, requests, resource};
use super::{sessions, tasks, twophase, txn, watch};
use super::{AppState, ReadQuery};
use crate::auth::{Kind, Need, TokenError};
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::{Ref, RefOr, Schema};
use utoipa::{IntoParams, ToSchema};

/// Where a name an agent scope is checked against comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    /// The path parameter of this name.
    Path(&'static str),
    /// The query parameter of this name (empty when absent).
    Query(&'static str),
}

/// What a route needs of its caller, in terms of its request (see `auth::Need`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a token.
    Public,
    /// `admin`.
    Admin,
    /// `admin` or `join` (adding members).
    Join,
    /// `admin`, `read` or any agent scope.
    Read,
    /// `admin`, `read`, or an agent scope covering the named resource.
    ReadOf(Kind, Param),
    /// `admin` or any agent scope.
    Agent,
    /// `admin` or an agent scope of this kind (the handler checks the name).
    AgentKind(Kind),
    /// `admin` or an agent scope covering the named resource.
    AgentOf(Kind, Param),
}

/// Where a route is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// On the leader: a follower forwards it (`forward`).
    Leader,
    /// A linearizable read any member serves from its own state machine after the
    /// leader's read index (`replica::read_index`); a follower forwards it only when
    /// it cannot get one (no leader known or reachable) or with `?redirect=true`.
    FollowerRead,
    /// On the node that received it.
    Local,
}

/// One route of the table.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    pub place: Place,
    pub handler: MethodRouter<AppState>,
    /// The JSON body it reads, for the OpenAPI document (`openapi`).
    pub body: Option<BodyDoc>,
    /// Its query parameters, for the OpenAPI document.
    pub query: Option<fn() -> Vec<Parameter>>,
}

/// The named schemas an OpenAPI document's `components` collect.
pub type Components = Vec<(String, RefOr<Schema>)>;

/// A route's request body in the OpenAPI document: the body type's schema (its
/// nested types added to the components) and whether an empty body will do.
#[derive(Clone, Copy)]
pub struct BodyDoc {
    pub required: bool,
    pub schema: fn(&mut Components) -> RefOr<Schema>,
}

/// The schema of body type `T` as a reference, `T` and its nested types added.
fn body_schema<T: ToSchema>(components: &mut Components) -> RefOr<Schema> {
    T::schemas(components);
    components.push((T::name().into_owned(), T::schema()));
    Ref::from_schema_name(T::name()).into()
}

impl Route {
    /// The route reads a JSON body of type `T` (the type its handler parses).
    fn body<T: ToSchema>(mut self) -> Self {
        self.body = Some(BodyDoc {
            required: true,
            schema: body_schema::<T>,
        });
        self
    }

    /// The route reads a JSON body of type `T`, or none (every field optional).
    fn optional_body<T: ToSchema>(mut self) -> Self {
        self.body = Some(BodyDoc {
            required: false,
            schema: body_schema::<T>,
        });
        self
    }

    /// The route reads query parameters of type `T`.
    fn query<T: IntoParams>(mut self) -> Self {
        self.query = Some(|| T::into_params(|| Some(ParameterIn::Query)));
        self
    }
}

fn route<H, T>(
    method: Method,
    path: &'static str,
    access: Access,
    place: Place,
    handler: H,
) -> Route
where
    H: axum::handler::Handler<T, AppState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("a standard method");
    Route {
        method,
        path,
        access,
        place,
        handler: on(filter, handler),
        body: None,
        query: None,
    }
}

/// Every route of the client API (one line each: a table, so unformatted).
#[rustfmt::skip]
pub fn table() -> Vec<Route> {
    use Access::*;
    use Kind::*;
    use Param::{Path, Query};
    use Place::{FollowerRead, Leader, Local};
    let (get, put, post, delete) = (Method::GET, Method::PUT, Method::POST, Method::DELETE);
    let key = Path("key");
    let name = Path("name");
    vec![
        route(get.clone(), "/v1/kv", ReadOf(Kv, Query("prefix")), FollowerRead, resource::list::<kv::ListQuery>).query::<kv::ListQuery>(),
        route(get.clone(), "/v1/kv/{*key}", ReadOf(Kv, key), FollowerRead, kv::get).query::<ReadQuery>(),
        route(put, "/v1/kv/{*key}", AgentOf(Kv, key), Leader, propose::<kv::PutBody>).body::<kv::PutBody>(),
        route(delete.clone(), "/v1/kv/{*key}", AgentOf(Kv, key), Leader, propose::<kv::DeleteBody>).optional_body::<kv::DeleteBody>(),
        route(get.clone(), "/v1/requests/{request_id}", Read, Leader, requests::get).query::<ReadQuery>(),
        route(get.clone(), "/v1/sessions", Read, Leader, resource::list::<sessions::ListQuery>).query::<sessions::ListQuery>(),
        route(post.clone(), "/v1/sessions", Agent, Leader, sessions::create).body::<sessions::CreateBody>(),
        route(get.clone(), "/v1/sessions/{id}", Read, Leader, sessions::get).query::<ReadQuery>(),
        route(delete.clone(), "/v1/sessions/{id}", Agent, Leader, sessions::end),
        route(post.clone(), "/v1/sessions/{id}/keepalive", Agent, Leader, sessions::keepalive),
        route(get.clone(), "/v1/tasks", Read, Leader, resource::list::<tasks::ListQuery>).query::<tasks::ListQuery>(),
        route(post.clone(), "/v1/tasks", AgentKind(Tasks), Leader, tasks::submit).body::<tasks::SubmitBody>(),
        route(post.clone(), "/v1/tasks/claim", AgentKind(Tasks), Leader, tasks::claim).body::<tasks::ClaimBody>(),
        route(get.clone(), "/v1/tasks/{id}", Read, Leader, tasks::get).query::<ReadQuery>(),
        route(delete.clone(), "/v1/tasks/{id}", AgentKind(Tasks), Leader, tasks::by_kind::<false>).optional_body::<tasks::CancelBody>(),
        route(post.clone(), "/v1/tasks/{id}/heartbeat", AgentKind(Tasks), Leader, propose::<tasks::HeartbeatBody>).body::<tasks::HeartbeatBody>(),
        route(post.clone(), "/v1/tasks/{id}/complete", AgentKind(Tasks), Leader, super::task_finish::finish::<tasks::CompleteBody>).body::<tasks::CompleteBody>(),
        route(post.clone(), "/v1/tasks/{id}/fail", AgentKind(Tasks), Leader, super::task_finish::finish::<tasks::FailBody>).body::<tasks::FailBody>(),
        route(post.clone(), "/v1/tasks/{id}/retry", AgentKind(Tasks), Leader, tasks::by_kind::<true>).optional_body::<tasks::RetryBody>(),
        route(get.clone(), "/v1/locks", ReadOf(Locks, Query("prefix")), Leader, resource::list::<RoomListQuery<locks::Lock>>).query::<RoomListQuery<locks::Lock>>(),
        route(get.clone(), "/v1/locks/{name}", ReadOf(Locks, name), Leader, resource::get::<locks::Lock>).query::<ReadQuery>(),
        route(post.clone(), "/v1/locks/{name}/acquire", AgentOf(Locks, name), Leader, locks::acquire).body::<locks::AcquireBody>(),
        route(post.clone(), "/v1/locks/{name}/release", AgentOf(Locks, name), Leader, propose::<resource::ReleaseBody<locks::Lock>>).body::<resource::ReleaseBody<locks::Lock>>(),
        route(get.clone(), "/v1/semaphores", ReadOf(Semaphores, Query("prefix")), Leader, resource::list::<RoomListQuery<primitives::Semaphore>>).query::<RoomListQuery<primitives::Semaphore>>(),
        route(get.clone(), "/v1/semaphores/{name}", ReadOf(Semaphores, name), Leader, resource::get::<primitives::Semaphore>).query::<ReadQuery>(),
        route(post.clone(), "/v1/semaphores/{name}/acquire", AgentOf(Semaphores, name), Leader, primitives::semaphore_acquire).body::<primitives::AcquireBody>(),
        route(post.clone(), "/v1/semaphores/{name}/release", AgentOf(Semaphores, name), Leader, propose::<resource::ReleaseBody<primitives::Semaphore>>).body::<resource::ReleaseBody<primitives::Semaphore>>(),
        route(get.clone(), "/v1/barriers", ReadOf(Barriers, Query("prefix")), Leader, resource::list::<RoomListQuery<primitives::Barrier>>).query::<RoomListQuery<primitives::Barrier>>(),
        route(get.clone(), "/v1/barriers/{name}", ReadOf(Barriers, name), Leader, resource::get::<primitives::Barrier>).query::<ReadQuery>(),
        route(post.clone(), "/v1/barriers/{name}/wait", AgentOf(Barriers, name), Leader, primitives::barrier_wait).body::<primitives::BarrierBody>(),
        route(get.clone(), "/v1/elections", ReadOf(Elections, Query("prefix")), Leader, resource::list::<RoomListQuery<primitives::Election>>).query::<RoomListQuery<primitives::Election>>(),
        route(get.clone(), "/v1/elections/{name}", ReadOf(Elections, name), Leader, resource::get::<primitives::Election>).query::<ReadQuery>(),
        route(post.clone(), "/v1/elections/{name}/campaign", AgentOf(Elections, name), Leader, primitives::campaign).body::<primitives::CampaignBody>(),
        route(post.clone(), "/v1/elections/{name}/resign", AgentOf(Elections, name), Leader, propose::<primitives::ResignBody>).body::<primitives::ResignBody>(),
        route(get.clone(), "/v1/proposals", Read, Leader, resource::list::<proposals::ListQuery>).query::<proposals::ListQuery>(),
        route(post.clone(), "/v1/proposals", AgentKind(Proposals), Leader, proposals::create).body::<proposals::CreateBody>(),
        route(get.clone(), "/v1/proposals/{id}", Read, Leader, proposals::get).query::<proposals::GetQuery>(),
        route(post.clone(), "/v1/proposals/{id}/votes", AgentKind(Proposals), Leader, proposals::vote).body::<proposals::VoteBody>(),
        route(get.clone(), "/v1/2pc", Read, Leader, twophase::list).query::<twophase::ListQuery>(),
        route(post.clone(), "/v1/2pc", AgentKind(Txn), Leader, twophase::create).body::<twophase::CreateBody>(),
        route(get.clone(), "/v1/2pc/{id}", Read, Leader, twophase::get).query::<twophase::GetQuery>(),
        route(post.clone(), "/v1/2pc/{id}/vote", AgentKind(Txn), Leader, twophase::vote).body::<twophase::VoteBody>(),
        route(post.clone(), "/v1/2pc/{id}/ack", AgentKind(Txn), Leader, twophase::ack).body::<twophase::AckBody>(),
        route(post.clone(), "/v1/txn", AgentKind(Txn), Leader, txn::txn).body::<txn::TxnBody>(),
        route(get.clone(), "/v1/watch", Read, Local, watch::watch).query::<watch::WatchQuery>(),
        route(post.clone(), "/v1/cluster/members", Join, Leader, cluster::add_member).body::<cluster::AddMember>(),
        route(delete, "/v1/cluster/members/{id}", Admin, Leader, cluster::remove_member),
        route(post.clone(), "/v1/cluster/leader", Admin, Leader, cluster::transfer_leader).optional_body::<cluster::TransferBody>(),
        route(get.clone(), "/v1/cluster", Read, Local, cluster::info),
        route(post.clone(), "/v1/cluster/snapshot", Admin, Local, cluster::snapshot),
        route(get.clone(), "/v1/cluster/backup", Admin, Leader, cluster::backup),
        route(get.clone(), "/v1/cluster/log", Admin, Local, cluster::export_log),
        route(get.clone(), "/v1/debug/state", Admin, Local, cluster::state_digest),
        route(get.clone(), "/v1/debug/clock", Admin, Local, debug_clock::get),
        route(post, "/v1/debug/clock", Admin, Local, debug_clock::set).body::<debug_clock::SetOffset>(),
        route(get.clone(), "/v1/openapi.json", Read, Local, super::openapi::serve),
        route(get.clone(), "/health", Public, Local, cluster::health),
        route(get.clone(), "/ready", Public, Local, cluster::ready),
        route(get.clone(), "/ui", Public, Local, super::ui::page),
        route(get.clone(), "/ui/app.js", Public, Local, super::ui::script),
        route(get, "/metrics", Read, Local, super::metrics::metrics),
    ]
}

/// The state of one route's gate: the app and what the route needs.
#[derive(Clone)]
pub struct Gate {
    pub app: AppState,
    pub access: Access,
}

/// The name `param` gives in this request (empty when absent).
async fn named(param: Param, parts: &mut Parts) -> Result<String, ApiError> {
    match param {
        Param::Path(field) => {
            let params = RawPathParams::from_request_parts(parts, &())
                .await
                .map_err(|e| ApiError::invalid(ErrorCode::InvalidPath, e.body_text()))?;
            let value = params.iter().find(|(name, _)| *name == field);
            Ok(value.map_or_else(String::new, |(_, value)| value.to_owned()))
        }
        Param::Query(field) => {
            let query =
                Query::<std::collections::HashMap<String, String>>::try_from_uri(&parts.uri)
                    .map_err(|e| ApiError::invalid(ErrorCode::InvalidQuery, e.body_text()))?;
            Ok(query.0.get(field).cloned().unwrap_or_default())
        }
    }
}

/// What `access` needs for this request.
async fn need(access: Access, parts: &mut Parts) -> Result<Need, ApiError> {
    Ok(match access {
        Access::Public => Need::Public,
        Access::Admin => Need::Admin,
        Access::Join => Need::Join,
        Access::Read => Need::Read,
        Access::Agent => Need::Agent,
        Access::AgentKind(kind) => Need::AgentKind(kind),
        Access::ReadOf(kind, param) => Need::ReadOf(kind, named(param, parts).await?),
        Access::AgentOf(kind, param) => Need::AgentOf(kind, named(param, parts).await?),
    })
}

/// The refusal of a request without a valid token.
fn unauthenticated(error: TokenError) -> ApiError {
    let code = match error {
        TokenError::Expired => ErrorCode::TokenExpired,
        _ => ErrorCode::Unauthenticated,
    };
    ApiError::Unauthenticated {
        code,
        message: error.to_string(),
    }
}

/// The gate in front of every route: authenticates the caller (its bearer token),
/// checks that its scopes meet the route's need, and hands the handler the
/// `auth::Caller` in the request's extensions.
pub async fn gate(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    if gate.access == Access::Public {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let authorization = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let caller = match gate.app.auth.authenticate(authorization) {
        Ok(caller) => caller,
        Err(error) => return unauthenticated(error).into_response(),
    };
    // `admin` (and every caller of an open node) may do everything: no need to read
    // the resource's name out of the path or query on the hot path. It is never
    // rate-limited either, so an operator can always reach the cluster.
    if caller.grants.is_admin() {
        parts.extensions.insert(caller);
        return next.run(Request::from_parts(parts, body)).await;
    }
    let need = match need(gate.access, &mut parts).await {
        Ok(need) => need,
        Err(error) => return error.into_response(),
    };
    if !caller.grants.allows(&need) {
        let message = format!(
            "the token of {:?} does not allow this: it needs {need} (or admin)",
            caller.subject
        );
        return ApiError::Forbidden(message).into_response();
    }
    // Counted after authorization, so a refused request costs its subject nothing.
    if let Err(refused) = gate.app.admission.charge(&caller.subject) {
        return refused.into_response();
    }
    parts.extensions.insert(caller);
    next.run(Request::from_parts(parts, body)).await
}

impl Access {
    /// What the route needs, as `docs/security.md`'s endpoint table words it
    /// (`admin` is always enough and is not repeated).
    pub fn describe(self) -> String {
        let name = |param: Param| match param {
            Param::Path(field) => format!("`{{{field}}}`"),
            Param::Query(field) => format!("`?{field}`"),
        };
        match self {
            Access::Public => "nothing (public)".into(),
            Access::Admin => "`admin`".into(),
            Access::Join => "`join`".into(),
            Access::Read => "`read` or any `agent`".into(),
            Access::Agent => "any `agent`".into(),
            Access::AgentKind(kind) => format!("`agent:{kind}` (any prefix; see below)"),
            Access::ReadOf(kind, param) => {
                format!("`read`, or `agent:{kind}` with a prefix of {}", name(param))
            }
            Access::AgentOf(kind, param) => {
                format!("`agent:{kind}` with a prefix of {}", name(param))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The doc's table row of a route.
    fn row(route: &Route) -> String {
        format!(
            "| `{}` | `{}` | {} |",
            route.method,
            route.path,
            route.access.describe()
        )
    }

    #[test]
    fn every_route_is_once_in_the_table_and_in_the_security_doc() {
        let doc = include_str!("../../docs/security.md");
        let mut seen = std::collections::BTreeSet::new();
        let mut missing = Vec::new();
        for route in table() {
            assert!(
                seen.insert((route.method.to_string(), route.path)),
                "{} {} twice",
                route.method,
                route.path
            );
            if !doc.contains(&row(&route)) {
                missing.push(row(&route));
            }
        }
        assert!(
            missing.is_empty(),
            "docs/security.md lacks these rows of the endpoint table:\n{}",
            missing.join("\n")
        );
    }

    #[test]
    fn only_health_ready_and_the_dashboard_files_are_public_and_cluster_changes_need_admin() {
        for route in table() {
            let public = route.access == Access::Public;
            assert_eq!(
                public,
                ["/health", "/ready", "/ui", "/ui/app.js"].contains(&route.path),
                "{} {}",
                route.method,
                route.path
            );
            if route.path.starts_with("/v1/cluster/") || route.path.starts_with("/v1/debug/") {
                let joins = route.path == "/v1/cluster/members" && route.method == Method::POST;
                let expected = if joins { Access::Join } else { Access::Admin };
                assert_eq!(route.access, expected, "{}", route.path);
            }
        }
    }
}
