"""What the SensorThings tests read: a station described in station_metadata, a signed birth naming its
analyzers' profiles, and readings of two devices through Mosquitto and the collector."""

from __future__ import annotations

import time

from broker_bridge.envelope import Reading
from broker_bridge.station_messages import Birth, DeviceDescription, StationDescription, seal_station_message
from broker_bridge.topics import status_topic
from tests.api.conftest import H, M, StationFeed
from tests.helpers import publish_all, wait_for_count

PM_DEVICE, PM_PROFILE = "pm1", "metone-bam-1020"
O3_DEVICE, O3_PROFILE = "o3a", "teledyne-t400"


def pm10(t: int) -> float:
    return round(40.0 + (t // M % 37) * 0.5, 3)


def load_station(feed: StationFeed, hours: int = 3, province: str = "S11") -> tuple[int, int]:
    """``hours`` of minute readings of PM10 (pm1) and O3 (o3a, every other minute), the hour 1 PM10
    readings calibrating for 10 minutes; returns [start, end)."""
    birth = Birth(
        feed.sid,
        1,
        time.time_ns(),
        StationDescription(
            "Trạm thử STA",
            "ambient_air",
            (
                DeviceDescription(PM_DEVICE, PM_PROFILE, "modbus_tcp"),
                DeviceDescription(O3_DEVICE, O3_PROFILE, "modbus_tcp"),
            ),
            "0" * 64,
        ),
    )
    publish_all(feed.port, status_topic(feed.sid), [seal_station_message(birth, feed.key.key_id, feed.key.private_key)])
    start = (time.time_ns() // H - 30) * H
    end = start + hours * H
    readings = []
    for t in range(start, end, M):
        calibrating = start + H <= t < start + H + 10 * M
        readings.append(
            Reading(
                t, PM_DEVICE, "PM10", pm10(t), "ug/m3", "01" if calibrating else "00", "span" if calibrating else ""
            )
        )
        if (t // M) % 2 == 0:
            readings.append(Reading(t, O3_DEVICE, "O3", round(30.0 + (t // M % 11), 3), "ppb", "00", ""))
    feed.send(readings)
    feed.describe(province, name="Trạm thử STA", parameters={"PM10": 60, "O3": 120})
    wait_for_count(
        feed.warehouse.pg_conninfo,
        "SELECT count() FROM station_events WHERE station = %s AND state = 'online'",
        1,
        params=(feed.sid,),
    )
    return start, end
