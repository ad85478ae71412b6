"""The REST API (FastAPI): routes, access, errors. Reads the warehouse through store.api_queries only."""

import contextlib
import datetime as dt
import gzip
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import orjson
import structlog
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.gzip import GZipMiddleware

from api import cursor as cursors
from api import public_page, sensorthings
from api.errors import ApiError, ErrorBody, bad_parameter
from api.keys import ApiKey, KeyRing
from api.models import Aqi, Episode, LatestReadings, LatestValues, Mean, Page, Reading, Reject, Station, StationAqi
from api.ratelimit import RateLimiter
from api.snapshot import Snapshot
from api.times import Moments, maybe_moment_json, moment_json, to_ns
from store import api_queries as q
from store import station_state, vn_aqi
from store.errors import WarehouseUnavailable
from store.station_queries import StationMetadata, station_descriptions
from vocabulary.stations import STATION_ID_RE, STATION_KINDS

log = structlog.get_logger("api")

MAX_PAGE = 10_000
DEFAULT_PAGE = 1_000
HOUR_NS = 3_600_000_000_000
DAY_NS = 24 * HOUR_NS
PERIOD_NS = {"hourly": HOUR_NS, "8h": 8 * HOUR_NS, "daily": DAY_NS}
DEFAULT_SPAN_NS = {"readings": DAY_NS, "hourly": 7 * DAY_NS, "8h": 7 * DAY_NS, "daily": 31 * DAY_NS}


@dataclass(frozen=True)
class ApiConfig:
    conninfo: str
    keys_path: Path | None = None
    public_rate_per_minute: int = 600  # per client address, without a key
    pool_size: int = 16
    # Wrong keys per client address: each costs a scrypt and could be a guess; past this, 429 before any check.
    failed_keys_per_minute: int = 10
    latest_max_age_s: float = 1.0  # the shared latest-of-all answer is recomputed at most this often (0: never shared)
    offline_grace_s: float = station_state.DEFAULT_GRACE_S


@dataclass(frozen=True)
class Caller:
    key: ApiKey | None  # None: the public


StationId = Annotated[str, PathParam(pattern=STATION_ID_RE, max_length=64)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"rows per page, at most {MAX_PAGE}")]
Cursor = Annotated[str | None, Query(max_length=4096, description="next_cursor of the previous page")]
Start = Annotated[dt.datetime | None, Query(description="inclusive, ISO 8601 with an offset (Z or +07:00)")]
End = Annotated[dt.datetime | None, Query(description="exclusive; default now")]


def _ns(name: str, value: dt.datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise bad_parameter(f"{name}={value.isoformat()} has no offset: add Z (UTC) or +07:00 (Vietnam)")
    return to_ns(value)


def _period(start: dt.datetime | None, end: dt.datetime | None, span_ns: int) -> dict[str, int | None]:
    """The asked period as the cursor keeps it; defaults are filled later, and only on a first page."""
    return {"start": _ns("start", start), "end": _ns("end", end), "span": span_ns}


def _filled(query: dict) -> tuple[int, int]:
    end = query["end"] if query.get("end") is not None else time.time_ns()
    start = query["start"] if query.get("start") is not None else end - query["span"]
    if start >= end:
        raise bad_parameter("start must be before end")
    query["start"], query["end"] = start, end
    return start, end


def _json(text: str | None) -> dict:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _answer(body: object) -> Response:
    """JSON bytes straight from plain dicts and lists (orjson): the endpoints declare their pydantic model for
    the OpenAPI document, but a model per row, then FastAPI's re-validation and the stdlib encoder, cost more
    than the query for answers of thousands of rows (bench/bench_api.py)."""
    return Response(orjson.dumps(body), media_type="application/json")


def _accepts_gzip(accept_encoding: str) -> bool:
    for part in accept_encoding.split(","):
        coding, _, params = part.partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            q = params.strip().removeprefix("q=")
            try:
                return not params.strip() or float(q) > 0
            except ValueError:
                return False
    return False


GZIP_MIN_BYTES = 1400  # about one TCP segment: below it gzip saves no packet


def create_app(config: ApiConfig) -> FastAPI:
    pool = q.Pool(config.conninfo, config.pool_size)
    ring = KeyRing(config.keys_path)
    limiter = RateLimiter()
    failed_keys = RateLimiter()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        pool.close()

    app = FastAPI(
        lifespan=lifespan,
        title="quantrac",
        version="1",
        summary="Vietnam's environmental monitoring stations: readings, averages, VN_AQI, exceedances",
        responses={400: {"model": ErrorBody}, 401: {"model": ErrorBody}, 429: {"model": ErrorBody}},
    )
    app.state.pool = pool
    # Every other answer over GZIP_MIN_BYTES gzipped when the client takes it (a station-day of raw readings
    # is ~2 MB of JSON, a tenth of that gzipped: what a province's uplink pays). Starlette's middleware
    # leaves an answer that set its own Content-Encoding alone (the shared latest answer, the chart bundle)
    # and compresses large bodies in a worker thread, off the event loop.
    app.add_middleware(GZipMiddleware, minimum_size=GZIP_MIN_BYTES, compresslevel=5)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"code": exc.code, "message": exc.message}, exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "path"))
            parts.append(f"{where}: {err.get('msg')}")
        return JSONResponse({"code": "bad_parameter", "message": "; ".join(parts)}, 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse({"code": code, "message": str(exc.detail)}, exc.status_code)

    @app.exception_handler(WarehouseUnavailable)
    async def _down(request: Request, exc: WarehouseUnavailable) -> JSONResponse:
        log.warning("warehouse_unavailable", path=request.url.path, error=str(exc))
        return JSONResponse(
            {"code": "warehouse_unavailable", "message": "the warehouse cannot answer now; try again"},
            503,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal_error", path=request.url.path, error=f"{type(exc).__name__}: {exc}")
        return JSONResponse({"code": "internal", "message": "internal error; it has been logged"}, 500)

    def identify(request: Request) -> Caller:
        presented = request.headers.get("x-api-key")
        address = f"ip:{request.client.host if request.client else '?'}"
        key = None
        if presented is not None:
            # Checked before the key: an address that guessed wrong too often gets no answer about any key
            # (not even a right one) until its bucket refills, and costs no scrypt meanwhile.
            wait = failed_keys.waiting(address, config.failed_keys_per_minute)
            if wait is not None:
                raise ApiError(
                    429,
                    "rate_limited",
                    f"more than {config.failed_keys_per_minute} wrong keys a minute from this address;"
                    f" retry in {wait} s",
                    {"Retry-After": str(wait)},
                )
            key = ring.check(presented)
            if key is None:
                failed_keys.allow(address, config.failed_keys_per_minute)
                raise ApiError(401, "bad_key", "X-API-Key is unknown, wrong or revoked")
            who, rate = f"key:{key.id}", key.rate_per_minute
        else:
            who, rate = address, config.public_rate_per_minute
        wait = limiter.allow(who, rate)
        if wait is not None:
            raise ApiError(
                429,
                "rate_limited",
                f"more than {rate} requests a minute; retry in {wait} s",
                {"Retry-After": str(wait)},
            )
        return Caller(key)

    def agency(caller: Annotated[Caller, Depends(identify)]) -> Caller:
        if caller.key is None:
            raise ApiError(401, "key_required", "this needs an agency's key in the X-API-Key header")
        return caller

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(identify)])

    # -- stations ----------------------------------------------------------------------------------------------

    def _descriptions() -> list[StationMetadata]:
        with pool.connection() as conn:
            return list(station_descriptions(conn).values())

    def _stations() -> list[dict]:
        with pool.connection() as conn:
            rows = list(station_descriptions(conn).values())
            last = q.last_reading_times(conn)
            connections = station_state.connection_states(conn)
            available = station_state.availability(conn, {r.station: r.intervals for r in rows})
        now = time.time_ns()
        return [
            {
                "id": r.station,
                "name": r.name or "",
                "province_code": r.province_code or "",
                "facility": r.facility or "",
                "kind": r.kind or "",
                "latitude": r.latitude,
                "longitude": r.longitude,
                "enabled": r.enabled,
                "parameters": dict(r.intervals),
                "described_at": moment_json(r.loaded_ns),
                "last_reading": maybe_moment_json(last.get(r.station)),
                "state": station_state.online_state(last.get(r.station), r.intervals, now, config.offline_grace_s),
                "connection": connections.get(r.station, ("unknown",))[0] or "unknown",
                "availability": _availability(available.get(r.station)),
            }
            for r in rows
        ]

    def _kind(kind: str | None) -> str | None:
        if kind is not None and kind not in STATION_KINDS:
            raise bad_parameter(f"kind={kind!r} is not one of {', '.join(STATION_KINDS)}")
        return kind

    def _matches(province: str | None, kind: str | None, s_province: str, s_kind: str) -> bool:
        return (province is None or s_province == province) and (kind is None or s_kind == kind)

    @v1.get("/stations", response_model=Page[Station], summary="Stations, by id (public)")
    def list_stations(
        province: str | None = None, kind: str | None = None, limit: Limit = DEFAULT_PAGE, cursor: Cursor = None
    ) -> Response:
        query, after = cursors.resolve("stations", {"province": province, "kind": kind}, cursor, (str,))
        wanted_kind = _kind(query.get("kind"))
        chosen = [
            s
            for s in _stations()
            if _matches(query.get("province"), wanted_kind, s["province_code"], s["kind"])
            and (after is None or s["id"] > after[0])
        ]
        page = chosen[:limit]
        more = len(chosen) > limit
        return _answer(
            {"data": page, "next_cursor": cursors.encode("stations", query, [page[-1]["id"]]) if more else None}
        )

    @v1.get("/stations/{station}", response_model=Station, summary="One station (public)")
    def one_station(station: StationId) -> Response:
        for s in _stations():
            if s["id"] == station:
                return _answer(s)
        raise ApiError(404, "not_found", f"no station {station!r}")

    # -- latest ------------------------------------------------------------------------------------------------

    def _chosen_ids(province: str | None, kind: str | None, station: list[str] | None) -> set[str] | None:
        kind = _kind(kind)
        ids = None
        if province is not None or kind is not None:
            ids = {r.station for r in _descriptions() if _matches(province, kind, r.province_code or "", r.kind or "")}
        if station:
            ids = {s for s in station if ids is None or s in ids}
        return ids

    def _shared(as_of: dict, data: list[dict]) -> tuple[dict, list[dict], bytes, bytes]:
        # The whole answer is encoded once per snapshot, and gzipped once (1.8 MB of JSON for 12,000 series,
        # about a tenth of that compressed): most of a latest-of-all request was moving those bytes.
        whole = orjson.dumps({"as_of": as_of, "data": data})
        return as_of, data, whole, gzip.compress(whole, compresslevel=5, mtime=0)

    def _latest_values() -> tuple[dict, list[dict], bytes, bytes]:
        as_of = moment_json(time.time_ns())  # before the query: the data are at least as new as this
        with pool.connection() as conn:
            rows = q.latest_readings(conn, valid_only=True)
        moments = Moments()
        data = [
            {"station": s, "device": d, "parameter": p, "ts": moments[ts], "value": v, "unit": u or ""}
            for s, d, p, ts, v, u in rows
        ]
        return _shared(as_of, data)

    def _latest_readings() -> tuple[dict, list[dict], bytes, bytes]:
        as_of = moment_json(time.time_ns())
        with pool.connection() as conn:
            rows = q.latest_readings(conn, valid_only=False)
        data = _readings([row[1:] for row in rows], Moments())
        return _shared(as_of, [{**r, "station": row[0]} for r, row in zip(data, rows)])

    latest_values = Snapshot(_latest_values, config.latest_max_age_s)
    latest_readings = Snapshot(_latest_readings, config.latest_max_age_s)

    def _latest_answer(
        request: Request,
        snapshot: Snapshot,
        province: str | None,
        kind: str | None,
        station: list[str] | None,
        parameter: str | None,
    ) -> Response:
        ids = _chosen_ids(province, kind, station)
        as_of, data, whole, zipped = snapshot.get()
        if ids is None and parameter is None:
            if _accepts_gzip(request.headers.get("accept-encoding", "")):
                headers = {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
                return Response(zipped, media_type="application/json", headers=headers)
            return Response(whole, media_type="application/json", headers={"Vary": "Accept-Encoding"})
        chosen = [
            r
            for r in data
            if (ids is None or r["station"] in ids) and (parameter is None or r["parameter"] == parameter)
        ]
        return _answer({"as_of": as_of, "data": chosen})

    @v1.get("/latest", response_model=LatestValues, summary="Every series' newest valid reading, one call (public)")
    def latest(
        request: Request,
        province: str | None = None,
        kind: str | None = None,
        station: Annotated[list[str] | None, Query(description="repeat for several")] = None,
        parameter: str | None = None,
    ) -> Response:
        return _latest_answer(request, latest_values, province, kind, station, parameter)

    @v1.get("/latest/raw", response_model=LatestReadings, summary="Every series' newest reading, any status (key)")
    def latest_raw(
        request: Request,
        caller: Annotated[Caller, Depends(agency)],
        province: str | None = None,
        kind: str | None = None,
        station: Annotated[list[str] | None, Query()] = None,
        parameter: str | None = None,
    ) -> Response:
        return _latest_answer(request, latest_readings, province, kind, station, parameter)

    # -- raw readings ------------------------------------------------------------------------------------------

    def _paged(
        endpoint: str,
        asked: dict,
        cursor: str | None,
        key_types: tuple[type, ...],
        fetch: Callable[[dict, list | None, int], list[tuple]],
        limit: int,
        key_of: Callable[[tuple], list],
    ) -> tuple[list[tuple], str | None]:
        query, after = cursors.resolve(endpoint, asked, cursor, key_types)
        if after is None:
            _filled(query)
        rows = fetch(query, after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, cursors.encode(endpoint, query, key_of(rows[-1])) if more else None

    @v1.get(
        "/stations/{station}/readings",
        response_model=Page[Reading],
        summary="A station's raw readings with status, QC flag and cause (key)",
    )
    def readings(
        caller: Annotated[Caller, Depends(agency)],
        station: StationId,
        start: Start = None,
        end: End = None,
        parameter: str | None = None,
        limit: Limit = DEFAULT_PAGE,
        cursor: Cursor = None,
    ) -> Response:
        asked = {"station": station, "parameter": parameter, **_period(start, end, DEFAULT_SPAN_NS["readings"])}

        def fetch(query: dict, after: list | None, n: int) -> list[tuple]:
            with pool.connection() as conn:
                return q.readings_page(
                    conn,
                    query["station"],
                    query["start"],
                    query["end"],
                    parameter=query["parameter"],
                    after=after,
                    limit=n,
                )

        rows, nxt = _paged("readings", asked, cursor, (int, str, str), fetch, limit, lambda r: [r[0], r[1], r[2]])
        return _answer({"data": _readings(rows, Moments()), "next_cursor": nxt})

    # -- means -------------------------------------------------------------------------------------------------

    @v1.get(
        "/stations/{station}/means/{period}",
        response_model=Page[Mean],
        summary="Hourly, 8-hour or daily means with their coverage (public: valid means; key: QC detail too)",
    )
    def means(
        identified: Annotated[Caller, Depends(identify)],
        station: StationId,
        period: Literal["hourly", "8h", "daily"],
        start: Start = None,
        end: End = None,
        parameter: str | None = None,
        limit: Limit = DEFAULT_PAGE,
        cursor: Cursor = None,
    ) -> Response:
        asked = {"station": station, "parameter": parameter, **_period(start, end, DEFAULT_SPAN_NS[period])}

        def fetch(query: dict, after: list | None, n: int) -> list[tuple]:
            with pool.connection() as conn:
                return q.means_page(
                    conn, period, query["station"], query["start"], query["end"],
                    parameter=query["parameter"], after=after, limit=n,
                )  # fmt: skip

        rows, nxt = _paged(
            f"means/{period}", asked, cursor, (int, str, str), fetch, limit, lambda r: [r[0], r[1], r[2]]
        )
        keyed = identified.key is not None
        return _answer({"data": _means(rows, period, keyed, Moments()), "next_cursor": nxt})

    # -- VN_AQI ------------------------------------------------------------------------------------------------

    @v1.get("/stations/{station}/aqi/{period}", response_model=Page[Aqi], summary="Hourly or daily VN_AQI (public)")
    def aqi(
        station: StationId,
        period: Literal["hourly", "daily"],
        start: Start = None,
        end: End = None,
        limit: Limit = DEFAULT_PAGE,
        cursor: Cursor = None,
    ) -> Response:
        asked = {"station": station, **_period(start, end, DEFAULT_SPAN_NS["daily" if period == "daily" else "hourly"])}

        def fetch(query: dict, after: list | None, n: int) -> list[tuple]:
            with pool.connection() as conn:
                return q.aqi_page(conn, period, query["station"], query["start"], query["end"], after=after, limit=n)

        rows, nxt = _paged(f"aqi/{period}", asked, cursor, (int,), fetch, limit, lambda r: [r[0]])
        data = []
        for ts, value, _category, _colour, dominant, subs, missing, reason, computed in rows:
            local_day = vn_aqi.local_day_of(ts).isoformat() if period == "daily" else None
            data.append(_aqi(ts, value, dominant, subs, missing, reason, computed, period, local_day))
        return _answer({"data": data, "next_cursor": nxt})

    @v1.get("/aqi/latest", response_model=list[StationAqi], summary="Every station's newest hourly VN_AQI (public)")
    def aqi_latest(province: str | None = None, kind: str | None = None) -> Response:
        ids = _chosen_ids(province, kind, None)
        with pool.connection() as conn:
            rows = q.latest_aqi(conn)
        return _answer(
            [
                {**_aqi(ts, v, dom, subs, miss, reason, comp, "hourly", None), "station": s}
                for s, ts, v, _c, _col, dom, subs, miss, reason, comp in sorted(rows)
                if ids is None or s in ids
            ]
        )

    # -- exceedance episodes -----------------------------------------------------------------------------------

    @v1.get("/episodes", response_model=Page[Episode], summary="QCVN exceedance episodes by opening time (public)")
    def episodes(
        station: Annotated[str | None, Query(max_length=64)] = None,
        parameter: str | None = None,
        state: Literal["open", "escalated", "closed", "withdrawn"] | None = None,
        start: Start = None,
        end: End = None,
        limit: Limit = DEFAULT_PAGE,
        cursor: Cursor = None,
    ) -> Response:
        asked = {"station": station, "parameter": parameter, "state": state, **_period(start, end, 31 * DAY_NS)}

        def fetch(query: dict, after: list | None, n: int) -> list[tuple]:
            with pool.connection() as conn:
                return q.episodes_page(
                    conn, query["start"], query["end"], station=query["station"], parameter=query["parameter"],
                    state=query["state"], after=after, limit=n,
                )  # fmt: skip

        key = (int, str, str, str, str)
        rows, nxt = _paged("episodes", asked, cursor, key, fetch, limit, lambda r: list(r[:5]))
        data = [
            {
                "opened": moment_json(ts),
                "station": s,
                "device": d,
                "parameter": p,
                "limit_id": lid,
                "period": per or "",
                "limit_value": lv,
                "unit": u or "",
                "state": stt or "",
                "escalated_at": maybe_moment_json(esc),
                "closed_at": maybe_moment_json(closed),
                "periods": n,
                "peak": peak,
                "last_mean": last,
                "decided_at": maybe_moment_json(dec),
                "version": ver,
            }
            for ts, s, d, p, lid, per, lv, u, stt, esc, closed, n, peak, last, dec, ver in rows
        ]
        return _answer({"data": data, "next_cursor": nxt})

    # -- rejects -----------------------------------------------------------------------------------------------

    @v1.get("/rejects", response_model=Page[Reject], summary="What the collector refused, and why (key)")
    def rejects(
        caller: Annotated[Caller, Depends(agency)],
        station: Annotated[str | None, Query(max_length=64)] = None,
        reason: str | None = None,
        start: Start = None,
        end: End = None,
        limit: Limit = DEFAULT_PAGE,
        cursor: Cursor = None,
    ) -> Response:
        asked = {"station": station, "reason": reason, **_period(start, end, DAY_NS)}

        def fetch(query: dict, after: list | None, n: int) -> list[tuple]:
            with pool.connection() as conn:
                return q.rejects_page(
                    conn, query["start"], query["end"], station=query["station"], reason=query["reason"],
                    after=after, limit=n,
                )  # fmt: skip

        rows, nxt = _paged("rejects", asked, cursor, (int, str), fetch, limit, lambda r: [r[0], r[1]])
        data = [
            {
                "received_at": moment_json(ts),
                "payload_sha256": sha or "",
                "topic": topic or "",
                "claimed_station": claimed or "",
                "reason": why or "",
                "detail": detail or "",
                "payload_size": size,
                "payload_stored": bool(stored),
            }
            for ts, sha, topic, claimed, why, detail, size, stored in rows
        ]
        return _answer({"data": data, "next_cursor": nxt})

    app.include_router(v1)
    app.include_router(sensorthings.router(pool, identify))  # /sta/v1.1, api/sensorthings/README.md
    public_page.install(app)  # the public page at /page/ (api/public_page/README.md)
    return app


# -- rows as the models describe them (api/models.py), as plain dicts -------------------------------------------


def _readings(rows: list[tuple], moments: Moments) -> list[dict]:
    """Rows of store.api_queries.READING_COLUMNS (blanks already filled) as ``Reading``s, each dict built in
    one step with the model's fields in its order (tests/api/test_api_rows.py holds it to the model)."""
    return [
        {"ts": moments[ts], "device": d, "parameter": p, "value": v, "unit": u, "status": st, "cause": c,
         "qc_flag": qf, "qc_check": qck, "qc_cause": qca, "qc_checks": qcs, "seq": seq, "historical": h,
         "source": src, "received_at": moments[rec]}
        for ts, d, p, v, u, st, c, qf, qck, qca, qcs, seq, h, src, rec in rows
    ]  # fmt: skip


def _means(rows: list[tuple], period: str, keyed: bool, moments: Moments) -> list[dict]:
    """Rows of store.api_queries.mean_select(period) as ``Mean``s, each dict built in one step (as ``_readings``)."""
    span = PERIOD_NS[period]
    daily, hourly = period == "daily", period == "hourly"
    no_counts = (None,) * 5
    data = []
    for ts, d, p, unit, mean, low, high, n_valid, n_expected, coverage, valid, worst, rule, computed, *extra in rows:
        detail = None
        if keyed:
            n_readings, n_calibrating, n_device_error, n_qc_fail, n_suspect = extra if hourly else no_counts
            detail = {"mean_if_invalid": None if valid else mean, "worst_flag": worst, "n_readings": n_readings,
                      "n_calibrating": n_calibrating, "n_device_error": n_device_error, "n_qc_fail": n_qc_fail,
                      "n_suspect": n_suspect}  # fmt: skip
        data.append(
            {"start": moments[ts - span], "end": moments[ts], "local_day": extra[0] if daily else None,
             "device": d, "parameter": p, "unit": unit or "", "mean": mean if valid else None,
             "min": low if valid else None, "max": high if valid else None,
             "max_hourly": extra[1] if daily else None,
             "coverage": {"expected": n_expected, "observed": n_valid,
                          "percent": None if coverage is None else round(coverage * 100, 2), "valid": bool(valid),
                          "rule": rule or ""},
             "computed_at": moments[computed], "detail": detail}
        )  # fmt: skip
    return data


def _aqi(ts: int, aqi, dominant, sub_json, missing_json, reason, computed, period: str, local_day: str | None) -> dict:
    """An AQI row as ``Aqi``; the category's names and colours come from store.vn_aqi, not from the row."""
    cat = None
    if aqi is not None:
        c = vn_aqi.category(int(aqi))
        cat = {"name_vi": c.name_vi, "name_en": c.name_en, "colour_vi": c.colour_vi, "colour_en": c.colour_en,
               "hex": c.hex}  # fmt: skip
    subs = {
        p: {"value": int(s["value"]), "scale": str(s["scale"]), "concentration": float(s["concentration"]),
            "basis": str(s["basis"])}
        for p, s in _json(sub_json).items()
    }  # fmt: skip
    return {
        "start": moment_json(ts - PERIOD_NS[period]),
        "end": moment_json(ts),
        "local_day": local_day,
        "aqi": aqi,
        "category": cat,
        "dominant": dominant or None,
        "sub_indices": subs,
        "missing": {str(k): str(v) for k, v in _json(missing_json).items()},
        "reason": reason or "",
        "computed_at": maybe_moment_json(computed),
    }


def _availability(a: station_state.Availability | None) -> dict | None:
    if a is None:
        return None
    return {
        "through": moment_json(a.through_ns),
        "last_hour": {
            "expected": a.last_hour.expected,
            "observed": a.last_hour.observed,
            "percent": a.last_hour.percent,
        },
        "last_day": {"expected": a.last_day.expected, "observed": a.last_day.observed, "percent": a.last_day.percent},
        "calibrating": a.calibrating,
        "device_error": a.device_error,
        "qc_fail": a.qc_fail,
    }
