"""Opaque page cursors: the resolved query and the last key a page returned, base64url JSON.

The query travels in the cursor so every page of a walk asks the same question (an ``end`` that
defaulted to "now" stays the first page's now); a page request repeating a parameter with another
value is refused rather than silently walking another query. A cursor is not signed: whatever one
holds is a query the caller could have asked anyway, and access is checked per request.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence

from api.errors import ApiError

Query = dict[str, str | int | None]


def encode(endpoint: str, query: Mapping[str, str | int | None], last_key: Sequence[object]) -> str:
    raw = json.dumps({"e": endpoint, "q": dict(query), "k": list(last_key)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _bad(why: str) -> ApiError:
    return ApiError(400, "bad_cursor", f"cursor not usable: {why}; start again without one")


def decode(endpoint: str, cursor: str, key_types: Sequence[type]) -> tuple[Query, list[object]]:
    """(query, last key) of a cursor made by ``encode`` for ``endpoint``; ApiError 400 otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise _bad(f"not a cursor of this API ({type(exc).__name__})") from None
    if not isinstance(data, dict) or set(data) != {"e", "q", "k"}:
        raise _bad("not a cursor of this API")
    if data["e"] != endpoint:
        raise _bad(f"made for {data['e']!r}, not {endpoint!r}")
    query, key = data["q"], data["k"]
    if not isinstance(query, dict) or not isinstance(key, list) or len(key) != len(key_types):
        raise _bad("damaged")
    for value, kind in zip(key, key_types):
        if not isinstance(value, kind) or isinstance(value, bool):
            raise _bad("damaged")
    return query, key


def resolve(endpoint: str, asked: Query, cursor: str | None, key_types: Sequence[type]) -> tuple[Query, list | None]:
    """The query a page answers: ``asked`` without a cursor; the cursor's own with one, where every
    parameter the request gave must agree with it."""
    if cursor is None:
        return asked, None
    query, key = decode(endpoint, cursor, key_types)
    for name, value in asked.items():
        if value is not None and query.get(name) != value:
            raise ApiError(
                400, "bad_cursor", f"parameter {name}={value!r} differs from the cursor's query ({query.get(name)!r})"
            )
    return query, key
