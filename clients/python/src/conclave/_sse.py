"""A Server-Sent Events line parser (the subset /v1/watch sends)."""

from __future__ import annotations

from typing import List, Optional, Tuple, Union

# ("event", id, type, data) or ("comment", text)
Frame = Union[Tuple[str, Optional[str], str, str], Tuple[str, str]]


class SseParser:
    def __init__(self) -> None:
        self._id: Optional[str] = None
        self._type = ""
        self._data: List[str] = []

    def feed(self, line: str) -> Optional[Frame]:
        if line == "":
            if not self._data and not self._type and self._id is None:
                return None
            frame = ("event", self._id, self._type or "message", "\n".join(self._data))
            self._id, self._type, self._data = None, "", []
            return frame
        if line.startswith(":"):
            return ("comment", line[1:].strip())
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "id":
            self._id = value
        elif name == "event":
            self._type = value
        elif name == "data":
            self._data.append(value)
        return None
