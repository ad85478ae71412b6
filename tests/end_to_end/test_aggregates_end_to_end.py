"""Issue 13 end to end: signed batches through Mosquitto and the collector into QuestDB, then the
aggregator; hourly/daily means, coverage, VN_AQI and episodes read back from QuestDB equal values
computed here from the same readings; a 3-day late backlog; a stack SO2 episode with a real webhook
receiver and a retained MQTT alert read with mosquitto_sub."""

from __future__ import annotations

import datetime as dt
import http.server
import math
import subprocess
import threading
import time
from collections import defaultdict

import pytest

from analysis.aggregator import Aggregator
from analysis.delivery import AlertDelivery
from analysis.settings import Settings, SettingsFile
from broker_bridge.alerts import AlertMessage
from broker_bridge.envelope import BatchBody, Reading, seal
from broker_bridge.keys import write_new_key
from broker_bridge.session import BrokerAddress
from broker_bridge.topics import alert_topic, data_topic
from collector.registry import add_station
from store import vn_aqi
from supervisor.process import wait_until
from tests.helpers import publish_all, require_tool, sql, unique_station, wait_for_count

H = 3_600_000_000_000
M = 60_000_000_000


def local_midnight_ns(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=vn_aqi.LOCAL_ZONE).timestamp()) * 1_000_000_000


@pytest.fixture
def station(tmp_path, request):
    kind = request.param if hasattr(request, "param") else "ambient_air"
    sid = unique_station("AGG")
    key = write_new_key(tmp_path / f"{sid}.key")
    registry = tmp_path / "registry.yaml"
    add_station(registry, sid, key.public_key, kind=kind)
    return sid, key, registry, kind


class Sender:
    def __init__(self, port, sid, key):
        self.port, self.sid, self.key, self.seq = port, sid, key, 0

    def send(self, readings, historical=False, per_batch=240):
        payloads = []
        for i in range(0, len(readings), per_batch):
            self.seq += 1
            body = BatchBody(self.sid, self.seq, time.time_ns(), tuple(readings[i : i + per_batch]), historical)
            payloads.append(seal(body, self.key.key_id, self.key.private_key))
        publish_all(self.port, data_topic(self.sid), payloads)


def wait_touched(warehouse, sid, hour_end):
    """The collector writes touched_hours just after the readings' commit: wait for it before polling."""
    wait_for_count(
        warehouse.pg_conninfo,
        "SELECT count() FROM touched_hours WHERE station = %s AND hour_end = cast(%s AS TIMESTAMP_NS)",
        1,
        params=(sid, hour_end),
    )


def pm_value(parameter, t):
    base = 40.0 + 15 * math.sin(t / (7 * H) * 2 * math.pi) + (t // M % 7) * 0.3
    return round(base if parameter == "PM10" else base * 0.55, 3)


@pytest.mark.slow  # readings through the collector, then the aggregator: ~25 s
def test_means_coverage_aqi_and_a_late_backlog_equal_an_independent_computation(
    station, mosquitto_server, make_collector, warehouse
):
    sid, key, registry, _ = station
    collector = make_collector(mosquitto_server.port, registry, f"c-{sid}")
    days = [dt.date.today() - dt.timedelta(days=k) for k in (8, 7, 6)]
    start = local_midnight_ns(days[0])
    # What each reading is: parameter, ts -> (value, status, counts?)
    truth: dict[tuple[str, int], tuple[float, str, bool]] = {}
    for minute in range(3 * 24 * 60):
        t = start + minute * M
        hour = (t - start) // H
        minute_of_hour = minute % 60
        if hour == 51:  # day 3, 03:00 local: no reading at all (a gap)
            continue
        for parameter in ("PM10", "PM2,5"):
            value, status, counts = pm_value(parameter, t), "00", True
            if hour == 5 and minute_of_hour <= 20:  # calibration: 21 of 60 out, the hour is 65 %: invalid
                status, counts = "01", False
            if 24 + 10 <= hour <= 24 + 16:  # day 2, 7 hours of device error: 17 valid hours, no valid day
                status, counts = "02", False
            if hour == 8 and 40 <= minute_of_hour <= 44 and parameter == "PM2,5":  # QC fail (gross range)
                value, counts = -50.0, False
            truth[parameter, t] = (value, status, counts)

    def readings(select):
        return [
            Reading(t, "aqms1", p, v, "ug/m3", s, "calibration" if s == "01" else "")
            for (p, t), (v, s, _) in sorted(truth.items(), key=lambda kv: (kv[0][1], kv[0][0]))
            if select(t)
        ]

    sender = Sender(mosquitto_server.port, sid, key)
    # Live: the first half of every hour only (every hour under 75 %); then a 3-day late backlog brings
    # the second halves, flagged historical, and re-sends minutes 20-29 (already stored) as well.
    sender.send(readings(lambda t: (t // M) % 60 < 30))
    count = f"SELECT count() FROM readings WHERE station = '{sid}'"
    first = len(readings(lambda t: (t // M) % 60 < 30))
    wait_for_count(warehouse.pg_conninfo, count, first, timeout=60)
    wait_touched(warehouse, sid, start + 72 * H)
    settings = Settings(SettingsFile())
    aggregator = Aggregator(
        warehouse.pg_conninfo, warehouse.ilp_conf, settings, lambda: {sid: "ambient_air"}, name=f"agg-{sid}"
    )
    aggregator.start()
    aggregator.poll_once()
    half = sql(
        warehouse.pg_conninfo,
        "SELECT count(), sum(CASE WHEN valid THEN 1 ELSE 0 END) FROM hourly_means WHERE station = %s",
        (sid,),
    )
    assert half == [(2 * 71, 0)], "with half of every hour, no hour is valid"

    sender.send(readings(lambda t: (t // M) % 60 >= 20), historical=True)
    wait_for_count(warehouse.pg_conninfo, count, len(truth), timeout=60)
    assert sql(warehouse.pg_conninfo, count)[0][0] == len(truth)  # the re-sent minutes are not stored twice
    flags = dict(
        ((p, t), (s, f))
        for p, t, s, f in sql(
            warehouse.pg_conninfo,
            "SELECT parameter, ts::long, status, qc_flag FROM readings WHERE station = %s",
            (sid,),
        )
    )
    for key_, (value, status, counts) in truth.items():
        expected_flag = 1 if counts else 4
        assert flags[key_] == (status, expected_flag), (key_, value, flags[key_])
    recomputed = []  # the touched_hours rows of the backlog land just after its readings: poll until all came
    wait_until(lambda: sum(recomputed.append(aggregator.poll_once().hours) or recomputed) >= 71, timeout=30)
    assert sum(recomputed) >= 71  # every touched hour of the 3 days (one split over two flushes may come twice)

    # -- independently: hourly means, then days, then VN_AQI
    hourly: dict[tuple[str, int], list[float]] = defaultdict(list)
    for (p, t), (v, _, counts) in truth.items():
        if counts:
            hourly[p, t // H * H + H].append(v)
    stored = {
        (p, ts): (mean, n, valid, cov, ncal, nerr, nfail)
        for p, ts, mean, n, valid, cov, ncal, nerr, nfail in sql(
            warehouse.pg_conninfo,
            "SELECT parameter, ts::long, mean, n_valid, valid, coverage, n_calibrating, n_device_error, n_qc_fail"
            " FROM hourly_means WHERE station = %s",
            (sid,),
        )
    }
    assert len(stored) == 2 * 71
    for (p, end), row in stored.items():
        values = hourly.get((p, end), [])
        mean, n, valid, cov, *_ = row
        assert n == len(values) and cov == pytest.approx(len(values) / 60)
        assert valid == (len(values) >= 45)
        if values:
            assert mean == pytest.approx(sum(values) / len(values), rel=1e-12)
    assert stored["PM10", start + 6 * H][4] == 21 and stored["PM2,5", start + 9 * H][6] == 5
    assert stored["PM10", start + 6 * H][2] is False and stored["PM2,5", start + 9 * H][2] is True
    assert ("PM10", start + 52 * H) not in stored  # the gap
    valid_hourly = {k: sum(v) / len(v) for k, v in hourly.items() if len(v) >= 45}
    daily = {
        (p, day, ts): (mean, n, valid)
        for p, day, ts, mean, n, valid in sql(
            warehouse.pg_conninfo,
            "SELECT parameter, local_day, ts::long, mean, n_valid, valid FROM daily_means WHERE station = %s",
            (sid,),
        )
    }
    for day in days:
        end = local_midnight_ns(day) + 24 * H
        for p in ("PM10", "PM2,5"):
            hours = [valid_hourly[p, h] for h in range(end - 23 * H, end + 1, H) if (p, h) in valid_hourly]
            mean, n, valid = daily[p, day.isoformat(), end]
            assert n == len(hours) and valid == (len(hours) >= 18)
            assert mean == pytest.approx(sum(hours) / len(hours), rel=1e-12)
            assert dt.datetime.fromtimestamp(end / 1e9, dt.UTC).hour == 17  # 24:00 local
    assert daily["PM10", days[1].isoformat(), local_midnight_ns(days[1]) + 24 * H][1:] == (17, False)
    series = {p: {h: vn_aqi.HourlyMean(v) for (pp, h), v in valid_hourly.items() if pp == p} for p in ("PM10", "PM2,5")}
    aqi_hourly = dict(sql(warehouse.pg_conninfo, "SELECT ts::long, aqi FROM aqi_hourly WHERE station = %s", (sid,)))
    checked = 0
    for end in range(start + H, start + 72 * H + 1, H):
        expected = vn_aqi.hourly_aqi(series, end).aqi
        assert aqi_hourly.get(end) == expected, (end, expected, aqi_hourly.get(end))
        checked += expected is not None
    assert checked > 50
    aqi_daily = dict(sql(warehouse.pg_conninfo, "SELECT local_day, aqi FROM aqi_daily WHERE station = %s", (sid,)))
    for day in days:
        assert aqi_daily[day.isoformat()] == vn_aqi.daily_aqi(series, day).aqi
    assert aqi_daily[days[1].isoformat()] is None  # 17 valid hours of PM: no daily AQI
    # The same backlog once more (a re-send of everything): nothing changes, nothing doubles.
    before = sql(
        warehouse.pg_conninfo,
        "SELECT ts, parameter, mean, n_valid FROM hourly_means WHERE station = %s ORDER BY ts, parameter",
        (sid,),
    )
    sender.send(readings(lambda t: (t // M) % 60 >= 30), historical=True)
    wait_until(lambda: aggregator.poll_once().hours > 0, timeout=30, what="the repeat recomputed")
    after = sql(
        warehouse.pg_conninfo,
        "SELECT ts, parameter, mean, n_valid FROM hourly_means WHERE station = %s ORDER BY ts, parameter",
        (sid,),
    )
    assert after == before
    collector.stop()


class Receiver(http.server.BaseHTTPRequestHandler):
    bodies: list[bytes] = []
    fail_next = 0

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if Receiver.fail_next:
            Receiver.fail_next -= 1
            self.send_response(503)
            self.end_headers()
            return
        Receiver.bodies.append(body)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.slow  # an episode through its life, with a webhook and MQTT alerts: ~20 s
@pytest.mark.parametrize("station", ["stack_emission"], indirect=True)
def test_a_stack_so2_exceedance_opens_one_episode_escalates_once_and_closes(
    station, mosquitto_server, make_collector, warehouse, tmp_path
):
    mosquitto_sub = require_tool("mosquitto_sub", package="mosquitto-clients")
    sid, key, registry, kind = station
    collector = make_collector(mosquitto_server.port, registry, f"c-{sid}")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    Receiver.bodies, Receiver.fail_next = [], 1  # the receiver is down for the first attempt
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings = Settings(
        SettingsFile.model_validate(
            {
                "episodes": {"hysteresis": 0.1, "escalate_after": 3, "escalate_factor": 2.0},
                "stations": {sid: {"limits": [{"regulation": "qcvn_19_2024", "zone": "B"}]}},
            }
        )
    )
    delivery = AlertDelivery(
        warehouse.pg_conninfo,
        warehouse.ilp_conf,
        webhook_url=f"http://127.0.0.1:{server.server_port}/alerts",
        broker=BrokerAddress("127.0.0.1", mosquitto_server.port),
        client_id=f"agg-{sid}",
    )
    aggregator = Aggregator(
        warehouse.pg_conninfo,
        warehouse.ilp_conf,
        settings,
        lambda: {sid: kind},
        name=f"agg-{sid}",
        on_alerts=delivery.submit,
        channels=delivery.channels,
    )
    aggregator.start()
    stop = threading.Event()
    threading.Thread(target=delivery.run, args=(stop,), daemon=True).start()
    sender = Sender(mosquitto_server.port, sid, key)
    start = (time.time_ns() // H - 30) * H
    hour_means = [150, 150, 250, 260, 270, 190, 170, 160]  # limit 200 mg/Nm3 (zone B), close under 180
    sent = 0

    def send_hours(first, last):
        nonlocal sent
        readings = [
            r
            for h in range(first, last)
            for m in range(60)
            for r in (
                Reading(start + h * H + m * M, "cems", "SO2", hour_means[h] + (0.5 if m % 2 else -0.5), "mg/Nm3", "00"),
                # O2 means at the reference 7 %: a correction factor of exactly 1 (its own test is in tests/analysis);
                # 6.5 / 7.5 alternating, since a flat line would be flagged by the controls and not judged
                Reading(start + h * H + m * M, "cems", "O2", 7.5 if m % 2 else 6.5, "%", "00"),
            )
        ]
        sender.send(readings)
        sent += len(readings)
        wait_for_count(warehouse.pg_conninfo, f"SELECT count() FROM readings WHERE station = '{sid}'", sent)
        wait_touched(warehouse, sid, start + last * H)
        return aggregator.poll_once()

    def webhooks(n):
        wait_until(lambda: len(Receiver.bodies) >= n, timeout=20, what=f"{n} webhooks")
        time.sleep(0.5)
        return [AlertMessage.parse(b) for b in Receiver.bodies]

    def retained():
        out = subprocess.run(
            [mosquitto_sub, "-p", str(mosquitto_server.port), "-t", alert_topic(sid), "-C", "1", "-W", "5", "-V", "5"],
            capture_output=True,
            timeout=10,
        )
        assert out.returncode == 0, out.stderr
        return AlertMessage.parse(out.stdout.strip())

    def episodes():
        return sql(
            warehouse.pg_conninfo,
            "SELECT ts::long, state, escalated_at::long, closed_at::long, periods"
            " FROM exceedance_episodes WHERE station = %s",
            (sid,),
        )

    report = send_hours(0, 3)
    assert [a.kind for a in report.alerts] == ["open"]
    (first,) = webhooks(1)
    assert (first.kind, first.at_ns, first.mean, first.limit) == ("open", start + 3 * H, 250.0, 200.0)
    assert episodes() == [(start + 3 * H, "open", None, None, 1)]
    wait_until(lambda: delivery.pending() == 0, timeout=20, what="open delivered on both channels")
    assert retained().kind == "open"

    send_hours(3, 5)  # 260, 270: the third exceeding hour escalates
    alerts = webhooks(2)
    assert [a.kind for a in alerts] == ["open", "escalate"] and alerts[1].at_ns == start + 5 * H
    wait_until(lambda: delivery.pending() == 0, timeout=20, what="escalation delivered")
    assert retained().kind == "escalate"

    send_hours(5, 6)  # 190: under the limit, not under limit - hysteresis: still open
    assert aggregator.poll_once().alerts == [] and episodes()[0][1] == "escalated"
    send_hours(6, 8)  # 170: closed
    alerts = webhooks(3)
    assert [a.kind for a in alerts] == ["open", "escalate", "close"] and alerts[2].at_ns == start + 7 * H
    wait_until(lambda: delivery.pending() == 0, timeout=20, what="close delivered")
    assert retained().kind == "close"
    assert episodes() == [(start + 3 * H, "closed", start + 5 * H, start + 7 * H, 3)]
    # Recomputing everything again decides nothing new: no second webhook.
    aggregator.recompute({sid: {start + h * H for h in range(1, 9)}})
    time.sleep(1.5)
    assert len(Receiver.bodies) == 3
    states = sql(
        warehouse.pg_conninfo,
        "SELECT kind, webhook_state, webhook_attempts, mqtt_state FROM alerts WHERE station = %s ORDER BY ts",
        (sid,),
    )
    assert states == [
        ("open", "delivered", 2, "delivered"),
        ("escalate", "delivered", 1, "delivered"),
        ("close", "delivered", 1, "delivered"),
    ]
    stop.set()
    delivery.close()
    server.shutdown()
    collector.stop()
