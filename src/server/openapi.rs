//! `GET /v1/openapi.json`: the OpenAPI 3.1 document of the client API, generated
//! from the route table (`routes::table`): every route's method and path, its
//! path and query parameters, its request body (the schema `utoipa` derives from
//! the very type the handler parses, so `deny_unknown_fields` and defaults are
//! what the server does), whether it needs a bearer token, and the error shape
//! every refusal shares (`code` one of [`ErrorCode::ALL`]).
//!
//! Success bodies are described as JSON objects without their fields (the views
//! are built as JSON values, not typed structs); docs/api.md has their fields.
//! Must not depend on storage, Raft or `transport`.

use std::sync::OnceLock;

use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::error_code::ErrorCode;
use super::routes::{self, Access, Route};

/// The document, built once per process (the table is fixed at compile time).
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| build(&routes::table()))
}

/// `GET /v1/openapi.json`.
pub async fn serve() -> Response {
    axum::Json(document()).into_response()
}

/// The OpenAPI path of a route path: axum's `{*key}` is OpenAPI's `{key}`.
pub fn openapi_path(path: &str) -> String {
    path.replace("{*", "{")
}

/// The names of a route path's parameters, in order.
fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| name.trim_start_matches('*'))
        .collect()
}

fn path_param_schema(name: &str) -> Value {
    match name {
        "id" => json!({"type": "integer", "format": "int64", "minimum": 0}),
        _ => json!({"type": "string", "minLength": 1}),
    }
}

/// A stable operation id: the method and the path's words (`put_v1_kv_key`).
fn operation_id(route: &Route) -> String {
    let words: Vec<&str> = route
        .path
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|word| !word.is_empty())
        .collect();
    format!(
        "{}_{}",
        route.method.as_str().to_lowercase(),
        words.join("_")
    )
}

fn error_schema() -> Value {
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
    json!({
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "enum": codes},
                    "message": {"type": "string"}
                },
                "additionalProperties": true
            }
        }
    })
}

fn responses(route: &Route) -> Value {
    let error = json!({
        "description": "a refusal (docs/api.md, Errors)",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    });
    let success = if route.path == "/metrics" {
        json!({
            "description": "Prometheus text exposition",
            "content": {"text/plain": {"schema": {"type": "string"}}}
        })
    } else if route.path == "/ui" || route.path == "/ui/app.js" {
        let kind = if route.path == "/ui" {
            "text/html"
        } else {
            "text/javascript"
        };
        json!({
            "description": "the dashboard (docs/ui.md)",
            "content": {kind: {"schema": {"type": "string"}}}
        })
    } else if route.path == "/v1/cluster/backup" || route.path == "/v1/cluster/log" {
        json!({
            "description": "a backup (docs/operations.md, Back up and restore)",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
        })
    } else if route.path == "/v1/watch" {
        json!({
            "description": "Server-Sent Events (docs/watch.md): each event's `data` is JSON",
            "content": {"text/event-stream": {"schema": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "event": {"type": "string"},
                    "data": {"type": "string"},
                    "retry": {"type": "integer"}
                }
            }}}
        })
    } else {
        json!({
            "description": "done (docs/api.md has the body's fields)",
            "content": {"application/json": {"schema": {"type": "object"}}}
        })
    };
    let mut responses = Map::new();
    responses.insert("200".into(), success);
    if route.path == "/v1/tasks/claim" {
        responses.insert(
            "204".into(),
            json!({"description": "no task was claimable within wait_ms"}),
        );
    }
    if route.place != routes::Place::Local {
        responses.insert(
            "307".into(),
            json!({"description": "?redirect=true on a follower: the leader's URL in Location"}),
        );
    }
    if route.path == "/ready" {
        responses.insert(
            "503".into(),
            json!({"description": "not ready", "content": {"application/json": {"schema": {"type": "object"}}}}),
        );
    }
    responses.insert("default".into(), error);
    Value::Object(responses)
}

fn operation(
    route: &Route,
    components: &mut Vec<(
        String,
        utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
    )>,
) -> Value {
    let mut parameters: Vec<Value> = path_params(route.path)
        .into_iter()
        .map(|name| {
            json!({"name": name, "in": "path", "required": true, "schema": path_param_schema(name)})
        })
        .collect();
    if let Some(query) = route.query {
        for parameter in query() {
            parameters.push(serde_json::to_value(parameter).expect("a parameter serializes"));
        }
    }
    let mut operation = Map::new();
    operation.insert("operationId".into(), json!(operation_id(route)));
    operation.insert(
        "description".into(),
        json!(format!("Needs {}.", route.access.describe())),
    );
    if !parameters.is_empty() {
        operation.insert("parameters".into(), Value::Array(parameters));
    }
    if let Some(body) = route.body {
        let schema = (body.schema)(components);
        operation.insert(
            "requestBody".into(),
            json!({
                "required": body.required,
                "content": {"application/json": {"schema": schema}}
            }),
        );
    }
    if route.access != Access::Public {
        operation.insert("security".into(), json!([{"bearer": []}]));
    }
    operation.insert("responses".into(), responses(route));
    Value::Object(operation)
}

fn build(table: &[Route]) -> Value {
    let mut paths = Map::new();
    let mut components = Vec::new();
    for route in table {
        let item = paths
            .entry(openapi_path(route.path))
            .or_insert_with(|| json!({}));
        item[route.method.as_str().to_lowercase()] = operation(route, &mut components);
    }
    let mut schemas = Map::new();
    for (name, schema) in components {
        schemas.insert(
            name,
            serde_json::to_value(schema).expect("a schema serializes"),
        );
    }
    schemas.insert("Error".into(), error_schema());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Conclave",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A Raft-replicated coordination server. docs/api.md is the full contract; docs/security.md the scopes."
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_an_operation_with_its_parameters_and_body() {
        let document = document();
        let table = routes::table();
        let mut operations = 0;
        for route in &table {
            let path = openapi_path(route.path);
            let method = route.method.as_str().to_lowercase();
            let operation = &document["paths"][&path][&method];
            assert!(
                operation.is_object(),
                "{method} {path} is not in the document"
            );
            operations += 1;
            let named: Vec<&str> = operation["parameters"]
                .as_array()
                .map(|all| {
                    all.iter()
                        .filter(|p| p["in"] == "path")
                        .map(|p| p["name"].as_str().unwrap())
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(named, path_params(route.path), "{method} {path}");
            // A route whose handler parses a JSON body documents it.
            let writes = method != "get" && !path.starts_with("/v1/cluster/snapshot");
            let bodiless = [
                "/v1/sessions/{id}",
                "/v1/sessions/{id}/keepalive",
                "/v1/cluster/members/{id}",
            ];
            if writes && !bodiless.contains(&path.as_str()) {
                assert!(
                    operation["requestBody"].is_object(),
                    "{method} {path} has no requestBody"
                );
            }
            assert_eq!(
                operation["security"].is_array(),
                route.access != Access::Public,
                "{method} {path}"
            );
        }
        let counted: usize = document["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|item| item.as_object().unwrap().len())
            .sum();
        assert_eq!(counted, operations, "operations that are not routes");
    }

    #[test]
    fn body_schemas_are_the_parsed_types_and_refuse_unknown_fields() {
        let document = document();
        let schemas = &document["components"]["schemas"];
        let put = &schemas["PutBody"];
        assert_eq!(put["additionalProperties"], json!(false), "{put}");
        assert_eq!(put["required"], json!(["value"]), "{put}");
        // Nested types are components too, and every reference resolves.
        let text = document.to_string();
        for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &reference[..reference.find('"').unwrap()];
            assert!(schemas[name].is_object(), "dangling $ref {name}");
        }
        assert!(schemas["GuardBody"].is_object());
        let codes = &schemas["Error"]["properties"]["error"]["properties"]["code"]["enum"];
        assert!(codes.as_array().unwrap().contains(&json!("rate_limited")));
    }
}
