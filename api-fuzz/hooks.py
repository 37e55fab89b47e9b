"""Schemathesis hooks for Conclave's API fuzz run (api-fuzz/run.sh).

Random data rarely names a live session, a held lock's fencing token or a claimed
task, so most operations would only ever be refused. Before each operation's
tests, `before_add_examples` builds the state that operation needs on the node
under test (through the API, with the run's admin token) and adds one valid case
for it; `check_report.py` then requires at least one 2xx per operation. Each
example gets resources of its own (a fresh session, a unique name), so no
example depends on another, whatever order the operations run in.
"""

import itertools
import json
import os
import urllib.error
import urllib.request

import schemathesis

BASE = os.environ["CONCLAVE_URL"]
TOKEN = os.environ["CONCLAVE_TOKEN"]
_serial = itertools.count(1)


def unique(prefix):
    return f"st-{prefix}-{next(_serial)}"


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(BASE + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {TOKEN}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
            return json.loads(text) if text else {}
    except urllib.error.HTTPError as error:
        raise RuntimeError(f"fixture {method} {path} {body}: {error.code} {error.read()!r}") from None


def session(capabilities=()):
    created = call(
        "POST",
        "/v1/sessions",
        {"name": unique("session"), "capabilities": list(capabilities), "capacity": 10, "ttl_ms": 600_000},
    )
    return created["session_id"]


def submit(capability=None, **extra):
    body = {"kind": "st", **extra}
    if capability:
        body["required_capabilities"] = [capability]
    return call("POST", "/v1/tasks", body)["task_id"]


def claimed(max_attempts=3):
    """A task claimed by a session of its own: (task_id, fencing_token)."""
    capability = unique("cap")
    owner = session([capability])
    submit(capability, max_attempts=max_attempts)
    claim = call("POST", "/v1/tasks/claim", {"session_id": owner, "wait_ms": 1_000})
    return claim["task"]["task_id"], claim["fencing_token"]


def held(room, **extra):
    """(name, session_id, fencing_token) of a lock or semaphore just acquired."""
    name, owner = unique(room), session()
    granted = call("POST", f"/v1/{room}/{name}/acquire", {"session_id": owner, **extra})
    return name, owner, granted["fencing_token"]


def put(key, request_id=None):
    body = {"value": 1}
    if request_id:
        body["request_id"] = request_id
    call("PUT", f"/v1/kv/{key}", body)
    return key


def a_retry():
    task, token = claimed(max_attempts=1)
    call("POST", f"/v1/tasks/{task}/fail", {"fencing_token": token, "error": "x", "retryable": False})
    return {"path_parameters": {"id": task}}


def a_release(room, **extra):
    name, owner, token = held(room, **extra)
    return {"path_parameters": {"name": name}, "body": {"session_id": owner, "fencing_token": token}}


def a_resign():
    name, owner = unique("election"), session()
    won = call("POST", f"/v1/elections/{name}/campaign", {"session_id": owner})
    return {"path_parameters": {"name": name}, "body": {"session_id": owner, "term": won["term"]}}


def a_member_removal():
    member = 20 + next(_serial)
    call("POST", "/v1/cluster/members", {"id": member, "addr": f"127.0.0.1:{member}", "voter": False})
    return {"path_parameters": {"id": member}}


def a_heartbeat(kind):
    task, token = claimed()
    body = {"fencing_token": token}
    if kind == "fail":
        body["error"] = "x"
    return {"path_parameters": {"id": task}, "body": body}


def proposal():
    body = {"title": unique("proposal"), "voters": ["a", "b"], "rule": "majority", "deadline_ms": 600_000}
    return call("POST", "/v1/proposals", body)["proposal_id"]


def transaction(participants=("a",)):
    body = {"participants": list(participants), "timeout_ms": 600_000}
    return call("POST", "/v1/2pc", body)["id"]


def an_ack():
    id = transaction()
    call("POST", f"/v1/2pc/{id}/vote", {"participant": "a", "vote": "commit"})
    return {"path_parameters": {"id": id}, "body": {"participant": "a"}}


def a_claim():
    capability = unique("cap")
    owner = session([capability])
    submit(capability)
    return {"body": {"session_id": owner, "wait_ms": 0}}


# One valid case per operation, built when schemathesis asks for its examples.
FIXTURES = {
    "GET /v1/kv": lambda: {"query": {"prefix": "st-"}},
    "GET /v1/kv/{key}": lambda: {"path_parameters": {"key": put(unique("key"))}},
    "PUT /v1/kv/{key}": lambda: {"path_parameters": {"key": unique("key")}, "body": {"value": {"a": [1]}}},
    "DELETE /v1/kv/{key}": lambda: {"path_parameters": {"key": put(unique("key"))}, "body": {}},
    "GET /v1/requests/{request_id}": lambda: {
        "path_parameters": {"request_id": (lambda rid: (put(unique("key"), rid), rid)[1])(unique("rid"))}
    },
    "GET /v1/sessions": lambda: {"query": {}},
    "POST /v1/sessions": lambda: {"body": {"name": unique("new"), "ttl_ms": 60_000}},
    "GET /v1/sessions/{id}": lambda: {"path_parameters": {"id": session()}},
    "DELETE /v1/sessions/{id}": lambda: {"path_parameters": {"id": session()}},
    "POST /v1/sessions/{id}/keepalive": lambda: {"path_parameters": {"id": session()}},
    "GET /v1/tasks": lambda: {"query": {}},
    "POST /v1/tasks": lambda: {"body": {"kind": "st", "payload": {"n": 1}}},
    "POST /v1/tasks/claim": a_claim,
    "GET /v1/tasks/{id}": lambda: {"path_parameters": {"id": submit()}},
    "DELETE /v1/tasks/{id}": lambda: {"path_parameters": {"id": submit()}, "body": {}},
    "POST /v1/tasks/{id}/heartbeat": lambda: a_heartbeat("heartbeat"),
    "POST /v1/tasks/{id}/complete": lambda: a_heartbeat("complete"),
    "POST /v1/tasks/{id}/fail": lambda: a_heartbeat("fail"),
    "POST /v1/tasks/{id}/retry": a_retry,
    "GET /v1/locks/{name}": lambda: {"path_parameters": {"name": unique("lock")}},
    "POST /v1/locks/{name}/acquire": lambda: {
        "path_parameters": {"name": unique("lock")},
        "body": {"session_id": session()},
    },
    "POST /v1/locks/{name}/release": lambda: a_release("locks"),
    "GET /v1/semaphores/{name}": lambda: {"path_parameters": {"name": unique("semaphore")}},
    "POST /v1/semaphores/{name}/acquire": lambda: {
        "path_parameters": {"name": unique("semaphore")},
        "body": {"session_id": session(), "limit": 2},
    },
    "POST /v1/semaphores/{name}/release": lambda: a_release("semaphores", limit=2),
    "GET /v1/barriers/{name}": lambda: {"path_parameters": {"name": unique("barrier")}},
    "POST /v1/barriers/{name}/wait": lambda: {
        "path_parameters": {"name": unique("barrier")},
        "body": {"session_id": session(), "parties": 1},
    },
    "GET /v1/elections/{name}": lambda: {"path_parameters": {"name": unique("election")}},
    "POST /v1/elections/{name}/campaign": lambda: {
        "path_parameters": {"name": unique("election")},
        "body": {"session_id": session()},
    },
    "POST /v1/elections/{name}/resign": a_resign,
    "GET /v1/proposals": lambda: {"query": {}},
    "POST /v1/proposals": lambda: {
        "body": {"title": "t", "voters": ["a", 7], "rule": {"threshold": 1}, "deadline_ms": 60_000, "payload": {"x": 1}}
    },
    "GET /v1/proposals/{id}": lambda: {"path_parameters": {"id": proposal()}},
    "POST /v1/proposals/{id}/votes": lambda: {"path_parameters": {"id": proposal()}, "body": {"voter": "a", "vote": "yes"}},
    "POST /v1/txn": lambda: {
        "body": {
            "compare": [{"key": unique("txn"), "exists": False}],
            "success": [{"put": {"key": unique("txn"), "value": {"a": 1}}}],
            "failure": [],
        }
    },
    "GET /v1/2pc": lambda: {"query": {}},
    "POST /v1/2pc": lambda: {"body": {"participants": ["a", "b"], "timeout_ms": 60_000, "payload": [1]}},
    "GET /v1/2pc/{id}": lambda: {"path_parameters": {"id": transaction()}},
    "POST /v1/2pc/{id}/vote": lambda: {
        "path_parameters": {"id": transaction()},
        "body": {"participant": "a", "vote": "commit"},
    },
    "POST /v1/2pc/{id}/ack": an_ack,
    "POST /v1/cluster/members": lambda: {
        "body": {"id": 10 + next(_serial) % 10, "addr": "127.0.0.1:9", "voter": False}
    },
    "DELETE /v1/cluster/members/{id}": a_member_removal,
    "POST /v1/debug/clock": lambda: {"body": {"offset_ms": 0}},
    "GET /v1/watch": lambda: {"query": {"from_index": 1, "timeout_ms": 200}},
}


@schemathesis.hook
def map_query(context, query):
    """A watch streams until its client leaves: give every generated one an end
    (`timeout_ms`, at most the node's max_wait_ms), so each answers in time."""
    if context.operation.path == "/v1/watch" and isinstance(query, dict):
        timeout = query.get("timeout_ms")
        if not isinstance(timeout, int) or not 0 <= timeout <= 200:
            query = {**query, "timeout_ms": 200}
    return query


@schemathesis.hook
def before_add_examples(context, examples):
    operation = context.operation
    label = f"{operation.method.upper()} {operation.path}"
    fixture = FIXTURES.get(label, lambda: {})
    examples.append(operation.Case(**fixture()))
