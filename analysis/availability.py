"""Data-availability alerts for technicians, kept apart from the pollution alerts.

Each poll asks the warehouse four questions and compares the answers with the conditions still open
(``availability_episodes``):

- **silent**: the station's newest reading is older than its grace period (``silent_after_s``, per
  station where a station reports less often, such as a TT10 station every 5 minutes);
- **device_error**: a series' newest reading has status 02, and has had since its first 02 of this run,
  for longer than ``device_error_after_s``;
- **calibration_long**: the same with status 01 and ``calibration_after_s`` (a zero/span check lasts
  minutes; a station left in calibration hides its data);
- **incomplete**: a series' newest hourly means have been invalid (below the completeness rule) for
  ``incomplete_hours`` hours in a row.

A condition opens once (its row keyed by when it began, an ``open`` alert) and closes once (the same row
rewritten ``closed``, a ``close`` alert) when the answer changes. Alert ids are made of the condition and
its start, so a monitor restarted between writing an alert and its row never alerts twice. Alerts go
through the same durable outbox and delivery as the exceedances (analysis/delivery.py), on their own
retained topic ``quantrac/v1/<station>/availability``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from analysis.delivery import outbox_row
from analysis.settings import Settings
from broker_bridge.alerts import AvailabilityAlert, alert_id
from store import analysis_queries as q
from store.analysis_queries import HOUR_NS
from store.ilp_writer import IlpRow, WarehouseWriter, ilp_row
from store.schema import ALERTS, AVAILABILITY_EPISODES, ensure_schema

log = structlog.get_logger("analysis.availability")

WHOLE_STATION = "*"  # device and parameter of a station-wide condition (silent)
_S = 1_000_000_000


@dataclass(frozen=True)
class Condition:
    station: str
    device: str
    parameter: str
    condition: str
    since: int  # UTC ns
    detail: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        return self.station, self.device, self.parameter, self.condition


def _minutes(ns: int) -> str:
    minutes = ns / 60e9
    return f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


class AvailabilityMonitor:
    def __init__(
        self,
        pg_conninfo: str,
        ilp_conf: str,
        settings: Settings,
        *,
        channels: dict[str, str] | None = None,
        on_alerts: Callable[[list[AvailabilityAlert]], None] | None = None,
    ) -> None:
        self.pg = pg_conninfo
        self.settings = settings
        self.writer = WarehouseWriter(ilp_conf)
        self.channels = dict(channels or {"webhook_state": "none", "mqtt_state": "none"})
        self.on_alerts = on_alerts

    def start(self) -> None:
        ensure_schema(self.pg, (AVAILABILITY_EPISODES, ALERTS))

    def run(self, stop, poll_s: float = 60.0) -> None:
        """Poll until ``stop`` (a threading.Event) is set; a warehouse outage is waited out."""
        from store.errors import WarehouseUnavailable

        while not stop.is_set():
            try:
                self.poll()
            except (WarehouseUnavailable, RuntimeError) as exc:  # RuntimeError: a refused ILP write
                log.warning("availability_poll_failed", error=str(exc))
            stop.wait(poll_s)

    # ------------------------------------------------------------------------------ what holds now
    def conditions(self, now: int) -> tuple[dict[tuple, Condition], dict[tuple, int]]:
        """The conditions that hold at ``now``, and what ended the others: key -> the newest reading's time
        (or hour) of the station or series, for closing."""
        rules = self.settings.availability
        since = now - int(rules.lookback_days * 86400 * _S)
        holds: dict[tuple, Condition] = {}
        evidence: dict[tuple, int] = {}
        newest_of_station: dict[str, int] = {}
        series = q.newest_of_every_series(self.pg, since)
        for station, _device, _parameter, ts, _status in series:
            newest_of_station[station] = max(ts, newest_of_station.get(station, ts))
        for station, ts in newest_of_station.items():
            key = (station, WHOLE_STATION, WHOLE_STATION, "silent")
            grace = int(self.settings.silent_after_s(station) * _S)
            if now - ts > grace:
                detail = f"no reading for {_minutes(now - ts)} (grace {_minutes(grace)})"
                holds[key] = Condition(*key, ts, detail)
            evidence[key] = ts
        for station, device, parameter, _ts, status in series:
            if status not in ("01", "02") or (station, WHOLE_STATION, WHOLE_STATION, "silent") in holds:
                continue
            condition = "device_error" if status == "02" else "calibration_long"
            limit_s = rules.device_error_after_s if status == "02" else rules.calibration_after_s
            begun = q.status_run_start(self.pg, station, device, parameter, status, since)
            key = (station, device, parameter, condition)
            if now - begun > limit_s * _S:
                what = "device error (02)" if status == "02" else "calibration (01)"
                detail = f"{what} for {_minutes(now - begun)} (alert after {_minutes(int(limit_s * _S))})"
                holds[key] = Condition(*key, begun, detail)
        for station, device, parameter, hour_end, valid in q.newest_hourly_validity(self.pg, since):
            key = (station, device, parameter, "incomplete")
            evidence[key] = hour_end
            if valid or (station, WHOLE_STATION, WHOLE_STATION, "silent") in holds:
                continue
            first = q.invalid_hours_run_start(self.pg, station, device, parameter, since)
            hours = (hour_end - first) // HOUR_NS + 1
            if hours >= rules.incomplete_hours:
                detail = f"{hours} hourly means in a row below the completeness rule"
                holds[key] = Condition(*key, first, detail)
        for station, device, parameter, ts, _status in series:
            for condition in ("device_error", "calibration_long"):
                evidence[station, device, parameter, condition] = ts
        return holds, evidence

    # ------------------------------------------------------------------------------ decisions
    def poll(self, now_ns: int | None = None) -> list[AvailabilityAlert]:
        now = time.time_ns() if now_ns is None else now_ns
        holds, evidence = self.conditions(now)
        open_now = {(o.station, o.device, o.parameter, o.condition): o for o in q.open_availability(self.pg)}
        rows: list[IlpRow] = []
        alerts: list[AvailabilityAlert] = []
        for key, c in holds.items():
            if key in open_now:
                continue
            rows.append(self._row(c.since, key, "open", now, None, c.detail))
            alerts.append(self._alert("open", key, c.since, c.since, "open", c.detail, now))
        for key, o in open_now.items():
            if key in holds:
                continue
            if key[3] == "silent" and key[0] not in {k[0] for k in evidence if k[3] == "silent"}:
                continue  # nothing at all within the lookback: still silent
            ended = evidence.get(key, now)
            detail = f"ended: {o.detail}"
            rows.append(self._row(o.since, key, "closed", o.opened_at, ended, detail))
            alerts.append(self._alert("close", key, o.since, ended, "closed", detail, now))
        known = q.existing_alert_ids(self.pg, [a.alert_id for a in alerts])
        fresh = [a for a in alerts if a.alert_id not in known]
        # The alert rows first: they are the durable outbox; a crash before the episode rows re-decides the
        # same ids at the next poll, and existing_alert_ids keeps them from going out twice.
        self.writer.write_rows(ALERTS, [outbox_row(a, now, self.channels) for a in fresh])
        self.writer.write_rows(AVAILABILITY_EPISODES, rows)
        if rows:
            q.wait_applied(self.pg, [ALERTS.name, AVAILABILITY_EPISODES.name])
        for a in fresh:
            log.info("availability_" + a.kind, station=a.station, device=a.device, parameter=a.parameter,
                     condition=a.condition, detail=a.detail)  # fmt: skip
        if fresh and self.on_alerts is not None:
            self.on_alerts(fresh)
        return fresh

    def _row(self, since: int, key: tuple, state: str, opened: int, closed: int | None, detail: str) -> IlpRow:
        station, device, parameter, condition = key
        return ilp_row(
            AVAILABILITY_EPISODES, since, station=station, device=device, parameter=parameter, condition=condition,
            state=state, opened_at=opened, closed_at=closed, detail=detail, decided_at=time.time_ns(),
        )  # fmt: skip

    @staticmethod
    def _alert(kind: str, key: tuple, since: int, at: int, state: str, detail: str, now: int) -> AvailabilityAlert:
        station, device, parameter, condition = key
        return AvailabilityAlert(
            alert_id(station, device, parameter, condition, since, kind, at),
            kind, station, device, parameter, condition, since, at, state, detail, now,
        )  # fmt: skip
