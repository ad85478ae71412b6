"""The REST API (FastAPI): routes, access, errors. Reads the warehouse through store.api_queries only."""

import contextlib
import datetime as dt
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import structlog
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api import cursor as cursors
from api import sensorthings
from api.errors import ApiError, ErrorBody, bad_parameter
from api.keys import ApiKey, KeyRing
from api.models import (
    Aqi,
    AqiCategory,
    Coverage,
    Episode,
    LatestReading,
    LatestReadings,
    LatestValue,
    LatestValues,
    Mean,
    MeanDetail,
    Page,
    Reading,
    Reject,
    Station,
    StationAqi,
    SubIndex,
)
from api.ratelimit import RateLimiter
from api.times import maybe_moment, moment, to_ns
from store import api_queries as q
from store import vn_aqi
from store.errors import WarehouseUnavailable
from store.station_queries import station_descriptions
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


def create_app(config: ApiConfig) -> FastAPI:
    pool = q.Pool(config.conninfo, config.pool_size)
    ring = KeyRing(config.keys_path)
    limiter = RateLimiter()

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
        key = None
        if presented is not None:
            key = ring.check(presented)
            if key is None:
                raise ApiError(401, "bad_key", "X-API-Key is unknown, wrong or revoked")
            who, rate = f"key:{key.id}", key.rate_per_minute
        else:
            who, rate = f"ip:{request.client.host if request.client else '?'}", config.public_rate_per_minute
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

    def _stations() -> list[Station]:
        with pool.connection() as conn:
            rows = station_descriptions(conn).values()
            last = q.last_reading_times(conn)
        return [
            Station(
                id=r.station,
                name=r.name or "",
                province_code=r.province_code or "",
                facility=r.facility or "",
                kind=r.kind or "",
                latitude=r.latitude,
                longitude=r.longitude,
                enabled=r.enabled,
                parameters=dict(r.intervals),
                described_at=moment(r.loaded_ns),
                last_reading=maybe_moment(last.get(r.station)),
            )
            for r in rows
        ]

    def _kind(kind: str | None) -> str | None:
        if kind is not None and kind not in STATION_KINDS:
            raise bad_parameter(f"kind={kind!r} is not one of {', '.join(STATION_KINDS)}")
        return kind

    def _selected(province: str | None, kind: str | None) -> list[Station]:
        kind = _kind(kind)
        return [
            s
            for s in _stations()
            if (province is None or s.province_code == province) and (kind is None or s.kind == kind)
        ]

    @v1.get("/stations", response_model=Page[Station], summary="Stations, by id (public)")
    def list_stations(
        province: str | None = None, kind: str | None = None, limit: Limit = DEFAULT_PAGE, cursor: Cursor = None
    ) -> Page[Station]:
        query, after = cursors.resolve("stations", {"province": province, "kind": kind}, cursor, (str,))
        chosen = _selected(query.get("province"), query.get("kind"))
        if after is not None:
            chosen = [s for s in chosen if s.id > after[0]]
        page = chosen[:limit]
        more = len(chosen) > limit
        return Page[Station](data=page, next_cursor=cursors.encode("stations", query, [page[-1].id]) if more else None)

    @v1.get("/stations/{station}", response_model=Station, summary="One station (public)")
    def one_station(station: StationId) -> Station:
        for s in _stations():
            if s.id == station:
                return s
        raise ApiError(404, "not_found", f"no station {station!r}")

    # -- latest ------------------------------------------------------------------------------------------------

    def _chosen_ids(province: str | None, kind: str | None, station: list[str] | None) -> list[str] | None:
        ids = None if province is None and kind is None else [s.id for s in _selected(province, kind)]
        if station:
            ids = [s for s in station if ids is None or s in ids]
        return ids

    @v1.get("/latest", response_model=LatestValues, summary="Every series' newest valid reading, one call (public)")
    def latest(
        province: str | None = None,
        kind: str | None = None,
        station: Annotated[list[str] | None, Query(description="repeat for several")] = None,
        parameter: str | None = None,
    ) -> LatestValues:
        ids = _chosen_ids(province, kind, station)
        with pool.connection() as conn:
            rows = q.latest_readings(conn, valid_only=True, stations=ids)
        return LatestValues(
            as_of=moment(time.time_ns()),
            data=[
                LatestValue(station=r[0], device=r[1], parameter=r[2], ts=moment(r[3]), value=r[4], unit=r[5] or "")
                for r in rows
                if parameter is None or r[2] == parameter
            ],
        )

    @v1.get("/latest/raw", response_model=LatestReadings, summary="Every series' newest reading, any status (key)")
    def latest_raw(
        caller: Annotated[Caller, Depends(agency)],
        province: str | None = None,
        kind: str | None = None,
        station: Annotated[list[str] | None, Query()] = None,
        parameter: str | None = None,
    ) -> LatestReadings:
        ids = _chosen_ids(province, kind, station)
        with pool.connection() as conn:
            rows = q.latest_readings(conn, valid_only=False, stations=ids)
        data = []
        for s, d, p, ts, v, u, st, cause, flag, check, qc_cause, received in rows:
            if parameter is None or p == parameter:
                data.append(
                    LatestReading(
                        station=s,
                        ts=moment(ts),
                        device=d,
                        parameter=p,
                        value=v,
                        unit=u or "",
                        status=st or "",
                        cause=cause or "",
                        qc_flag=flag,
                        qc_check=check or "",
                        qc_cause=qc_cause or "",
                        qc_checks="",
                        seq=None,
                        historical=False,
                        source="",
                        received_at=maybe_moment(received),
                    )
                )
        return LatestReadings(as_of=moment(time.time_ns()), data=data)

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
    ) -> Page[Reading]:
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
        data = [
            Reading(
                ts=moment(ts),
                device=d,
                parameter=p,
                value=v,
                unit=u or "",
                status=st or "",
                cause=cause or "",
                qc_flag=flag,
                qc_check=check or "",
                qc_cause=qc_cause or "",
                qc_checks=checks or "",
                seq=seq,
                historical=bool(hist),
                source=src or "agent",
                received_at=maybe_moment(received),
            )
            for ts, d, p, v, u, st, cause, flag, check, qc_cause, checks, seq, hist, src, received in rows
        ]
        return Page[Reading](data=data, next_cursor=nxt)

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
    ) -> Page[Mean]:
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
        data = []
        for row in rows:
            ts, d, p, unit, mean, low, high, n_valid, n_expected, coverage, valid, worst, rule, computed = row[:14]
            extra = row[14:]
            detail = None
            if keyed:
                detail = MeanDetail(mean_if_invalid=None if valid else mean, worst_flag=worst)
                if period == "hourly":
                    (
                        detail.n_readings,
                        detail.n_calibrating,
                        detail.n_device_error,
                        detail.n_qc_fail,
                        detail.n_suspect,
                    ) = extra
            data.append(
                Mean(
                    start=moment(ts - PERIOD_NS[period]),
                    end=moment(ts),
                    local_day=extra[0] if period == "daily" else None,
                    device=d,
                    parameter=p,
                    unit=unit or "",
                    mean=mean if valid else None,
                    min=low if valid else None,
                    max=high if valid else None,
                    max_hourly=extra[1] if period == "daily" else None,
                    coverage=Coverage(
                        expected=n_expected,
                        observed=n_valid,
                        percent=None if coverage is None else round(coverage * 100, 2),
                        valid=bool(valid),
                        rule=rule or "",
                    ),
                    computed_at=maybe_moment(computed),
                    detail=detail,
                )
            )
        return Page[Mean](data=data, next_cursor=nxt)

    # -- VN_AQI ------------------------------------------------------------------------------------------------

    def _aqi_fields(ts: int, aqi, dominant, sub_json, missing_json, reason, computed, period: str) -> dict:
        cat = None
        if aqi is not None:
            c = vn_aqi.category(int(aqi))
            cat = AqiCategory(
                name_vi=c.name_vi, name_en=c.name_en, colour_vi=c.colour_vi, colour_en=c.colour_en, hex=c.hex
            )
        subs = {
            p: SubIndex(value=s["value"], scale=s["scale"], concentration=s["concentration"], basis=s["basis"])
            for p, s in _json(sub_json).items()
        }
        return dict(
            start=moment(ts - PERIOD_NS[period]),
            end=moment(ts),
            aqi=aqi,
            category=cat,
            dominant=dominant or None,
            sub_indices=subs,
            missing={str(k): str(v) for k, v in _json(missing_json).items()},
            reason=reason or "",
            computed_at=maybe_moment(computed),
        )

    @v1.get("/stations/{station}/aqi/{period}", response_model=Page[Aqi], summary="Hourly or daily VN_AQI (public)")
    def aqi(
        station: StationId,
        period: Literal["hourly", "daily"],
        start: Start = None,
        end: End = None,
        limit: Limit = DEFAULT_PAGE,
        cursor: Cursor = None,
    ) -> Page[Aqi]:
        asked = {"station": station, **_period(start, end, DEFAULT_SPAN_NS["daily" if period == "daily" else "hourly"])}

        def fetch(query: dict, after: list | None, n: int) -> list[tuple]:
            with pool.connection() as conn:
                return q.aqi_page(conn, period, query["station"], query["start"], query["end"], after=after, limit=n)

        rows, nxt = _paged(f"aqi/{period}", asked, cursor, (int,), fetch, limit, lambda r: [r[0]])
        data = []
        for ts, value, _category, _colour, dominant, subs, missing, reason, computed in rows:
            fields = _aqi_fields(ts, value, dominant, subs, missing, reason, computed, period)
            if period == "daily":
                fields["local_day"] = vn_aqi.local_day_of(ts).isoformat()
            data.append(Aqi(**fields))
        return Page[Aqi](data=data, next_cursor=nxt)

    @v1.get("/aqi/latest", response_model=list[StationAqi], summary="Every station's newest hourly VN_AQI (public)")
    def aqi_latest(province: str | None = None, kind: str | None = None) -> list[StationAqi]:
        ids = _chosen_ids(province, kind, None)
        with pool.connection() as conn:
            rows = q.latest_aqi(conn)
        return [
            StationAqi(station=s, **_aqi_fields(ts, v, dom, subs, miss, reason, comp, "hourly"))
            for s, ts, v, _c, _col, dom, subs, miss, reason, comp in sorted(rows)
            if ids is None or s in ids
        ]

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
    ) -> Page[Episode]:
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
            Episode(
                opened=moment(ts),
                station=s,
                device=d,
                parameter=p,
                limit_id=lid,
                period=per or "",
                limit_value=lv,
                unit=u or "",
                state=stt or "",
                escalated_at=maybe_moment(esc),
                closed_at=maybe_moment(closed),
                periods=n,
                peak=peak,
                last_mean=last,
                decided_at=maybe_moment(dec),
                version=ver,
            )
            for ts, s, d, p, lid, per, lv, u, stt, esc, closed, n, peak, last, dec, ver in rows
        ]
        return Page[Episode](data=data, next_cursor=nxt)

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
    ) -> Page[Reject]:
        asked = {"station": station, "reason": reason, **_period(start, end, DAY_NS)}

        def fetch(query: dict, after: list | None, n: int) -> list[tuple]:
            with pool.connection() as conn:
                return q.rejects_page(
                    conn, query["start"], query["end"], station=query["station"], reason=query["reason"],
                    after=after, limit=n,
                )  # fmt: skip

        rows, nxt = _paged("rejects", asked, cursor, (int, str), fetch, limit, lambda r: [r[0], r[1]])
        data = [
            Reject(
                received_at=moment(ts),
                payload_sha256=sha or "",
                topic=topic or "",
                claimed_station=claimed or "",
                reason=why or "",
                detail=detail or "",
                payload_size=size,
                payload_stored=bool(stored),
            )
            for ts, sha, topic, claimed, why, detail, size, stored in rows
        ]
        return Page[Reject](data=data, next_cursor=nxt)

    app.include_router(v1)
    app.include_router(sensorthings.router(pool, identify))  # /sta/v1.1, api/sensorthings/README.md
    return app
