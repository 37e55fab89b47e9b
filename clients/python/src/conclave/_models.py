"""Typed results. Views the server returns with many fields stay plain dicts
(``Dict[str, Any]``) where docs/api.md lists their fields."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

Json = Any
View = Dict[str, Any]

LIVE = "live"
JEOPARDY = "jeopardy"
EXPIRED = "expired"


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: Json
    version: int
    create_index: int
    session_id: Optional[int] = None

    @staticmethod
    def from_json(body: View) -> "KeyValue":
        return KeyValue(
            key=body["key"],
            value=body.get("value"),
            version=int(body["version"]),
            create_index=int(body["create_index"]),
            session_id=body.get("session_id"),
        )


@dataclass(frozen=True)
class Claim:
    task_id: int
    fencing_token: int
    lease_expires_at_ms: int
    index: int
    task: View

    @staticmethod
    def from_json(body: View) -> "Claim":
        return Claim(
            task_id=int(body["task"]["task_id"]),
            fencing_token=int(body["fencing_token"]),
            lease_expires_at_ms=int(body["lease_expires_at_ms"]),
            index=int(body["index"]),
            task=body["task"],
        )


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    index: int
    results: List[View]


@dataclass(frozen=True)
class BarrierResult:
    generation: int
    released: bool
    broken: bool


@dataclass(frozen=True)
class Event:
    """One watch event: ``id`` is ``"<index>.<seq>"``, ``data`` the whole JSON."""

    id: Optional[str]
    type: str
    data: View = field(repr=False)

    @property
    def index(self) -> Optional[int]:
        v = self.data.get("index")
        return None if v is None else int(v)

    @property
    def seq(self) -> Optional[int]:
        v = self.data.get("seq")
        return None if v is None else int(v)

    @staticmethod
    def parse(event_id: Optional[str], event_type: str, data: str) -> "Event":
        try:
            body = json.loads(data) if data else {}
        except ValueError:
            body = {"raw": data}
        if not isinstance(body, dict):
            body = {"value": body}
        return Event(event_id, body.get("type", event_type) or event_type, body)


def event_key(event_id: str) -> tuple[int, int]:
    index, _, seq = event_id.partition(".")
    return int(index), int(seq or 0)
