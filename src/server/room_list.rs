//! `GET /v1/locks`, `/v1/semaphores`, `/v1/barriers`, `/v1/elections`: a page of a
//! named room's resources in name order, each shown as its `GET /v1/<room>/{name}`
//! shows it, filtered by `prefix` and paged by `after` (the last name of the page
//! before) like `GET /v1/kv`. A room lists through [`Listed`] on its `View` marker.
//! Like every handler file it reaches the replica only through `AppState`.

use std::marker::PhantomData;
use std::ops::Bound;

use axum::response::Response;
use serde::Deserialize;

use super::error::ApiError;
use super::resource::View;
use super::Consistency;
use crate::sm::State;

/// A room whose names can be listed in order.
pub trait Listed: View {
    /// The room's names from `start` (inclusive) on, in byte order.
    fn names_from<'a>(state: &'a State, start: &str) -> Box<dyn Iterator<Item = &'a str> + 'a>;
}

fn range<'a, T>(
    map: &'a std::collections::BTreeMap<String, T>,
    start: &str,
) -> Box<dyn Iterator<Item = &'a str> + 'a> {
    let bounds = (Bound::Included(start), Bound::Unbounded);
    Box::new(map.range::<str, _>(bounds).map(|(name, _)| name.as_str()))
}

impl Listed for super::locks::Lock {
    fn names_from<'a>(state: &'a State, start: &str) -> Box<dyn Iterator<Item = &'a str> + 'a> {
        Box::new(state.locks.names_from(start))
    }
}

impl Listed for super::primitives::Semaphore {
    fn names_from<'a>(state: &'a State, start: &str) -> Box<dyn Iterator<Item = &'a str> + 'a> {
        range(&state.semaphores, start)
    }
}

impl Listed for super::primitives::Barrier {
    fn names_from<'a>(state: &'a State, start: &str) -> Box<dyn Iterator<Item = &'a str> + 'a> {
        range(&state.barriers, start)
    }
}

impl Listed for super::primitives::Election {
    fn names_from<'a>(state: &'a State, start: &str) -> Box<dyn Iterator<Item = &'a str> + 'a> {
        range(&state.elections, start)
    }
}

/// The query of a room's list.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields, bound(deserialize = ""))]
#[into_params(parameter_in = Query)]
pub struct RoomListQuery<R> {
    /// Only names starting with it.
    #[serde(default)]
    prefix: String,
    /// Start strictly after this name.
    after: Option<String>,
    limit: Option<usize>,
    #[serde(default)]
    #[param(inline)]
    consistency: Consistency,
    #[serde(skip)]
    #[param(ignore)]
    room: PhantomData<fn() -> R>,
}

impl<R: Listed + 'static> super::resource::ListQuery for RoomListQuery<R> {
    fn page(&self) -> (Option<usize>, Consistency) {
        (self.limit, self.consistency)
    }

    fn list(self, state: &State, limit: usize) -> Result<Response, ApiError> {
        let start = match &self.after {
            Some(after) if after.as_str() >= self.prefix.as_str() => after.as_str(),
            _ => self.prefix.as_str(),
        };
        let after = self.after.clone();
        let prefix = self.prefix.clone();
        let matching = R::names_from(state, start)
            .skip_while(move |name| Some(*name) == after.as_deref())
            .take_while(move |name| name.starts_with(prefix.as_str()))
            .map(|name| R::view(state, name));
        Ok(super::list_page(matching, limit, "name"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::primitives::Barrier;
    use super::*;
    use crate::sm::test_support::{one, with_sessions_ttl};
    use crate::sm::{barriers::BarrierCommand, Command};

    fn state_with_barriers(names: &[&str]) -> State {
        let mut state = with_sessions_ttl(1, 60_000);
        for name in names {
            let wait = BarrierCommand::Wait {
                name: (*name).into(),
                session_id: 1,
                parties: 2,
            };
            one(&mut state, 1, Command::Barrier(wait));
        }
        state
    }

    async fn body(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn query(prefix: &str, after: Option<&str>) -> RoomListQuery<Barrier> {
        RoomListQuery {
            prefix: prefix.into(),
            after: after.map(Into::into),
            limit: None,
            consistency: Consistency::default(),
            room: PhantomData,
        }
    }

    #[tokio::test]
    async fn a_list_pages_by_name_within_its_prefix() {
        use super::super::resource::ListQuery;
        let state = state_with_barriers(&["a/1", "a/2", "a/3", "b/1"]);
        let page = body(query("a/", None).list(&state, 2).unwrap()).await;
        let names: Vec<_> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].clone())
            .collect();
        assert_eq!(names, ["a/1", "a/2"]);
        assert_eq!(page["next_after"], "a/2");
        let page = body(query("a/", Some("a/2")).list(&state, 2).unwrap()).await;
        assert_eq!(page["items"].as_array().unwrap().len(), 1);
        assert_eq!(page["items"][0]["name"], "a/3");
        assert!(page["next_after"].is_null());
        assert_eq!(page["items"][0]["arrived"], serde_json::json!([1]));
    }
}
