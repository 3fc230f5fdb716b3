"""Text that storage cannot keep, refused at the boundary (lone surrogates, NUL and other
control characters), and text already stored rendered safely.

A JSON string may carry `\\ud800` (a lone surrogate: no UTF-8 encodes it, so a contract
whose history holds one could never be shown again) or `\\u0000` (PostgreSQL refuses it,
SQLite stores it). Every request's query string, JSON body and form body is checked
here before any route runs, so every text field of every route is covered alike, on
both backends. Tab, line feed and carriage return are kept (a reason may have lines).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl

# C0 controls but tab, LF and CR; DEL and the C1 controls; the surrogates.
_REFUSED = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_SURROGATES = re.compile("[\ud800-\udfff]")


def refused_in(value: Any, path: str = "") -> str | None:
    """The path (`milestones.0.title`) of the first string in `value`, key or value,
    that holds a refused character; None if there is none."""
    if isinstance(value, str):
        return path or "body" if _REFUSED.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if _REFUSED.search(str(key)):
                return where
            found = refused_in(item, where)
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = refused_in(item, f"{path}.{index}" if path else str(index))
            if found is not None:
                return found
    return None


def refused_in_query(query: str) -> str | None:
    """The first query parameter (or form field) whose name or value is refused."""
    for name, value in parse_qsl(query, keep_blank_values=True, errors="surrogateescape"):
        if _REFUSED.search(name) or _REFUSED.search(value):
            return name
    return None


def refused_in_json(body: bytes) -> str | None:
    """The field of a JSON body holding a refused character. A body without escapes
    (`\\u`) or C1 bytes needs no parse: raw control bytes are already invalid JSON."""
    if b"\\u" not in body and b"\xc2" not in body:
        return None
    try:
        parsed = json.loads(body)
    except ValueError:  # the route answers malformed JSON itself
        return None
    return refused_in(parsed)


def printable(text: str) -> str:
    """`text` with any lone surrogate (stored before this check) as U+FFFD: encodable."""
    return _SURROGATES.sub("\ufffd", text)


def encodable(value: Any) -> Any:
    """`value` with every string `printable` (keys too)."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {encodable(k): encodable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encodable(v) for v in value]
    return value
