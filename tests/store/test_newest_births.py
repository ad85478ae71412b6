"""store.queries.newest_births: each station's newest *birth*, never the periodic status or re-send report
that follows it (both are ``online`` too), read from the real QuestDB."""

from __future__ import annotations

import time

from broker_bridge.station_messages import (
    Birth,
    DeviceDescription,
    MeasuringRange,
    OutboxStatus,
    ResendReport,
    StationDescription,
    StationState,
    Status,
    Will,
)
from store.ilp_writer import WarehouseWriter, ilp_row
from store.queries import newest_births
from store.schema import STATION_EVENTS
from tests.helpers import unique_station, wait_for_count

M = 60 * 10**9


def birth(station: str, session: int, high: float) -> Birth:
    description = StationDescription(
        "store test", "ambient_air", (DeviceDescription("a1", "vendor-x", "modbus_tcp"),), "0" * 64,
        (MeasuringRange("a1", "PM10", "ug/m3", 0.0, high, "vendor-x"),),
    )  # fmt: skip
    return Birth(station, session, time.time_ns(), description)


def test_the_newest_birth_is_found_behind_newer_statuses_and_reports(warehouse):
    station, other, recent = unique_station("ST_BIRTHS"), unique_station("ST_NOBIRTH"), unique_station("ST_RECENT")
    now = time.time_ns()
    state = StationState(OutboxStatus(0, 0, 0, 0, 0, 0, 1 << 30, 0.0, 0.0, 0, 0, 0), None, {}, 0, None, 0)
    events = [
        (now - 5 * M, station, birth(station, 1, 500.0)),
        (now - 4 * M, station, birth(station, 2, 800.0)),  # the newest birth
        (now - 3 * M, station, Status(station, 2, now, state)),
        (now - 2 * M, station, ResendReport(station, 2, now, 1, 2, 0, ((1, 2),))),
        (now - 1 * M, station, Will(station, 2, planned=True)),
        (now - 1 * M, other, Status(other, 1, now, state)),
        (now - 10 * 10**9, recent, birth(recent, 1, 300.0)),
    ]
    writer = WarehouseWriter(warehouse.ilp_conf)
    try:
        writer.write_rows(STATION_EVENTS, [
            ilp_row(STATION_EVENTS, ts, station=st, state="offline" if isinstance(m, Will) else "online",
                    session=m.session, planned=False, payload=m.encode().decode())
            for ts, st, m in events
        ])  # fmt: skip
    finally:
        writer.close()
    wait_for_count(
        warehouse.pg_conninfo,
        "SELECT count() FROM station_events WHERE station IN (%s, %s, %s)",
        7,
        params=(station, other, recent),
    )
    found = newest_births(warehouse.pg_conninfo)
    newest = Birth.parse(found[station].encode())  # raises if a status or re-send report came back
    assert newest.session == 2 and newest.description.ranges[0].high == 800.0
    assert other not in found and recent in found
    latest = newest_births(warehouse.pg_conninfo, within_s=120)  # what a share group's member polls
    assert recent in latest and station not in latest and other not in latest
