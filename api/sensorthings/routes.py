"""``/sta/v1.1``: the SensorThings API 1.1 read view. Paths (``Things('X')/Datastreams``), query options
($top $skip $orderby $count $select $expand $filter), navigation links and paging links.

No `from __future__ import annotations` here: FastAPI must resolve the closure's Depends(identify) at run time."""

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from api.errors import ApiError
from api.sensorthings.catalog import Catalog, observation
from api.sensorthings.filters import bad_query, lookup, matches, parse_filter, parse_orderby, paths, rewrite
from store import api_queries
from store import sta_queries as sq

PREFIX = "/sta/v1.1"
DEFAULT_TOP = 100
MAX_TOP = 1000  # a larger $top is cut to this; @iot.nextLink carries on
SETS = (
    "Things",
    "Locations",
    "HistoricalLocations",
    "Sensors",
    "ObservedProperties",
    "Datastreams",
    "Observations",
    "FeaturesOfInterest",
)
# set -> navigation property -> (target set, is a collection)
NAV: dict[str, dict[str, tuple[str, bool]]] = {
    "Things": {
        "Locations": ("Locations", True),
        "HistoricalLocations": ("HistoricalLocations", True),
        "Datastreams": ("Datastreams", True),
    },
    "Locations": {"Things": ("Things", True), "HistoricalLocations": ("HistoricalLocations", True)},
    "HistoricalLocations": {"Thing": ("Things", False), "Locations": ("Locations", True)},
    "Sensors": {"Datastreams": ("Datastreams", True)},
    "ObservedProperties": {"Datastreams": ("Datastreams", True)},
    "Datastreams": {
        "Thing": ("Things", False),
        "Sensor": ("Sensors", False),
        "ObservedProperty": ("ObservedProperties", False),
        "Observations": ("Observations", True),
    },
    "Observations": {"Datastream": ("Datastreams", False), "FeatureOfInterest": ("FeaturesOfInterest", False)},
    "FeaturesOfInterest": {"Observations": ("Observations", True)},
}
# The properties of each small set, for $filter and $orderby (under properties/ and the like, anything goes).
PROPERTIES: dict[str, frozenset[str]] = {
    "Things": frozenset({"id", "name", "description", "properties"}),
    "Locations": frozenset({"id", "name", "description", "encodingType", "location"}),
    "HistoricalLocations": frozenset({"id", "time"}),
    "Sensors": frozenset({"id", "name", "description", "encodingType", "metadata"}),
    "ObservedProperties": frozenset({"id", "name", "definition", "description"}),
    "Datastreams": frozenset({"id", "name", "description", "observationType", "unitOfMeasurement", "properties"}),
    "FeaturesOfInterest": frozenset({"id", "name", "description", "encodingType", "feature"}),
}
EXPANDED_PARENTS = 100  # at most this many entities per page when each expands its Observations (a query each)
EXPANDED_OBSERVATIONS = 100  # and at most this many Observations each
_SEGMENT = re.compile(r"^([A-Za-z]+)(?:\((?:'((?:[^']|'')*)'|(\d+))\))?$")
_OPTIONS = {"$top", "$skip", "$skiptoken", "$orderby", "$count", "$select", "$expand", "$filter"}
_SAFE = "$,()'"  # kept as they are in a nextLink: readable, and valid in a query
_OBS_FIELDS = "phenomenonTime, resultTime, result, id, resultQuality/status, resultQuality/qc_flag, Datastream/id"


@dataclass
class Options:
    top: int = DEFAULT_TOP
    skip: int = 0
    skiptoken: str | None = None
    orderby: list[tuple[str, bool]] = field(default_factory=list)
    filter: sq.Condition | None = None
    count: bool = False
    select: list[str] | None = None
    expand: list[tuple[str, "Options"]] = field(default_factory=list)
    raw: dict[str, str] = field(default_factory=dict)  # as given: what a nextLink repeats


def _split(text: str, sep: str) -> list[str]:
    """``text`` split at ``sep`` outside parentheses and quotes."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(text):
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        elif not quoted and depth == 0 and ch == sep:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _int(name: str, text: str) -> int:
    if not text.isdigit():
        raise bad_query(f"{name}={text!r}: expected a whole number of 0 or more")
    return int(text)


def parse_options(raw: dict[str, str], nested: bool = False) -> Options:
    unknown = sorted(k for k in raw if k.startswith("$") and k not in _OPTIONS)
    if unknown:
        raise bad_query(f"unknown query option {unknown[0]}; known: {', '.join(sorted(_OPTIONS))}")
    opts = Options(raw=dict(raw))
    if "$top" in raw:
        opts.top = min(_int("$top", raw["$top"]), MAX_TOP)
    if "$skip" in raw:
        opts.skip = _int("$skip", raw["$skip"])
    opts.skiptoken = raw.get("$skiptoken")
    opts.orderby = parse_orderby(raw.get("$orderby"))
    if raw.get("$filter"):
        opts.filter = parse_filter(raw["$filter"])
    if "$count" in raw:
        if raw["$count"] not in ("true", "false"):
            raise bad_query(f"$count={raw['$count']!r}: expected true or false")
        opts.count = raw["$count"] == "true"
    if raw.get("$select"):
        opts.select = ["id" if s == "@iot.id" else s for s in _split(raw["$select"], ",")]
    if raw.get("$expand"):
        if nested:
            raise bad_query("$expand goes one level deep here")
        for item in _split(raw["$expand"], ","):
            name, _, inner = item.partition("(")
            if "/" in name:
                raise bad_query(f"$expand={item!r}: one level only (no {name!r} paths)")
            sub = {}
            if inner:
                if not inner.endswith(")"):
                    raise bad_query(f"$expand item {item!r}: unbalanced parentheses")
                for option in _split(inner[:-1], ";"):
                    key, eq, value = option.partition("=")
                    if not eq:
                        raise bad_query(f"$expand option {option!r}: expected $name=value")
                    sub[key.strip()] = value.strip()
            opts.expand.append((name.strip(), parse_options(sub, nested=True)))
    return opts


def _token(key: list, order: list[tuple[str, bool]]) -> str:
    raw = json.dumps({"o": order, "k": key}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _untoken(text: str, order: list[tuple[str, bool]]) -> list:
    try:
        data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        key, made_for = data["k"], [tuple(o) for o in data["o"]]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise bad_query("$skiptoken is not one this server gave; start again without it") from None
    ok = (
        isinstance(key, list) and len(key) == 4 and isinstance(key[0], int) and all(isinstance(k, str) for k in key[1:])
    )
    if not ok or made_for != [tuple(o) for o in order]:
        raise bad_query("$skiptoken was made for another $orderby; start again without it")
    return key


# -- Observations: the store's condition and order -------------------------------------------------------------


def _observation_condition(cat: Catalog, condition: sq.Condition) -> sq.Condition:
    def one(c: sq.Compare) -> sq.Condition:
        time = isinstance(c.value, tuple)
        if c.column in ("phenomenonTime", "resultTime"):
            if not time:
                raise bad_query(f"{c.column} compares with a time such as 2026-12-01T00:00:00Z")
            return sq.Compare("ts", c.op, c.value[1])
        if time:
            raise bad_query(f"{c.column} is not a time")
        if c.column == "result":
            if c.value is not None and (isinstance(c.value, bool) or not isinstance(c.value, int | float)):
                raise bad_query("result compares with a number or null")
            return sq.Compare("value", c.op, c.value)
        if c.column in ("resultQuality/status", "resultQuality/qc_flag"):
            column = c.column.split("/")[1]
            kind = str if column == "status" else int
            if not isinstance(c.value, kind) or isinstance(c.value, bool):
                raise bad_query(f"{c.column} compares with a {'string' if kind is str else 'whole number'}")
            return sq.Compare(column, c.op, c.value)
        if c.column in ("id", "Datastream/id"):
            if c.op not in ("eq", "ne") or not isinstance(c.value, str):
                raise bad_query(f"{c.column} compares with eq or ne and a string id")
            if c.column == "id":
                key = cat.observation_key(c.value)
                names = ("station", "device", "parameter", "ts")
            else:
                key = cat.stream(c.value)
                names = ("station", "device", "parameter")
            same: sq.Condition = (
                sq.AllOf(tuple(sq.Compare(n, "eq", v) for n, v in zip(names, key)))
                if key is not None
                else sq.AnyOf(())  # names nothing: no row
            )
            return same if c.op == "eq" else sq.Negated(same)
        raise bad_query(f"Observations cannot be filtered on {c.column!r}; use {_OBS_FIELDS}")

    return rewrite(condition, one)


def _observation_order(order: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    columns = {"phenomenonTime": "ts", "resultTime": "ts", "result": "value"}
    out = []
    for path, desc in order:
        if path not in columns:
            raise bad_query(f"Observations are ordered by phenomenonTime, resultTime or result, not {path!r}")
        if columns[path] not in [c for c, _ in out]:
            out.append((columns[path], desc))
    return out or [("ts", False)]


# -- the request -----------------------------------------------------------------------------------------------


class View:
    """One request's answer: the catalog, the connection, the base of every link."""

    def __init__(self, cat: Catalog, conn: Any, base: str) -> None:
        self.cat, self.conn, self.base = cat, conn, base

    def self_link(self, set_name: str, entity_id: str) -> str:
        return f"{self.base}/{set_name}('{quote(entity_id.replace(chr(39), chr(39) * 2), safe=',:')}')"

    def render(self, set_name: str, entity: dict, opts: Options) -> dict:
        link = self.self_link(set_name, entity["@iot.id"])
        out = {"@iot.id": entity["@iot.id"], "@iot.selfLink": link}
        out.update({k: v for k, v in entity.items() if k != "@iot.id"})
        for nav in NAV[set_name]:
            out[f"{nav}@iot.navigationLink"] = f"{link}/{nav}"
        if opts.select is not None:
            keep = set(opts.select)
            out = {
                k: v
                for k, v in out.items()
                if k in keep
                or (k in ("@iot.id", "@iot.selfLink") and "id" in keep)
                or (k.endswith("@iot.navigationLink") and k.split("@")[0] in keep)
            }
        for nav, sub in opts.expand:
            target, many = NAV[set_name].get(nav, (None, False))
            if target is None:
                raise bad_query(f"{set_name} have no {nav!r} to expand; they have {', '.join(NAV[set_name])}")
            if many:
                doc = self.collection(target, self._members(set_name, entity["@iot.id"], nav), sub, f"{link}/{nav}")
                out[nav] = doc["value"]
                for extra in ("@iot.count", "@iot.nextLink"):
                    if extra in doc:
                        out[f"{nav}{extra}"] = doc[extra]
            else:
                (one,) = self._members(set_name, entity["@iot.id"], nav)
                out[nav] = self.render(target, self.entity(target, one), sub)
        return out

    def _members(self, set_name: str, entity_id: str, nav: str) -> Any:
        if set_name == "Datastreams" and nav == "Observations":
            station, device, parameter = self.cat.stream(entity_id)  # type: ignore[misc]
            return sq.AllOf(
                (
                    sq.Compare("station", "eq", station),
                    sq.Compare("device", "eq", device),
                    sq.Compare("parameter", "eq", parameter),
                )
            )
        if set_name == "FeaturesOfInterest":  # Observations: the station's readings
            return sq.AllOf((sq.Compare("station", "eq", entity_id),))
        if set_name == "Observations":
            station, device, parameter, _ts = self.cat.observation_key(entity_id)  # type: ignore[misc]
            return [f"{station}:{device}:{parameter}" if nav == "Datastream" else station]
        return self.cat.related(set_name, entity_id, nav)

    def entity(self, set_name: str, entity_id: str) -> dict:
        if set_name == "Observations":
            key = self.cat.observation_key(entity_id)
            rows = []
            if key is not None:
                names = ("station", "device", "parameter", "ts")
                cond = sq.AllOf(tuple(sq.Compare(n, "eq", v) for n, v in zip(names, key)))
                rows = sq.observations_page(self.conn, cond, limit=1)
            if not rows:
                raise ApiError(404, "not_found", f"no Observation {entity_id!r}")
            return observation(rows[0])
        found = self.cat.find(set_name, entity_id)
        if found is None:
            raise ApiError(
                404,
                "not_found",
                f"{set_name} has no {entity_id!r}",
            )
        return found

    def collection(self, set_name: str, members: Any, opts: Options, link: str) -> dict:
        """``members``: ids of an in-memory set (None: all of it) or, for Observations, a store condition."""
        for nav, _ in opts.expand:  # before any entity: an empty page must refuse a bad $expand as well
            if nav not in NAV[set_name]:
                raise bad_query(f"{set_name} have no {nav!r} to expand; they have {', '.join(NAV[set_name])}")
        if set_name == "Observations":
            return self._observations(members, opts, link)
        known = PROPERTIES[set_name]
        for path in [p for p, _ in opts.orderby] + (paths(opts.filter) if opts.filter is not None else []):
            if path.split("/")[0] not in known:
                raise bad_query(f"{set_name} have no property {path!r}; they have {', '.join(sorted(known))}")
        pool = (self.cat if members is not None else self.cat.load_all()).by_set(set_name)
        ents = [pool[i] for i in members if i in pool] if members is not None else list(pool.values())
        if opts.filter is not None:
            ents = [e for e in ents if matches(opts.filter, e)]
        ents.sort(key=lambda e: e["@iot.id"])
        for path, desc in reversed(opts.orderby):
            present = [e for e in ents if lookup(e, path) is not None]
            absent = [e for e in ents if lookup(e, path) is None]
            try:
                present.sort(key=lambda e: lookup(e, path), reverse=desc)
            except TypeError:
                raise bad_query(f"$orderby {path}: its values cannot be compared") from None
            ents = present + absent
        page = ents[opts.skip : opts.skip + opts.top]
        doc: dict[str, Any] = {}
        if opts.count:
            doc["@iot.count"] = len(ents)
        if opts.skip + opts.top < len(ents):
            doc["@iot.nextLink"] = self._next(link, opts, opts.skip + opts.top, None)
        doc["value"] = [self.render(set_name, e, opts) for e in page]
        return doc

    def _observations(self, scope: sq.Condition | None, opts: Options, link: str) -> dict:
        parts = [p for p in (scope, _observation_condition(self.cat, opts.filter) if opts.filter else None) if p]
        condition = sq.AllOf(tuple(parts)) if parts else None
        order = _observation_order(opts.orderby)
        keyset = [c for c, _ in order] == ["ts"]
        after = _untoken(opts.skiptoken, order) if opts.skiptoken and keyset else None
        offset = 0 if after is not None else opts.skip
        rows = sq.observations_page(self.conn, condition, order=order, after=after, offset=offset, limit=opts.top + 1)
        more = len(rows) > opts.top
        rows = rows[: opts.top]
        doc: dict[str, Any] = {}
        if opts.count:
            doc["@iot.count"] = sq.observations_count(self.conn, condition)
        if more:
            token = _token(list(rows[-1][:4]), order) if keyset else None
            doc["@iot.nextLink"] = self._next(link, opts, opts.skip + opts.top, token)
        doc["value"] = [self.render("Observations", observation(r), opts) for r in rows]
        return doc

    def _next(self, link: str, opts: Options, skip: int, token: str | None) -> str:
        params = {k: v for k, v in opts.raw.items() if k not in ("$skip", "$skiptoken", "$top")}
        params.update({"$top": str(opts.top), "$skip": str(skip)})
        if token is not None:
            params["$skiptoken"] = token
        return f"{link}?{urlencode(params, quote_via=quote, safe=_SAFE)}"


def _parse_path(path: str) -> list[tuple[str, str | None]]:
    segments = []
    for raw in path.strip("/").split("/"):
        m = _SEGMENT.match(raw)
        if m is None:
            raise ApiError(404, "not_found", f"no resource {raw!r} here; entity sets: {', '.join(SETS)}")
        name, quoted, number = m.groups()
        segments.append((name, quoted.replace("''", "'") if quoted is not None else number))
    return segments


def router(pool: api_queries.Pool, identify: Callable[..., Any]) -> APIRouter:
    """The view's routes; ``identify`` is the API's caller check (keys, rate limits)."""
    r = APIRouter(prefix=PREFIX, tags=["SensorThings API 1.1 (read)"])

    def base_of(request: Request) -> str:
        return str(request.base_url).rstrip("/") + PREFIX

    @r.get("", summary="The entity sets and the conformance classes served")
    def index(request: Request, caller: Annotated[Any, Depends(identify)]) -> dict:
        base = base_of(request)
        return {
            "value": [{"name": s, "url": f"{base}/{s}"} for s in SETS],
            "serverSettings": {
                "conformance": [
                    "http://www.opengis.net/spec/iot_sensing/1.1/req/datamodel",
                    "http://www.opengis.net/spec/iot_sensing/1.1/req/resource-path/resource-path-to-entities",
                    "http://www.opengis.net/spec/iot_sensing/1.1/req/request-data",
                ]
            },
        }

    @r.get("/{path:path}", summary="Things, Locations, Sensors, ObservedProperties, Datastreams, Observations")
    def resource(path: str, request: Request, caller: Annotated[Any, Depends(identify)]) -> JSONResponse:
        # A JSONResponse as it is: FastAPI's encoder walk over a page of 1,000 Observations costs more than its SQL.
        return JSONResponse(_answer(path, request, caller))

    def _answer(path: str, request: Request, caller: Any) -> dict:
        segments = _parse_path(path)
        opts = parse_options(dict(request.query_params))
        for nav, sub in opts.expand:
            if nav == "Observations":  # each entity of the page costs a query: fewer of them, and shorter
                opts.top = min(opts.top, EXPANDED_PARENTS)
                sub.top = min(sub.top, EXPANDED_OBSERVATIONS)
        wants_readings = any(n == "Observations" for n, _ in segments) or any(
            n == "Observations" for n, _ in opts.expand
        )
        if wants_readings and caller.key is None:
            raise ApiError(401, "key_required", "Observations are raw readings: they need an agency's key (X-API-Key)")
        first, first_id = segments[0]
        if first not in SETS:
            raise ApiError(404, "not_found", f"no entity set {first!r}; there are {', '.join(SETS)}")
        with pool.connection() as conn:
            view = View(Catalog(conn), conn, base_of(request))
            set_name, entity_id, members = first, first_id, None
            parent: tuple[str, str] | None = None
            link = f"{view.base}/{first}"
            for nav, nav_id in segments[1:]:
                if entity_id is None:
                    raise ApiError(404, "not_found", f"{set_name}/{nav}: name one entity first, e.g. {set_name}('id')")
                target = NAV[set_name].get(nav)
                if target is None or nav_id is not None:
                    raise ApiError(
                        404, "not_found", f"{set_name} have no {nav!r}; they have {', '.join(NAV[set_name])}"
                    )
                if (set_name, nav) != ("Datastreams", "Observations"):
                    view.entity(set_name, entity_id)  # 404 if the parent is not there
                elif view.cat.stream(entity_id) is None:
                    raise ApiError(404, "not_found", f"no Datastream {entity_id!r}")
                parent = (set_name, entity_id)
                link = f"{view.self_link(set_name, entity_id)}/{nav}"
                members = view._members(set_name, entity_id, nav)
                set_name, many = target
                entity_id = None if many else members[0]
            if entity_id is not None:
                if members is not None and entity_id not in members:
                    raise ApiError(404, "not_found", f"no {set_name} {entity_id!r} there")
                return view.render(set_name, view.entity(set_name, entity_id), opts)
            doc = view.collection(set_name, members, opts, link)
            if not doc["value"] and parent is not None and parent[0] == "Datastreams":
                view.entity(*parent)  # an empty page of a Datastream the store does not know: 404
            return doc

    return r
