"""The incremental aggregator: recompute exactly what newly committed readings touched.

Feed: after each commit of readings the collector writes one ``touched_hours`` row per (station,
hour) the flush wrote into (store/commit.py), live data, late backlogs, ``historical`` batches and
re-sends alike. The aggregator polls that small table by its commit time (a durable watermark in
``aggregator_progress``, re-reading an overlap so a row that became visible late is not missed;
recomputing twice is harmless), waits until the readings' WAL is applied, and recomputes each touched
hour **from the readings** (a GROUP BY in QuestDB, never a delta added to a running sum: a re-sent
or revised reading cannot be counted twice), then the local days, 8-hour windows, hourly and daily
VN_AQI, and the QCVN exceedance episodes those hours are part of. Every computed table is keyed
with DEDUP UPSERT KEYS, so a recomputation replaces its rows.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import structlog

from analysis import episodes as ep
from analysis.averages import (
    AveragingRule,
    Mean,
    affected_eight_hour_ends,
    daily_mean,
    eight_hour_mean,
    hourly_columns,
)
from analysis.delivery import outbox_row
from analysis.settings import PERIOD_NS, Limit, Settings
from broker_bridge.alerts import AlertMessage, alert_id
from store import analysis_queries as q
from store import vn_aqi
from store.analysis_queries import HOUR_NS
from store.ilp_writer import IlpRow, WarehouseWriter, ilp_row
from store.schema import (
    AGGREGATOR_PROGRESS,
    ALERTS,
    ANALYSIS_TABLES,
    AQI_DAILY,
    AQI_HOURLY,
    DAILY_MEANS,
    EIGHT_HOUR_MEANS,
    EXCEEDANCE_EPISODES,
    HOURLY_MEANS,
    ensure_schema,
)

log = structlog.get_logger("analysis.aggregator")

WRITTEN_TABLES = tuple(
    t.name for t in (HOURLY_MEANS, DAILY_MEANS, EIGHT_HOUR_MEANS, AQI_HOURLY, AQI_DAILY, EXCEEDANCE_EPISODES, ALERTS)
)
MEAN_TABLE = {"1h": HOURLY_MEANS.name, "8h": EIGHT_HOUR_MEANS.name, "24h": DAILY_MEANS.name}
#: Stations with at least this many touched hours are read per station (a backlog), the rest per hour.
PER_STATION_HOURS = 3
IN_LIST = 500


@dataclass
class Report:
    """What one recomputation did (tests and the bench read it)."""

    hours: int = 0
    hourly_rows: int = 0
    daily_rows: int = 0
    eight_hour_rows: int = 0
    aqi_rows: int = 0
    episode_rows: int = 0
    alerts: list[AlertMessage] = field(default_factory=list)

    def add(self, other: Report) -> None:
        for name in ("hours", "hourly_rows", "daily_rows", "eight_hour_rows", "aqi_rows", "episode_rows"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.alerts += other.alerts


def local_day_bounds(day: dt.date) -> tuple[int, int]:
    """(first hour end, last hour end) of the VN_AQI day, UTC ns."""
    ends = vn_aqi.local_day_hour_ends(day)
    return ends[0], ends[-1]


def _ranges(hours: Iterable[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for h in sorted(hours):
        if out and h == out[-1][1] + HOUR_NS:
            out[-1] = (out[-1][0], h)
        else:
            out.append((h, h))
    return out


def _uncovered(first: int, last: int, covered: set[int], most: int = 4) -> list[tuple[int, int]]:
    """The parts of [first, last] (inclusive ns) outside the ends in ``covered``; the whole range when
    that would take more than ``most`` queries (the caller skips covered rows anyway)."""
    parts: list[tuple[int, int]] = []
    cursor = first
    for end in sorted(e for e in covered if first <= e <= last):
        if end > cursor:
            parts.append((cursor, end - 1))
        cursor = end + 1
    if cursor <= last:
        parts.append((cursor, last))
    return parts if len(parts) <= most else [(first, last)]


def _chunks(items: list[str], n: int = IN_LIST) -> Iterable[list[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


class Aggregator:
    def __init__(
        self,
        pg_conninfo: str,
        ilp_conf: str,
        settings: Settings,
        station_kinds: Callable[[], Mapping[str, str | None]] = dict,
        *,
        # The registry's logging intervals (station -> parameter -> seconds), the expected count of an hour.
        station_intervals: Callable[[], Mapping[str, Mapping[str, float]]] = dict,
        name: str = "aggregator",
        settle_s: float = 0.0,
        overlap_s: float = 120.0,
        on_alerts: Callable[[list[AlertMessage]], None] | None = None,
        channels: Mapping[str, str] | None = None,
    ) -> None:
        self.pg = pg_conninfo
        self.settings = settings
        self.kinds = station_kinds
        self.intervals = station_intervals
        self._intervals: Mapping[str, Mapping[str, float]] = {}  # taken once per recompute
        self.name = name
        self.settle_ns = int(settle_s * 1e9)
        self.overlap_ns = int(overlap_s * 1e9)
        self.on_alerts = on_alerts
        # A new alert row's delivery states (AlertDelivery.channels): pending where a channel is configured.
        self.channels = dict(channels or {"webhook_state": "none", "mqtt_state": "none"})
        self.writer = WarehouseWriter(ilp_conf)
        # A connection per query: one connection reused through a poll read hourly means written
        # (and waited for) earlier in the poll as they were before, under load (issue in the report).
        self.db: q.Conn = pg_conninfo
        # The means this recompute wrote, used in place of what QuestDB shows (its WAL may not be applied yet).
        # table -> station -> (device, parameter, end) -> (unit, mean, valid, worst flag)
        self._fresh: dict[str, dict[str, dict[tuple[str, str, int], tuple]]] = {}
        # table -> station -> the period ends this recompute decided (with or without a row): the stored
        # rows there are replaced, so they are not read back (a month's backlog reads only its margins).
        self._covered: dict[str, dict[str, set[int]]] = {}
        self.watermark = 0
        self._seen: set[tuple[int, str, int]] = set()
        self._pending: dict[tuple[str, int], int] = {}  # (station, hour_end) -> smallest touched ts

    # ------------------------------------------------------------------------------ the feed
    def start(self) -> None:
        ensure_schema(self.pg, ANALYSIS_TABLES)
        self.watermark = q.latest_watermark(self.pg, self.name) or 0
        log.info("aggregator_started", watermark=self.watermark, settings=self.settings.source)

    def poll_once(self, now_ns: int | None = None) -> Report:
        return self._poll_once(now_ns)

    def _poll_once(self, now_ns: int | None = None) -> Report:
        now = time.time_ns() if now_ns is None else now_ns
        q.wait_applied(self.db, ["touched_hours"])
        for key in q.touched_hours(self.db, self.watermark - self.overlap_ns, now):
            if key in self._seen:
                continue
            self._seen.add(key)
            ts, station, hour_end = key
            bucket = (station, hour_end)
            self._pending[bucket] = min(ts, self._pending.get(bucket, ts))
        ready = [b for b in self._pending if b[1] + self.settle_ns <= now]
        report = Report()
        if ready:
            q.wait_applied(self.db, ["readings"])
            buckets: dict[str, set[int]] = defaultdict(set)
            for station, hour_end in ready:
                buckets[station].add(hour_end)
            report = self.recompute(buckets, now)
            for b in ready:
                del self._pending[b]
        seen_max = max((k[0] for k in self._seen), default=self.watermark)
        mark = min(self._pending.values()) - 1 if self._pending else max(seen_max, self.watermark)
        if mark > self.watermark:
            self.writer.write_rows(
                AGGREGATOR_PROGRESS,
                [ilp_row(AGGREGATOR_PROGRESS, time.time_ns(), aggregator=self.name, watermark=mark)],
            )
            self.watermark = mark
        floor = self.watermark - self.overlap_ns
        self._seen = {k for k in self._seen if k[0] > floor}
        return report

    def run(self, stop, poll_s: float = 10.0) -> None:
        """Poll until ``stop`` (a threading.Event) is set; a warehouse outage is waited out."""
        from store.errors import WarehouseUnavailable

        while not stop.is_set():
            try:
                report = self.poll_once()
                if report.hours:
                    log.info(
                        "aggregated",
                        hours=report.hours,
                        hourly=report.hourly_rows,
                        daily=report.daily_rows,
                        eight_hour=report.eight_hour_rows,
                        aqi=report.aqi_rows,
                        episodes=report.episode_rows,
                        alerts=len(report.alerts),
                    )
            except WarehouseUnavailable as exc:
                log.warning("warehouse_unavailable", error=str(exc))
            stop.wait(poll_s)

    # ------------------------------------------------------------------------------ recompute
    def recompute(self, buckets: Mapping[str, set[int]], now_ns: int | None = None) -> Report:
        """Recompute the hours ``buckets`` names (station -> hour ends) and everything built on them."""
        now = time.time_ns() if now_ns is None else now_ns
        report = Report(hours=sum(len(h) for h in buckets.values()))
        self._fresh, self._covered = {}, {}
        self._intervals = self.intervals()
        try:
            report.hourly_rows = self._hourly(buckets, now)
            q.wait_applied(self.db, [HOURLY_MEANS.name])  # the days are a GROUP BY over hourly_means in QuestDB
            report.daily_rows = self._daily(buckets, now)
            report.eight_hour_rows = self._eight_hour(buckets, now)
            kinds = dict(self.kinds())
            report.aqi_rows = self._aqi(buckets, kinds, now)
            report.episode_rows, report.alerts = self._exceedances(buckets, kinds, now)
            # Return once what was decided can be read: a reader (the API, `quantrac aqi`, a test) right
            # after a poll must not see the previous AQI (issue 13's end-to-end test read stale aqi_hourly
            # rows when it came first), and the next poll reads this one's means from QuestDB.
            q.wait_applied(self.db, WRITTEN_TABLES)
        finally:
            self._fresh, self._covered = {}, {}
        if report.alerts and self.on_alerts is not None:
            self.on_alerts(report.alerts)
        return report

    def _rule(self, station: str, parameter: str) -> AveragingRule:
        return self.settings.rule(station, parameter, self._intervals.get(station, {}).get(parameter))

    def _hourly(self, buckets: Mapping[str, set[int]], now: int) -> int:
        by_hour: dict[int, list[str]] = defaultdict(list)
        rows: list[tuple] = []
        for station, hours in buckets.items():
            if len(hours) >= PER_STATION_HOURS:
                for lo, hi in _ranges(hours):
                    rows += q.hour_aggregate_rows(self.db, [station], lo, hi)
            else:
                for h in hours:
                    by_hour[h].append(station)
        for h, stations in by_hour.items():
            for chunk in _chunks(sorted(stations)):
                rows += q.hour_aggregate_rows(self.db, chunk, h, h)
        columns = hourly_columns(rows, self._rule)
        columns["computed_at"] = [now] * len(rows)
        self._covered[HOURLY_MEANS.name] = {station: set(hours) for station, hours in buckets.items()}
        fresh = self._fresh.setdefault(HOURLY_MEANS.name, {})
        for station, device, parameter, ts, unit, mean, valid, worst in zip(
            *(columns[c] for c in ("station", "device", "parameter", "ts", "unit", "mean", "valid", "worst_flag")),
            strict=True,
        ):
            fresh.setdefault(station, {})[device, parameter, ts] = (unit, mean, valid, worst)
        return self.writer.write_columns(HOURLY_MEANS, columns)

    def _daily(self, buckets: Mapping[str, set[int]], now: int) -> int:
        """The local days the hours are part of: one query per run of consecutive days (a month's
        backlog of a station is one query), for the stations sharing that run."""
        runs: dict[tuple[dt.date, dt.date], list[str]] = defaultdict(list)
        wanted: dict[str, set[dt.date]] = {}
        for station, hours in buckets.items():
            days = wanted[station] = {vn_aqi.local_day_of(h) for h in hours}
            self._covered.setdefault(DAILY_MEANS.name, {})[station] = {local_day_bounds(d)[1] for d in days}
            for run in _day_runs(days):
                runs[run].append(station)
        rows: list[Mean] = []
        for (first, last), stations in runs.items():
            for chunk in _chunks(sorted(stations)):
                for day, agg in q.local_days_aggregates(self.db, chunk, first, last):
                    if day not in wanted[agg.station]:
                        continue
                    rule = self._rule(agg.station, agg.parameter)
                    rows.append(daily_mean(agg, local_day_bounds(day)[1], day.isoformat(), rule))
        return self._write(DAILY_MEANS, rows, now)

    def _eight_hour(self, buckets: Mapping[str, set[int]], now: int) -> int:
        params = self.settings.eight_hour_parameters
        if not params:
            return 0
        rows: list[Mean] = []
        for station, hours in buckets.items():
            ends = affected_eight_hour_ends(hours)
            series = self._series(HOURLY_MEANS.name, station, ends[0] - 7 * HOUR_NS, ends[-1], params)
            for (device, parameter, unit), values in series.items():
                rule = self._rule(station, parameter)
                for end in ends:
                    window = range(end - 7 * HOUR_NS, end + 1, HOUR_NS)
                    if not any(h in values for h in window) and not any(h in hours for h in window):
                        continue
                    rows.append(eight_hour_mean(station, device, parameter, unit, end, values, rule))
            self._covered.setdefault(EIGHT_HOUR_MEANS.name, {})[station] = set(ends)
        return self._write(EIGHT_HOUR_MEANS, rows, now)

    def _series(
        self, table: str, station: str, first: int, last: int, parameters=None
    ) -> dict[tuple[str, str, str], dict[int, tuple[float, int | None]]]:
        """Valid means of one station: (device, parameter, unit) -> end -> (mean, worst flag)."""
        out: dict[tuple[str, str, str], dict[int, tuple[float, int | None]]] = defaultdict(dict)
        fresh = self._fresh.get(table, {}).get(station, {})
        covered = self._covered.get(table, {}).get(station, set())
        for lo, hi in _uncovered(first, last, covered):
            for m in q.stored_means(self.db, table, [station], lo, hi, parameters):
                if m.ts in covered or (m.device, m.parameter, m.ts) in fresh:
                    continue  # replaced by this recompute (DEDUP keys: ts, station, device, parameter)
                if m.valid and m.mean is not None:
                    out[m.device, m.parameter, m.unit][m.ts] = (m.mean, m.worst_flag)
        for (device, parameter, ts), (unit, mean, valid, worst) in fresh.items():
            if not first <= ts <= last or (parameters and parameter not in parameters):
                continue
            if valid and mean is not None:
                out[device, parameter, unit][ts] = (mean, worst)
        return out

    # ------------------------------------------------------------------------------ VN_AQI
    def _aqi(self, buckets: Mapping[str, set[int]], kinds: Mapping[str, str | None], now: int) -> int:
        hourly_rows: list[IlpRow] = []
        daily_rows: list[IlpRow] = []
        # The newest hour that has ENDED: an hour still running has no AQI yet (NowCast from the hours
        # before it would publish a value for a period that has not been measured).
        current_end = now // HOUR_NS * HOUR_NS
        for station, hours in buckets.items():
            if not self.settings.aqi(station, kinds.get(station)):
                continue
            ends = sorted({h + k * HOUR_NS for h in hours for k in range(vn_aqi.NOWCAST_HOURS)} - {0})
            ends = [e for e in ends if e <= current_end]
            days = sorted({vn_aqi.local_day_of(h + k * HOUR_NS) for h in hours for k in (0, 7)})
            first = min(ends[0] - vn_aqi.NOWCAST_HOURS * HOUR_NS, local_day_bounds(days[0])[0] - 8 * HOUR_NS)
            last = max(ends[-1], local_day_bounds(days[-1])[1])
            series = self._aqi_series(station, first, last)
            for end in ends:
                # Only the 12 hours NowCast reads: the calculator checks every hour it is given.
                window = {
                    p: {h: values[h] for h in range(end - (vn_aqi.NOWCAST_HOURS - 1) * HOUR_NS, end + 1, HOUR_NS)
                        if h in values}
                    for p, values in series.items()
                }  # fmt: skip
                result = vn_aqi.hourly_aqi(window, end)
                hourly_rows.append(_aqi_row(AQI_HOURLY, end, station, result, now))
            for day in days:
                if local_day_bounds(day)[0] > current_end:
                    continue
                lo, hi = local_day_bounds(day)
                window = {
                    p: {h: v for h, v in values.items() if lo - 8 * HOUR_NS <= h <= hi} for p, values in series.items()
                }
                result = vn_aqi.daily_aqi(window, day, self.settings.daily_rules(station))
                daily_rows.append(_aqi_row(AQI_DAILY, result.end_ns, station, result, now, day.isoformat()))
        self.writer.write_rows(AQI_HOURLY, hourly_rows)
        self.writer.write_rows(AQI_DAILY, daily_rows)
        return len(hourly_rows) + len(daily_rows)

    def _aqi_series(self, station: str, first: int, last: int) -> dict[str, dict[int, vn_aqi.HourlyMean]]:
        """VN_AQI's input: per parameter, valid hourly means in µg/m³. With several devices measuring one
        parameter, the first device (by name) with a valid mean for the hour is used."""
        series: dict[str, dict[int, vn_aqi.HourlyMean]] = {}
        raw = self._series(HOURLY_MEANS.name, station, first, last, vn_aqi.PARAMETERS)
        for device, parameter, unit in sorted(raw):
            try:
                converted = {
                    end: vn_aqi.to_ugm3(v, unit, parameter) for end, (v, _) in raw[device, parameter, unit].items()
                }
            except vn_aqi.UnitError as exc:
                log.warning("aqi_unit_unusable", station=station, device=device, parameter=parameter, error=str(exc))
                continue
            target = series.setdefault(parameter, {})
            for end, v in converted.items():
                if end not in target and v >= 0:
                    target[end] = vn_aqi.HourlyMean(v, True)
        return series

    # ------------------------------------------------------------------------------ exceedances
    def _exceedances(
        self, buckets: Mapping[str, set[int]], kinds: Mapping[str, str | None], now: int
    ) -> tuple[int, list[AlertMessage]]:
        episode_rows: list[IlpRow] = []
        alerts: list[tuple[AlertMessage, IlpRow]] = []
        for station, hours in buckets.items():
            limits = self.settings.limits(station, kinds.get(station))
            if not limits:
                continue
            rules = self.settings.episode_rules(station)
            first_hour = min(hours)
            changed_from = {
                "1h": first_hour,
                "8h": first_hour,
                "24h": local_day_bounds(vn_aqi.local_day_of(first_hour))[1],
            }
            for period in sorted({lim.period for lim in limits}):
                period_limits = [lim for lim in limits if lim.period == period]
                self._episodes_for(
                    station, period, period_limits, changed_from[period], rules, now, episode_rows, alerts
                )
        self.writer.write_rows(EXCEEDANCE_EPISODES, episode_rows)
        known = q.existing_alert_ids(self.db, [a.alert_id for a, _ in alerts])  # one query, not one per alert
        fresh = [(a, row) for a, row in alerts if a.alert_id not in known]
        self.writer.write_rows(ALERTS, [row for _, row in fresh])
        return len(episode_rows), [a for a, _ in fresh]

    def _episodes_for(self, station, period, limits: list[Limit], changed_from, rules, now, episode_rows, alerts):
        table = MEAN_TABLE[period]
        # The state before an episode is closed: start at the opening of one spanning the change.
        stored_all: dict[tuple[str, tuple[str, str]], list[q.StoredEpisode]] = defaultdict(list)
        for e in q.stored_episodes(self.db, station, period):
            stored_all[e.limit_id, (e.device, e.parameter)].append(e)
        anchor = changed_from
        for episodes in stored_all.values():
            for e in episodes:
                if (
                    e.state != "withdrawn"
                    and e.opened <= changed_from
                    and (e.closed_at is None or e.closed_at >= changed_from)
                ):
                    anchor = min(anchor, e.opened)
        series = self._series(table, station, anchor, now + PERIOD_NS[period], [lim.parameter for lim in limits])
        o2_parameters = sorted({lim.o2_parameter for lim in limits if lim.reference_o2 is not None})
        o2 = self._series(table, station, anchor, now + PERIOD_NS[period], o2_parameters) if o2_parameters else {}
        for (device, parameter, unit), measured in series.items():
            for lim in (x for x in limits if x.parameter == parameter):
                if _norm_unit(unit) != _norm_unit(lim.unit):
                    log.warning(
                        "limit_unit_mismatch", station=station, parameter=parameter, unit=unit, limit=lim.limit_id
                    )
                    continue
                values = measured
                if lim.reference_o2 is not None:
                    values = o2_corrected(measured, _o2_of(o2, device, lim.o2_parameter), lim.reference_o2)
                    if len(values) < len(measured):
                        log.info(
                            "o2_correction_not_judged", station=station, device=device, parameter=parameter,
                            periods=len(measured) - len(values), reason="no valid O2 mean, or O2 >= 20 %",
                        )  # fmt: skip
                stored = [e for e in stored_all.get((lim.limit_id, (device, parameter)), []) if e.opened >= anchor]
                new = ep.scan(sorted((end, v) for end, (v, _) in values.items()), lim, rules)
                self._diff(station, device, lim, stored, new, values, now, episode_rows, alerts)

    def _write(self, table, rows: list[Mean], now: int) -> int:
        """Means as one transaction of columns; kept in ``_fresh`` for the rest of this recompute."""
        fresh = self._fresh.setdefault(table.name, {})
        columns: dict[str, list] = defaultdict(list)
        extras = sorted({name for m in rows for name in (m.extra or {})})
        for m in rows:
            fresh.setdefault(m.station, {})[m.device, m.parameter, m.ts] = (m.unit, m.mean, m.valid, m.worst_flag)
            for name, value in (
                ("ts", m.ts), ("station", m.station), ("device", m.device), ("parameter", m.parameter),
                ("unit", m.unit), ("n_valid", m.n_valid), ("n_expected", m.n_expected), ("coverage", m.coverage),
                ("valid", m.valid), ("rule", m.rule), ("computed_at", now), ("mean", m.mean), ("min", m.low),
                ("max", m.high), ("worst_flag", m.worst_flag),
            ):  # fmt: skip
                columns[name].append(value)
            extra = m.extra or {}
            for name in extras:
                columns[name].append(extra.get(name))
        return self.writer.write_columns(table, columns) if rows else 0

    def _diff(self, station, device, lim: Limit, stored, new: list[ep.Episode], values, now, episode_rows, alerts):
        old = {e.opened: e for e in stored if e.state != "withdrawn"}
        fresh = {e.opened: e for e in new}

        def alert(kind: str, e, at: int, state: str, mean: float | None, version: int) -> None:
            msg = AlertMessage(
                alert_id(station, device, lim.parameter, lim.limit_id, e.opened, kind, at),
                kind,
                station,
                device,
                lim.parameter,
                lim.limit_id,
                lim.regulation,
                lim.period,
                lim.value,
                lim.unit,
                e.opened,
                at,
                state,
                mean,
                e.peak,
                e.periods,
                now,
                confidence=lim.confidence,
            )
            alerts.append((msg, outbox_row(msg, now, self.channels)))

        def row(e: ep.Episode, state: str, version: int) -> None:
            values = dict(
                station=station,
                device=device,
                parameter=lim.parameter,
                limit_id=lim.limit_id,
                period=lim.period,
                limit_value=lim.value,
                unit=lim.unit,
                state=state,
                periods=e.periods,
                peak=e.peak,
                last_mean=e.last_mean,
                decided_at=now,
                version=version,
            )
            if e.escalated_at is not None:
                values["escalated_at"] = e.escalated_at
            if e.closed_at is not None:
                values["closed_at"] = e.closed_at
            episode_rows.append(ilp_row(EXCEEDANCE_EPISODES, e.opened, **values))

        def mean_at(at: int) -> float | None:
            return values.get(at, (None,))[0]

        for opened, e in fresh.items():
            before = old.get(opened)
            if before is None:
                row(e, e.state, 1)
                alert("open", e, opened, "open", mean_at(opened), 1)
                if e.escalated_at is not None:
                    alert("escalate", e, e.escalated_at, "escalated", mean_at(e.escalated_at), 1)
                if e.closed_at is not None:
                    alert("close", e, e.closed_at, "closed", mean_at(e.closed_at), 1)
                continue
            same = (before.state, before.escalated_at, before.closed_at, before.periods, before.peak) == (
                e.state,
                e.escalated_at,
                e.closed_at,
                e.periods,
                e.peak,
            )
            if same:
                continue
            version = before.version + 1
            row(e, e.state, version)
            if before.escalated_at is None and e.escalated_at is not None:
                alert("escalate", e, e.escalated_at, "escalated", mean_at(e.escalated_at), version)
            if before.closed_at is not None and e.closed_at is None:
                alert("reopen", e, before.closed_at, e.state, mean_at(before.closed_at), version)
            elif e.closed_at is not None and before.closed_at != e.closed_at:
                alert("close", e, e.closed_at, "closed", mean_at(e.closed_at), version)
        for opened, before in old.items():
            if opened in fresh:
                continue
            gone = ep.Episode(opened, before.periods, before.peak, before.peak, before.escalated_at, before.closed_at)
            row(gone, "withdrawn", before.version + 1)
            alert("withdraw", gone, opened, "withdrawn", mean_at(opened), before.version + 1)


#: Above this measured O2 (%) the stack carries mostly air (a plant stopped or starting): the correction
#: factor (21 - ref) / (21 - O2) grows without bound, so the period is not judged at all.
O2_JUDGEABLE_BELOW = 20.0


def o2_corrected(values: dict[int, tuple], o2: dict[int, tuple], reference: float) -> dict[int, tuple]:
    """Means corrected to the reference O2: C x (21 - ref) / (21 - O2), period by period. A period without
    a valid O2 mean, or with O2 at or above ``O2_JUDGEABLE_BELOW``, is left out (not judged, never
    compared uncorrected)."""
    out = {}
    for end, (mean, worst) in values.items():
        measured = o2.get(end)
        if measured is None or not 0 <= measured[0] < O2_JUDGEABLE_BELOW:
            continue
        out[end] = (mean * (21.0 - reference) / (21.0 - measured[0]), worst)
    return out


def _o2_of(o2: dict, device: str, parameter: str) -> dict[int, tuple]:
    """The O2 series (in %) of the same device when it measures O2, else the station's first (by device
    name). A series in another unit (ppm, a fraction) is never used: the correction would be wrong."""
    candidates = sorted((d, s) for (d, p, unit), s in o2.items() if p == parameter and _norm_unit(unit).startswith("%"))
    for d, s in candidates:
        if d == device:
            return s
    return candidates[0][1] if candidates else {}


def _norm_unit(unit: str) -> str:
    return unit.strip().replace("³", "3").replace("µ", "u").replace("μ", "u").lower()


def _aqi_row(table, ts: int, station: str, result: vn_aqi.AqiResult, now: int, local_day: str | None = None) -> IlpRow:
    values: dict[str, object] = dict(
        station=station,
        sub_indices=json.dumps(
            {
                p: {"value": s.value, "scale": s.scale, "concentration": round(s.concentration, 4), "basis": s.basis}
                for p, s in result.sub_indices.items()
            },
            ensure_ascii=False,
        ),
        missing=json.dumps({**result.missing, **result.dropped}, ensure_ascii=False),
        computed_at=now,
    )
    if local_day is not None:
        values["local_day"] = local_day
    if result.aqi is not None:
        values.update(
            aqi=result.aqi, category=result.category.name_vi, colour=result.category.hex, dominant=result.dominant
        )
    else:
        values["reason"] = result.no_aqi_reason or ""
    return ilp_row(table, ts, **values)


def _day_runs(days: Iterable[dt.date]) -> list[tuple[dt.date, dt.date]]:
    """Consecutive local days as (first, last) runs."""
    runs: list[tuple[dt.date, dt.date]] = []
    for day in sorted(days):
        if runs and day == runs[-1][1] + dt.timedelta(days=1):
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs
