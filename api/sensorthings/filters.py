"""``$filter`` and ``$orderby``: the OData text parsed by the ``odata-query`` package, its tree turned into
the store's condition tree (``store.sta_queries``), then either SQL with bound values (Observations) or a
test in Python over the small entity sets (Things, Datastreams, ...).

odata-query's own SQL visitor writes literals into the SQL text; it is not used. Only its lexer and
parser are, and only comparisons (eq ne lt le gt ge), and/or/not and literals are admitted.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping

from odata_query import ast
from odata_query.exceptions import ODataException
from odata_query.grammar import ODataLexer, ODataParser

from api.errors import ApiError
from store.sta_queries import AllOf, AnyOf, Compare, Condition, Negated

_OPS = {ast.Eq: "eq", ast.NotEq: "ne", ast.Lt: "lt", ast.LtE: "le", ast.Gt: "gt", ast.GtE: "ge"}
_FLIP = {"eq": "eq", "ne": "ne", "lt": "gt", "le": "ge", "gt": "lt", "ge": "le"}
_FRACTION = re.compile(r"\.(\d+)")


def bad_query(message: str) -> ApiError:
    return ApiError(400, "bad_query", message)


def instant_ns(text: str) -> int:
    """An ISO 8601 instant with an offset, to the nanosecond (datetime stops at microseconds)."""
    match = _FRACTION.search(text)
    digits = match.group(1) if match else ""
    whole = _FRACTION.sub("", text, count=1).replace("Z", "+00:00")
    try:
        when = dt.datetime.fromisoformat(whole)
    except ValueError:
        raise bad_query(f"{text!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        raise bad_query(f"{text!r} has no offset: add Z (UTC) or +07:00 (Vietnam)")
    delta = when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + int((digits or "0")[:9].ljust(9, "0"))


def _unquoted_ids(text: str) -> str:
    """``@iot.id`` as ``id`` outside string literals (odata-query's lexer has no ``@``); OData doubles a
    quote inside a literal, so splitting on quotes leaves the outside parts at even positions."""
    parts = text.split("'")
    return "'".join(p.replace("@iot.id", "id") if i % 2 == 0 else p for i, p in enumerate(parts))


def _path(node: ast._Node) -> str:
    if isinstance(node, ast.Identifier):
        return node.name
    if isinstance(node, ast.Attribute):
        return f"{_path(node.owner)}/{node.attr}"
    raise bad_query(f"expected a property, got {type(node).__name__}")


def _literal(node: ast._Node) -> object:
    if isinstance(node, ast.DateTime):
        return ("time", instant_ns(node.val))
    if isinstance(node, ast.Null):
        return None
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub)
        and isinstance(node.operand, ast.Integer | ast.Float)
    ):
        return -node.operand.py_val
    if isinstance(node, ast.Integer | ast.Float | ast.String | ast.Boolean):
        return node.py_val
    raise bad_query(f"expected a literal value, got {type(node).__name__}")


def _is_property(node: ast._Node) -> bool:
    return isinstance(node, ast.Identifier | ast.Attribute)


def parse_filter(text: str) -> Condition:
    """The condition tree of a ``$filter``, over property paths as written (``id``, ``phenomenonTime``,
    ``resultQuality/qc_flag``, ``properties/province_code``); a time literal is ``("time", ns)``."""
    try:
        tree = ODataParser().parse(ODataLexer().tokenize(_unquoted_ids(text)))
    except ODataException as exc:
        raise bad_query(f"$filter={text!r}: {exc}") from None
    return _convert(tree)


def _convert(node: ast._Node) -> Condition:
    if isinstance(node, ast.BoolOp):
        parts = (_convert(node.left), _convert(node.right))
        return AllOf(parts) if isinstance(node.op, ast.And) else AnyOf(parts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return Negated(_convert(node.operand))
    if isinstance(node, ast.Compare):
        op = _OPS.get(type(node.comparator))
        if op is None:
            raise bad_query(f"operator {type(node.comparator).__name__} is not supported; use eq ne lt le gt ge")
        if _is_property(node.left) and not _is_property(node.right):
            return Compare(_path(node.left), op, _literal(node.right))
        if _is_property(node.right) and not _is_property(node.left):
            return Compare(_path(node.right), _FLIP[op], _literal(node.left))
        raise bad_query("a comparison needs one property and one literal")
    if isinstance(node, ast.Call):
        raise bad_query(f"function {node.func.name}() is not supported; use comparisons with and/or/not")
    raise bad_query(f"{type(node).__name__} is not supported in $filter")


def rewrite(condition: Condition, compare: Callable[[Compare], Condition]) -> Condition:
    """The same tree with every comparison replaced by ``compare(c)`` (a property renamed, a value converted)."""
    if isinstance(condition, Compare):
        return compare(condition)
    if isinstance(condition, Negated):
        return Negated(rewrite(condition.part, compare))
    parts = tuple(rewrite(p, compare) for p in condition.parts)
    return AllOf(parts) if isinstance(condition, AllOf) else AnyOf(parts)


def lookup(entity: Mapping[str, object], path: str) -> object:
    """A property path of an entity's JSON (``id`` is ``@iot.id``), None where it is absent."""
    value: object = entity
    for part in path.split("/"):
        if not isinstance(value, Mapping):
            return None
        value = value.get("@iot.id" if part == "id" else part)
    return value


def _comparable(left: object, right: object) -> bool:
    numbers = (int, float)
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool)
    return (isinstance(left, numbers) and isinstance(right, numbers)) or type(left) is type(right)


def _time_of(value: object) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        return instant_ns(value)
    except ApiError:
        return None


def matches(condition: Condition, entity: Mapping[str, object]) -> bool:
    """Whether ``entity`` passes; a time literal compares with a property holding an ISO 8601 time."""
    if isinstance(condition, Negated):
        return not matches(condition.part, entity)
    if isinstance(condition, AllOf):
        return all(matches(p, entity) for p in condition.parts)
    if isinstance(condition, AnyOf):
        return any(matches(p, entity) for p in condition.parts)
    value, wanted = lookup(entity, condition.column), condition.value
    if isinstance(wanted, tuple):  # ("time", ns)
        value, wanted = _time_of(value), wanted[1]
    if wanted is None or value is None:
        same = value is None and wanted is None
        return same if condition.op == "eq" else (not same if condition.op == "ne" else False)
    if not _comparable(value, wanted):
        return condition.op == "ne"
    return {
        "eq": value == wanted,
        "ne": value != wanted,
        "lt": value < wanted,
        "le": value <= wanted,
        "gt": value > wanted,
        "ge": value >= wanted,
    }[condition.op]


def parse_orderby(text: str | None) -> list[tuple[str, bool]]:
    """``$orderby=a desc, b`` as [(path, descending)]."""
    if not text:
        return []
    out = []
    for item in text.split(","):
        words = item.split()
        if not words or len(words) > 2 or (len(words) == 2 and words[1].lower() not in ("asc", "desc")):
            raise bad_query(f"$orderby item {item.strip()!r}: expected a property, then asc or desc")
        path = "id" if words[0] == "@iot.id" else words[0]
        out.append((path, len(words) == 2 and words[1].lower() == "desc"))
    return out


def paths(condition: Condition) -> list[str]:
    """Every property path a condition compares."""
    if isinstance(condition, Compare):
        return [condition.column]
    if isinstance(condition, Negated):
        return paths(condition.part)
    return [p for part in condition.parts for p in paths(part)]
