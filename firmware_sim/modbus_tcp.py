"""Simulated analyzers served over Modbus TCP (pymodbus 3.16 server).

Each device of a station file becomes a :class:`SimulatedAnalyzer` that
serves its analyzer profile: every value sits at its wire address, encoded
with the profile's type, word order and the inverse of scale/offset. Devices
that share host:port are served by one server, one unit id each.

Values change: whenever a read request covers *all* registers (or the bit)
of a value, the analyzer draws a fresh value from its signal, encodes it into
its registers and appends what it served to the ground-truth log. A value
only partly inside a request is not refreshed and not logged (the master gets
half of the previous encoding, as from a real device). The status register
is served and logged the same way.

Ground-truth log: JSON lines, appended and flushed once per request::

    {"t_ns": 1732170000123456789, "station": "DEMO_AIR_01", "device": "aqms1",
     "unit_id": 1, "kind": "value", "parameter": "PM2,5", "value": 41.37,
     "status": "00", "cause": ""}
    {"t_ns": ..., "station": ..., "device": ..., "unit_id": 1, "kind": "status",
     "raw": 0, "status": "00", "cause": ""}

``t_ns`` is ``time.time_ns()`` when the request was served. ``value`` is the
engineering value exactly as a correct decoder computes it (after float32
rounding, integer rounding, then raw * scale + offset), or null when the
served raw value is a sentinel/NaN (then ``cause`` says "sentinel ...").
``status``/``cause`` on value lines are what the device's status register
said at that moment ("00"/"" when the profile has none); a sentinel adds its
own cause after the status cause ("zero calibration; sentinel -9999").

Undefined addresses answer exception 2 (illegal data address), except gaps of
up to the profile's ``max_read_gap`` between defined addresses, which read as
0. Writes answer exception 2. Unknown unit ids answer exception 11 (gateway
target failed to respond).

Entry points: :class:`StationSimulator` (``start()``/``stop()``, also an
async context manager), :func:`serve_station`, :func:`run_sim` (blocking,
ends on SIGINT/SIGTERM) and ``python -m firmware_sim.modbus_tcp``.

The encoder here is written independently of ``edge_agent.codec`` on purpose:
the tests read this simulator with pymodbus's own client and with mbpoll, so a
shared bug cannot hide.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import signal
import struct
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusTcpServer

from station_profiles.loader import ConfigError, load_station
from station_profiles.profile_model import (
    INT_LIMITS,
    AnalyzerProfile,
    ModbusTcpDevice,
    StationConfig,
    StatusSpec,
    ValueSpec,
)

from .signals import Signal, stable_seed

log = structlog.get_logger("firmware_sim")

_FC_TABLE = {1: "coil", 2: "discrete_input", 3: "holding_register", 4: "input_register"}
_STRUCT = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "float32": "f", "float64": "d"}


# --------------------------------------------------------------------------- #
# Encoding (independent of edge_agent.codec)
# --------------------------------------------------------------------------- #


def encode_registers(raw: int | float, vtype: str, word_order: str) -> list[int]:
    """Raw number -> wire registers for the given type and word order."""
    data = struct.pack(">" + _STRUCT[vtype], raw)  # A B C D ... (most significant first)
    words = [data[i : i + 2] for i in range(0, len(data), 2)]
    if word_order in ("BADC", "DCBA"):
        words = [w[::-1] for w in words]
    if word_order in ("CDAB", "DCBA"):
        words.reverse()
    return [int.from_bytes(w, "big") for w in words]


def raw_for(engineering: float, spec: ValueSpec) -> int | float:
    """Engineering value -> the raw number the analyzer would hold (inverse scale/offset)."""
    raw = (engineering - spec.offset) / spec.scale
    if spec.type in INT_LIMITS:
        lo, hi = INT_LIMITS[spec.type]
        return int(min(hi, max(lo, round(raw))))
    if spec.type == "bool":
        return int(raw >= 0.5)
    if spec.type == "float32":
        return struct.unpack(">f", struct.pack(">f", raw))[0]
    return float(raw)


def served_value(raw: int | float, spec: ValueSpec) -> tuple[float | None, str]:
    """What a correct decoder makes of ``raw``: (engineering value or None, cause)."""
    if isinstance(raw, float) and math.isnan(raw):
        return None, "sentinel NaN"
    for s in spec.sentinels:
        target = struct.unpack(">f", struct.pack(">f", s))[0] if spec.type == "float32" and math.isfinite(s) else s
        if raw == target:
            return None, f"sentinel {raw:g}" if isinstance(raw, float) else f"sentinel {raw}"
    if isinstance(raw, float) and math.isinf(raw):
        return None, f"non-finite value {raw}"
    return float(raw) * spec.scale + spec.offset, ""


# --------------------------------------------------------------------------- #
# Ground-truth log
# --------------------------------------------------------------------------- #


class TruthLog:
    """Append-only JSON-lines file; one write + flush per request. Thread-safe."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._fh = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, entries: Sequence[dict[str, Any]]) -> None:
        if self._fh is None or not entries:
            return
        text = "".join(json.dumps(e, ensure_ascii=False, allow_nan=False) + "\n" for e in entries)
        with self._lock:
            self._fh.write(text)
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


def read_truth(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Parse a ground-truth log (for tests and tools)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# --------------------------------------------------------------------------- #
# One simulated analyzer
# --------------------------------------------------------------------------- #


class _Item:
    __slots__ = ("spec", "table", "address", "width", "signal", "forced")

    def __init__(self, spec: ValueSpec | StatusSpec, signal: Signal | None) -> None:
        self.spec = spec
        self.table = spec.table
        self.address = spec.wire_address
        self.width = spec.width
        self.signal = signal
        self.forced: int | float | None = None


class SimulatedAnalyzer:
    """Serves one analyzer profile under one unit id."""

    def __init__(
        self,
        station_id: str,
        device_id: str,
        unit_id: int,
        profile: AnalyzerProfile,
        *,
        seed: int = 0,
        truth: TruthLog | None = None,
    ) -> None:
        self.station_id = station_id
        self.device_id = device_id
        self.unit_id = unit_id
        self.profile = profile
        self.truth = truth or TruthLog(None)
        self.log = log.bind(station=station_id, device=device_id, unit_id=unit_id)
        self._items: list[_Item] = []
        for spec in profile.values:
            fallback = spec.range[0] + 0.1 * (spec.range[1] - spec.range[0]) if spec.range else 0.0
            sig = Signal.from_hint(spec.signal, seed=stable_seed(seed, station_id, device_id, spec.parameter), fallback_base=fallback)
            self._items.append(_Item(spec, sig))
        self._status: _Item | None = _Item(profile.status, None) if profile.status else None
        self._status_raw: int | None = None  # None: the normal "measuring" code
        self.memory: dict[str, dict[int, int]] = {t: {} for t in _FC_TABLE.values()}
        defined: dict[str, set[int]] = {t: set() for t in _FC_TABLE.values()}
        for item in self._all_items():
            for a in range(item.address, item.address + item.width):
                defined[item.table].add(a)
                self.memory[item.table][a] = 0
        self.readable = {t: self._with_gaps(addrs, profile.max_read_gap) for t, addrs in defined.items()}
        # Initial content, so a read of half a value still returns a consistent half.
        now = time.time()
        for item in self._items:
            self._store(item, raw_for(item.signal.sample(now), item.spec))  # type: ignore[union-attr,arg-type]
        if self._status is not None:
            self._store(self._status, self.status_raw)

    # -- fault-on-demand hooks --------------------------------------------------
    @property
    def status_raw(self) -> int:
        if self._status_raw is not None:
            return self._status_raw
        return self.profile.status.normal_raw if self.profile.status else 0

    def set_status(self, raw: int | None) -> None:
        """Force the status register to ``raw`` (None: back to normal measuring)."""
        if self.profile.status is None:
            raise ValueError(f"profile {self.profile.profile} has no status register")
        self._status_raw = raw
        code, cause = self.status()
        self.log.info("sim.status_set", raw=self.status_raw, status=code, cause=cause)

    def force_raw(self, parameter: str, raw: int | float | None) -> None:
        """Serve ``raw`` (e.g. -9999.0 or NaN) for ``parameter`` instead of the signal (None: back to the signal)."""
        for item in self._items:
            if item.spec.parameter == parameter:  # type: ignore[union-attr]
                item.forced = raw
                return
        raise KeyError(parameter)

    def status(self) -> tuple[str, str]:
        if self.profile.status is None:
            return "00", ""
        return self.profile.status.interpret(self.status_raw)

    # -- serving ----------------------------------------------------------------
    def _all_items(self) -> list[_Item]:
        return self._items + ([self._status] if self._status else [])

    @staticmethod
    def _with_gaps(addrs: set[int], max_gap: int) -> frozenset[int]:
        out = set(addrs)
        if max_gap > 0 and addrs:
            ordered = sorted(addrs)
            for a, b in zip(ordered, ordered[1:]):
                if 1 < b - a <= max_gap + 1:
                    out.update(range(a + 1, b))
        return frozenset(out)

    def _store(self, item: _Item, raw: int | float) -> None:
        mem = self.memory[item.table]
        if item.spec.type == "bool":
            mem[item.address] = int(bool(raw))
            return
        for i, reg in enumerate(encode_registers(raw, item.spec.type, item.spec.word_order)):
            mem[item.address + i] = reg

    def read(self, function_code: int, address: int, count: int) -> list[int] | list[bool] | ExcCodes:
        """Serve one read request; refreshes and logs every value fully inside it."""
        table = _FC_TABLE.get(function_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        readable = self.readable[table]
        if count < 1 or any(a not in readable for a in range(address, address + count)):
            return ExcCodes.ILLEGAL_ADDRESS
        t_ns = time.time_ns()
        end = address + count
        code, cause = self.status()
        base = {"t_ns": t_ns, "station": self.station_id, "device": self.device_id, "unit_id": self.unit_id}
        entries: list[dict[str, Any]] = []
        for item in self._all_items():
            if item.table != table or item.address < address or item.address + item.width > end:
                continue
            if item is self._status:
                raw: int | float = self.status_raw
                self._store(item, raw)
                entries.append({**base, "kind": "status", "raw": raw, "status": code, "cause": cause})
                continue
            spec: ValueSpec = item.spec  # type: ignore[assignment]
            if item.forced is not None:
                raw = int(item.forced) if spec.type in INT_LIMITS or spec.type == "bool" else float(item.forced)
            else:
                raw = raw_for(item.signal.sample(t_ns / 1e9), spec)  # type: ignore[union-attr]
            if spec.type == "float32" and math.isfinite(raw):
                raw = struct.unpack(">f", struct.pack(">f", raw))[0]
            self._store(item, raw)
            value, why = served_value(raw, spec)
            entries.append({**base, "kind": "value", "parameter": spec.parameter, "value": value, "status": code, "cause": f"{cause}; {why}" if cause and why else (why or cause)})
        self.truth.write(entries)
        self.log.debug("sim.served", table=table, address=address, count=count, values=len(entries))
        mem = self.memory[table]
        if table in ("coil", "discrete_input"):
            return [bool(mem.get(a, 0)) for a in range(address, end)]
        return [mem.get(a, 0) for a in range(address, end)]


class _UnitStore(ModbusServerContext):
    """Datastore handed to pymodbus' server: unit id -> SimulatedAnalyzer.

    pymodbus 3.16 accepts a ModbusServerContext whose ``old_simulator`` flag
    is set and then only calls ``async_getValues``/``async_setValues``/
    ``device_ids`` on it, which gives us the exact (function, address, count)
    of every request. (SimDevice's ``action`` hook would not: for coils it is
    given the number of 16-bit words, not of bits.) ModbusServerContext's own
    __init__ is not called: it only logs a deprecation warning.
    """

    def __init__(self, analyzers: dict[int, SimulatedAnalyzer]) -> None:  # pylint: disable=super-init-not-called
        self.analyzers = analyzers
        self.simdevices = []
        self.old_simulator = True
        self._devices = {}  # type: ignore[assignment]

    async def async_getValues(self, device_id: int, func_code: int, address: int, count: int = 1):  # noqa: N802
        analyzer = self.analyzers.get(device_id)
        if analyzer is None:
            raise NoSuchIdException(f"no simulated analyzer at unit id {device_id}")
        return analyzer.read(func_code, address, count)

    async def async_setValues(self, device_id: int, func_code: int, address: int, values):  # noqa: N802
        if device_id not in self.analyzers:
            raise NoSuchIdException(f"no simulated analyzer at unit id {device_id}")
        return ExcCodes.ILLEGAL_ADDRESS  # read-only analyzer

    def device_ids(self) -> list[int]:
        return list(self.analyzers)


# --------------------------------------------------------------------------- #
# A whole station
# --------------------------------------------------------------------------- #


class StationSimulator:
    """Serves every modbus_tcp device of a station (one server per host:port)."""

    def __init__(
        self,
        station: StationConfig,
        truth_path: str | os.PathLike[str] | None = None,
        *,
        seed: int = 0,
        host: str | None = None,
    ) -> None:
        self.station = station
        self.truth = TruthLog(truth_path)
        self.host_override = host
        self.analyzers: dict[str, SimulatedAnalyzer] = {}
        self._groups: dict[tuple[str, int], dict[int, SimulatedAnalyzer]] = {}
        for device in station.devices:
            if not isinstance(device, ModbusTcpDevice):
                continue
            analyzer = SimulatedAnalyzer(station.id, device.id, device.unit_id, station.profile_for(device.id), seed=seed, truth=self.truth)
            self.analyzers[device.id] = analyzer
            endpoint = (host or device.host, device.port)
            self._groups.setdefault(endpoint, {})[device.unit_id] = analyzer
        self._servers: list[ModbusTcpServer] = []
        self.log = log.bind(station=station.id)

    @property
    def endpoints(self) -> list[tuple[str, int]]:
        return list(self._groups)

    @property
    def running(self) -> bool:
        return bool(self._servers)

    def analyzer(self, device_id: str) -> SimulatedAnalyzer:
        return self.analyzers[device_id]

    def set_status(self, device_id: str, raw: int | None) -> None:
        self.analyzers[device_id].set_status(raw)

    def force_raw(self, device_id: str, parameter: str, raw: int | float | None) -> None:
        self.analyzers[device_id].force_raw(parameter, raw)

    async def start(self) -> None:
        if self._servers:
            return
        try:
            for (host, port), units in self._groups.items():
                server = ModbusTcpServer(_UnitStore(units), address=(host, port))
                try:
                    await server.serve_forever(background=True)
                except RuntimeError as exc:
                    raise OSError(f"cannot listen on {host}:{port} (port in use?): {exc}") from None
                self._servers.append(server)
                self.log.info("sim.listening", host=host, port=port, devices={u: a.device_id for u, a in units.items()})
        except BaseException:
            await self._close_servers()
            raise

    async def _close_servers(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            await server.shutdown()
        if servers:
            await asyncio.sleep(0)  # let the transports close

    async def stop(self) -> None:
        """Stop serving (connections are dropped); start() may be called again."""
        was_running = bool(self._servers)
        await self._close_servers()
        if was_running:
            self.log.info("sim.stopped")

    async def aclose(self) -> None:
        await self.stop()
        self.truth.close()

    async def __aenter__(self) -> StationSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def serve_station(
    station: StationConfig,
    truth_path: str | os.PathLike[str] | None,
    *,
    seed: int = 0,
    stop_event: asyncio.Event | None = None,
    started: asyncio.Event | None = None,
) -> None:
    """Serve ``station`` until ``stop_event`` is set (forever if None)."""
    sim = StationSimulator(station, truth_path, seed=seed)
    async with sim:
        if started is not None:
            started.set()
        await (stop_event or asyncio.Event()).wait()


def _configure_logging(level: int = logging.INFO) -> None:
    """JSON lines on stderr, unless the application configured structlog already."""
    if structlog.is_configured():
        return
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(level),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def run_sim(
    station_file: Path,
    truth_path: Path,
    port_overrides: dict[str, int] | None = None,
    *,
    seed: int = 0,
    profiles_dir: Path | None = None,
) -> None:
    """Serve a station file's analyzers until SIGINT/SIGTERM. Raises ConfigError
    for a bad station file and OSError if a port cannot be bound."""
    _configure_logging()
    station = load_station(station_file, profiles_dir)
    if port_overrides:
        station = station.with_port_overrides(port_overrides)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await serve_station(station, truth_path, seed=seed, stop_event=stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    asyncio.run(main())


def _parse_override(text: str) -> tuple[str, int]:
    device, sep, port = text.partition("=")
    if not sep or not device or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected DEVICE=PORT, e.g. aqms1=15020, got {text!r}")
    return device, int(port)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m firmware_sim.modbus_tcp", description="Serve a station file's analyzers as Modbus TCP simulators.")
    parser.add_argument("--station", required=True, type=Path, help="station file (station_profiles/stations/*.yaml)")
    parser.add_argument("--truth", required=True, type=Path, help="ground-truth JSON-lines log to append to")
    parser.add_argument("--port-override", action="append", default=[], type=_parse_override, metavar="DEVICE=PORT", help="serve a device on another port (repeatable)")
    parser.add_argument("--profiles-dir", type=Path, default=None, help="analyzer profiles directory (default: station_profiles/profiles)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    args = parser.parse_args(argv)
    try:
        run_sim(args.station, args.truth, dict(args.port_override), seed=args.seed, profiles_dir=args.profiles_dir)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
