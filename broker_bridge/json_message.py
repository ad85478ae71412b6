"""The JSON framing that status and command messages share, and the error every parse raises.

A message is refused before ``json.loads`` sees it when it is too large or
nested too deeply: the decoder recurses once per level, so a few kilobytes
of ``[[[[`` would otherwise raise RecursionError instead of a clear error.
"""

from __future__ import annotations

import json
import re
from typing import Any

from broker_bridge.envelope import INT64_MAX, MAX_TIMESTAMP_NS
from vocabulary.stations import STATION_ID_PATTERN

MAX_JSON_DEPTH = 32  # a status message nests 3 levels; room for what comes next, never for a stack overflow

_STRUCTURE = re.compile(r'["\\\[\]{}]')


class MessageError(ValueError):
    """A JSON message that breaks the contract.

    ``reason`` is the stable code the collector stores with a reject
    (``oversized``, ``undecodable``, ``schema``); ``field`` names the field at
    fault (dotted path, "" for the message as a whole).
    """

    def __init__(self, reason: str, field: str, detail: str) -> None:
        super().__init__(f"{reason}: {field + ': ' if field else ''}{detail}")
        self.reason = reason
        self.field = field
        self.detail = f"{field}: {detail}" if field else detail


def encode_json(doc: dict[str, Any]) -> bytes:
    """The bytes on the wire: ``json.dumps`` defaults (ASCII, ", " and ": "), as every agent has sent them."""
    return json.dumps(doc).encode("ascii")


def load_json_object(payload: bytes, what: str, max_bytes: int) -> dict[str, Any]:
    """``payload`` as a JSON object, after checking its size, encoding and depth."""
    if len(payload) > max_bytes:
        raise MessageError("oversized", "", f"{what} of {len(payload)} bytes > {max_bytes}")
    try:
        text = bytes(payload).decode("utf-8")  # json.loads would also take UTF-16/32; the contract is UTF-8
    except UnicodeDecodeError as exc:
        raise MessageError("undecodable", "", f"{what} is not UTF-8 JSON: {exc}") from exc
    depth = nesting_depth(text, MAX_JSON_DEPTH)
    if depth > MAX_JSON_DEPTH:
        raise MessageError("undecodable", "", f"{what} nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        doc = json.loads(text)
    except ValueError as exc:  # JSONDecodeError, or an integer of over 4,300 digits
        raise MessageError("undecodable", "", f"{what} is not UTF-8 JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise MessageError("schema", "", f"{what} must be a JSON object")
    return doc


def nesting_depth(text: str, limit: int) -> int:
    """How deeply arrays and objects nest in ``text`` (brackets inside strings do not count); stops past ``limit``."""
    depth = deepest = 0
    in_string = False
    skip_to = 0  # the character after a backslash in a string is escaped, whatever it is
    for match in _STRUCTURE.finditer(text):
        position, char = match.start(), match.group()
        if position < skip_to:
            continue
        if in_string:
            if char == "\\":
                skip_to = position + 2
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif char in "]}":
            depth -= 1
    return deepest


# -- field readers: each names the field and says what was wrong ---------------------------------------


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def require(doc: dict[str, Any], key: str, path: str) -> Any:
    if key not in doc:
        raise MessageError("schema", path, "is missing")
    return doc[key]


def as_int(value: Any, path: str, low: int = 0, high: int = INT64_MAX) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise MessageError("schema", path, f"must be an integer {low}..{high}, got {_shown(value)}")
    return value


def as_time_ns(value: Any, path: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_TIMESTAMP_NS:
        raise MessageError("schema", path, f"must be a time in ns between 1970 and 2261, got {_shown(value)}")
    return value


def as_float(value: Any, path: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise MessageError("schema", path, f"must be a number, got {_shown(value)}")
    return float(value)


def as_bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise MessageError("schema", path, f"must be true or false, got {_shown(value)}")
    return value


def as_str(value: Any, path: str, max_len: int = 256) -> str:
    if not isinstance(value, str) or len(value) > max_len:
        raise MessageError("schema", path, f"must be a string of at most {max_len} characters, got {_shown(value)}")
    return value


def as_station_id(value: Any, path: str) -> str:
    if not isinstance(value, str) or not STATION_ID_PATTERN.match(value):
        raise MessageError("schema", path, f"must be a station id (1-64 of A-Z a-z 0-9 _ . -), got {_shown(value)}")
    return value


def as_object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MessageError("schema", path, f"must be a JSON object, got {_shown(value)}")
    return value


def as_list(value: Any, path: str, max_len: int) -> list[Any]:
    if not isinstance(value, list) or len(value) > max_len:
        raise MessageError("schema", path, f"must be a list of at most {max_len} items, got {_shown(value)}")
    return value


def optional(value: Any, read, path: str, *args):
    return None if value is None else read(value, path, *args)
