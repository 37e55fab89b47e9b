#!/usr/bin/env python3
"""Generates the sync client (src/conclave/_client.py) from the async one
(src/conclave/_aclient.py) by rewriting async constructs into their blocking twins
(the approach of the `unasync` project, written out here):

    python tools/gen_sync.py          # rewrite _client.py
    python tools/gen_sync.py --check  # exit 1 if _client.py is out of date
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "src" / "conclave"
SOURCE = ROOT / "_aclient.py"
TARGET = ROOT / "_client.py"

HEADER = '''"""The sync client. GENERATED from ``_aclient.py`` by ``tools/gen_sync.py``:
do not edit; edit the async client and regenerate."""
'''

RULES = [
    (r"\b_acompat\b", "_compat"),
    (r"\basync def ", "def "),
    (r"\bawait ", ""),
    (r"\basync with ", "with "),
    (r"\basync for ", "for "),
    (r"__aenter__", "__enter__"),
    (r"__aexit__", "__exit__"),
    (r"__aiter__", "__iter__"),
    (r"__anext__", "__next__"),
    (r"\bStopAsyncIteration\b", "StopIteration"),
    (r"\.aiter_lines\(", ".iter_lines("),
    (r"\.aread\(", ".read("),
    (r"\.aclose\(", ".close("),
    (r"\bAsync([A-Z]\w*)", r"\1"),
    (r"\bAwaitable\[([^\[\]]*(?:\[[^\[\]]*\])?[^\[\]]*)\]", r"\1"),
    (r"^    Awaitable,\n", ""),
    (r"\basync\b ", ""),
]


def generate() -> str:
    text = SOURCE.read_text()
    # Replace the module docstring.
    assert text.startswith('"""')
    end = text.index('"""', 3) + 3
    text = HEADER + text[end + 1:]
    for pattern, repl in RULES:
        text = re.sub(pattern, repl, text, flags=re.MULTILINE)
    return text


def main() -> int:
    out = generate()
    if "--check" in sys.argv:
        if not TARGET.exists() or TARGET.read_text() != out:
            print(f"{TARGET} is out of date: run tools/gen_sync.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
