"""edge_agent.clock: the SNTP client against a small SNTP server run here (real UDP on
127.0.0.1, with a deliberate offset), chrony's CSV, and the marking of readings."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time

import pytest

from broker_bridge.envelope import Reading
from edge_agent.clock import ClockCheckError, ClockMonitor, parse_chrony_tracking, sntp_query
from station_profiles.profile_model import ClockConfig

NTP_EPOCH = 2_208_988_800


def ntp_timestamp(t_s: float) -> bytes:
    secs = int(t_s)
    return struct.pack("!II", secs + NTP_EPOCH, int((t_s - secs) * 2**32))


class SntpServer:
    """Answers SNTP requests with its clock set ``offset_s`` away from ours.

    ``mode`` lets a test break it: "ok", "kiss" (stratum 0), "unsynced" (leap 3),
    "wrong-origin" (a reply that does not echo our timestamp), "silent".
    """

    def __init__(self, offset_s: float, mode: str = "ok") -> None:
        self.offset_s = offset_s
        self.mode = mode
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.requests = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            self.requests += 1
            if self.mode == "silent" or len(data) < 48:
                continue
            t2 = time.time() + self.offset_s
            leap, stratum = (3, 2) if self.mode == "unsynced" else (0, 0 if self.mode == "kiss" else 2)
            origin = bytes(8) if self.mode == "wrong-origin" else data[40:48]
            time.sleep(0.002)  # some processing time: T3 != T2
            t3 = time.time() + self.offset_s
            reply = (
                bytes([leap << 6 | 4 << 3 | 4, stratum, 6, 0xEC])
                + bytes(8)
                + b"LOCL"
                + ntp_timestamp(t2)
                + origin
                + ntp_timestamp(t2)
                + ntp_timestamp(t3)
            )
            self.sock.sendto(reply, peer)

    def __enter__(self) -> SntpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.mark.parametrize("offset", [12.3, -7.5, 0.0])
def test_sntp_measures_the_offset_of_a_real_server(offset: float) -> None:
    with SntpServer(offset) as server:
        sample = sntp_query(f"127.0.0.1:{server.port}", timeout_s=1.0)
    # offset_s > 0: our clock is ahead; the server's runs `offset` seconds ahead of ours
    assert sample.offset_s == pytest.approx(-offset, abs=0.02)
    assert 0 <= sample.delay_s < 0.05
    assert sample.stratum == 2 and sample.source == f"sntp 127.0.0.1:{server.port}"


@pytest.mark.parametrize(
    ("mode", "needle"),
    [
        ("kiss", "not synchronised (leap 0, stratum 0)"),
        ("unsynced", "not synchronised (leap 3"),
        ("wrong-origin", "no answer"),
        ("silent", "no answer"),
    ],
)
def test_sntp_refuses_bad_answers(mode: str, needle: str) -> None:
    with SntpServer(5.0, mode) as server:
        with pytest.raises(ClockCheckError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            sntp_query(f"127.0.0.1:{server.port}", timeout_s=0.3)
        assert server.requests == 1


def test_chrony_tracking_csv() -> None:
    # one line of `chronyc -c tracking` output, kept whole as chronyc prints it
    line = "A29FC87B,ntp1.example.net,3,1732170000.123456,0.000012345,-0.000001,0.000020,-1.234,-0.001,0.020,0.012345,0.001234,64.4,Normal\n"  # noqa: E501
    sample = parse_chrony_tracking(line)
    assert sample.offset_s == pytest.approx(-0.000012345) and sample.stratum == 3 and sample.source == "chrony"
    with pytest.raises(ClockCheckError, match="not synchronised"):
        parse_chrony_tracking(line.replace("Normal", "Not synchronised"))
    with pytest.raises(ClockCheckError, match="unexpected chronyc tracking output"):
        parse_chrony_tracking("506-Cannot talk to daemon")


def test_monitor_marks_readings_while_the_offset_is_too_large() -> None:
    readings = [
        Reading(time.time_ns(), "aqms1", "PM10", 41.0, "ug/m3", "00", ""),
        Reading(time.time_ns(), "aqms1", "SO2", None, "ug/m3", "01", "zero calibration"),
    ]

    async def main() -> None:
        with SntpServer(-12.3) as server:  # the reference is 12.3 s behind: our clock is 12.3 s ahead
            monitor = ClockMonitor(
                ClockConfig(
                    source="sntp", server=f"127.0.0.1:{server.port}", max_offset_s=2.0, check_every_s=60, timeout_s=0.3
                ),
                station_id="T",
            )
            await monitor.maybe_check()
            await monitor.maybe_check()  # not due again: one query
            assert server.requests == 1
            marked = monitor.mark(readings)
            assert [r.cause for r in marked] == [
                "clock offset 12.3 s > 2 s",
                "zero calibration; clock offset 12.3 s > 2 s",
            ]
            assert [(r.value, r.status) for r in marked] == [(41.0, "00"), (None, "01")]  # only the cause changes
            state = monitor.state
            assert (
                state["ok"] is False
                and state["offset_s"] == pytest.approx(12.3, abs=0.02)
                and state["max_offset_s"] == 2.0
            )
            server.offset_s = 0.5  # the clock got fixed
            await monitor.check()
            assert monitor.mark(readings) == readings and monitor.state["ok"] is True
            server.mode = "silent"
            await monitor.check()  # a failed check keeps the last good measurement and says why
            assert monitor.state["error"].startswith("no answer from NTP server") and monitor.state["ok"] is True

    asyncio.run(main())
