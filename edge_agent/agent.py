"""The station agent: poll every device, make the readings durable, publish.

Each poll cycle reads all devices concurrently (one slow analyzer delays no
other) and awaits the group commit of its readings before anything is sent.
Readings taken while the uplink is down go to the outbox's backlog lane and
reach the warehouse flagged as historical.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from broker_bridge.envelope import Reading
from broker_bridge.keys import SigningKey
from broker_bridge.session import BrokerAddress
from broker_bridge.station_messages import (
    MAX_STATUS_BYTES,
    Birth,
    ClockStatus,
    DeviceDescription,
    DeviceStatus,
    MeasuringRange,
    OutboxStatus,
    RecoveryStatus,
    StationDescription,
    StationState,
)
from edge_agent.clock import ClockMonitor
from edge_agent.group_commit import GroupCommitter
from edge_agent.outbox import Outbox, OutboxFull, RetentionPolicy
from edge_agent.publisher import BatchPublisher
from edge_agent.sources import sources_for_station
from station_profiles.profile_model import StationConfig

log = structlog.get_logger("edge_agent")


@dataclass
class AgentSettings:
    commit_window_s: float = 0.2
    drain_timeout_s: float = 10.0
    status_interval_s: float = 30.0
    retention_interval_s: float = 60.0
    historical_after_s: float = 60.0
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    # The collectors' public keys (key id -> key) whose receipts this station trusts; none: no receipts.
    collector_keys: dict = field(default_factory=dict)
    tt10_tick_s: float = 1.0  # how often TT10 out looks for finished cycles and due uploads


@dataclass
class DeviceState:
    up: bool = True
    since_ns: int = field(default_factory=time.time_ns)
    cause: str = ""


def profiles_sha256(station: StationConfig) -> str:
    """Identifies exactly which analyzer models the station runs, for the birth message."""
    digest = hashlib.sha256()
    for name, profile in sorted(station.profiles.items()):
        digest.update(name.encode())
        digest.update(profile.model_dump_json().encode())
    return digest.hexdigest()


def measuring_ranges(station: StationConfig) -> tuple[MeasuringRange, ...]:
    """Every value's measuring range from its device's profile (``range:``), for the birth: the
    collector fails a value outside it (flag 4). Values without a range are left out."""
    ranges = []
    for device in station.devices:
        profile = station.profile_for(device.id)
        ranges += [
            MeasuringRange(device.id, v.parameter, v.unit, *v.range, profile.profile)
            for v in profile.values
            if v.range is not None
        ]
    return tuple(ranges)


def device_is_down(readings: list[Reading]) -> tuple[bool, str]:
    """A device whose every value failed with an error is down, whatever the reason."""
    failed = [r for r in readings if r.value is None and r.status == "02"]
    if readings and len(failed) == len(readings):
        return True, failed[0].cause
    return False, ""


def warn_unstable_ports(station: StationConfig) -> None:
    """/dev/ttyUSB0 and friends are numbered in plug order and can swap after a reboot."""
    for d in station.devices:
        port = getattr(d, "port", None)
        if isinstance(port, str) and port.startswith(("/dev/ttyUSB", "/dev/ttyACM")):
            log.warning(
                "serial_port_unstable",
                station=station.id,
                device=d.id,
                port=port,
                fix="use the device's /dev/serial/by-id/... path (ls -l /dev/serial/by-id/)",
            )


class StationAgent:
    def __init__(
        self,
        station: StationConfig,
        key: SigningKey,
        broker: BrokerAddress,
        outbox_path: Path,
        settings: AgentSettings | None = None,
    ) -> None:
        self.station = station
        self.station_id = station.id
        self.settings = settings or AgentSettings()
        self.outbox = Outbox(outbox_path, self.station_id, self.settings.retention)
        self.committer = GroupCommitter(self.outbox, self.settings.commit_window_s)
        description = StationDescription(
            name=station.station.name,
            kind=station.station.kind,
            devices=tuple(DeviceDescription(d.id, d.profile, d.transport) for d in station.devices),
            profiles_sha256=profiles_sha256(station),
            ranges=measuring_ranges(station),
        )
        size = len(Birth(self.station_id, 0, time.time_ns(), description).encode())
        if size > MAX_STATUS_BYTES:  # collectors refuse it unread: send the birth without the ranges
            log.error(
                "birth_ranges_left_out", station=self.station_id, bytes=size, limit=MAX_STATUS_BYTES,
                ranges=len(description.ranges),
                effect="the collector applies only the operator ranges (collector/qc/defaults.yaml) to this station",
            )  # fmt: skip
            description = dataclasses.replace(description, ranges=())
        self.publisher = BatchPublisher(
            self.outbox,
            key,
            broker,
            historical_after_s=self.settings.historical_after_s,
            description=description,
            collector_keys=self.settings.collector_keys,
            live_batch_s=station.live_batch_s,
        )
        # Devices on one serial port share one line: their requests are serialised.
        self.sources = sources_for_station(station)
        warn_unstable_ports(station)
        #: the station clock's offset (state for the station status), None without a clock: section
        self.clock = ClockMonitor(station.clock, station_id=self.station_id) if station.clock is not None else None
        self.devices = {d.id: DeviceState() for d in station.devices}
        #: TT10 files to province servers (station file's tt10_out), in a thread of its own; None without targets
        self.tt10 = None
        if station.tt10_out:
            from edge_agent.tt10_out import Tt10Out  # FTP/SFTP clients: only for a station that names targets

            self.tt10 = Tt10Out(station, Path(outbox_path), tick_s=self.settings.tt10_tick_s)
        self.cycles = 0
        self.refused_readings = 0

    async def run(self, stop: asyncio.Event) -> None:
        log.info("agent_starting", station=self.station_id, **self.outbox.counts())
        self.publisher.start()
        if self.tt10 is not None:
            self.tt10.start()
        background = [
            asyncio.create_task(self._every(0.05, stop, self.publisher.pump)),
            asyncio.create_task(self._every(self.settings.status_interval_s, stop, self.publish_status)),
            asyncio.create_task(self._every(self.settings.retention_interval_s, stop, self.outbox.enforce_retention)),
        ]
        interval = self.station.poll_interval_s
        next_tick = time.monotonic()
        try:
            while not stop.is_set():
                await self.poll_once(late_s=max(0.0, time.monotonic() - next_tick))
                # Fixed-rate schedule: a slow cycle does not shift later ones.
                next_tick += interval
                delay = next_tick - time.monotonic()
                if delay < 0:
                    log.warning("poll_overrun", station=self.station_id, behind_s=round(-delay, 3))
                    next_tick = time.monotonic()
                    delay = 0
                try:
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                except TimeoutError:
                    pass
        finally:
            for task in background:
                task.cancel()
            for source in self.sources:
                await source.close()
            self.committer.commit_now()
            drained = await self._drain(self.settings.drain_timeout_s)
            self.publisher.stop()
            if self.tt10 is not None:
                self.tt10.stop()
            log.info("agent_stopped", station=self.station_id, drained=drained, **self.outbox.counts())
            self.outbox.close()

    async def poll_once(self, late_s: float = 0.0) -> int:
        """One poll cycle; ``late_s``: how long after its scheduled moment it began (timers, load)."""
        # The live window is cut between polls at their scheduled moments, never inside a poll.
        self.publisher.live.poll_started(late_ns=round(late_s * 1e9))
        live = False
        try:
            # The clock check (at most every check_every_s) runs alongside the poll, not before it.
            clock_check = [self.clock.maybe_check()] if self.clock is not None else []
            results = await asyncio.gather(*(source.poll() for source in self.sources), *clock_check)
            readings = [reading for batch in results[: len(self.sources)] for reading in batch]
            if self.clock is not None:
                readings = self.clock.mark(readings)
            try:
                self.outbox.check_room()
            except OutboxFull as exc:
                self.refused_readings += len(readings)
                log.error(
                    "readings_refused_outbox_full", station=self.station_id, readings=len(readings), error=str(exc)
                )
                return 0
            # Taken while the uplink is down: history, not live data.
            historical = not self.publisher.connected.is_set()
            await self.committer.append(readings, historical=historical)
            live = not historical
        finally:
            self.publisher.live.poll_done(live)
        self.cycles += 1
        self._track_devices(readings)
        self.publisher.pump()
        return len(readings)

    def _track_devices(self, readings: list[Reading]) -> None:
        by_device: dict[str, list[Reading]] = {}
        for reading in readings:
            by_device.setdefault(reading.device, []).append(reading)
        changed = []
        for device_id, device_readings in by_device.items():
            down, cause = device_is_down(device_readings)
            state = self.devices.setdefault(device_id, DeviceState())
            if state.up == down:  # a change of state
                state.up, state.since_ns, state.cause = not down, time.time_ns(), cause
                changed.append(device_id)
                log.warning("device_state_changed", station=self.station_id, device=device_id, up=state.up, cause=cause)
        if changed:
            self.publish_status(changed=changed)

    def status(self, changed: list[str] | None = None) -> StationState:
        recovery = self.outbox.recovery
        return StationState(
            outbox=OutboxStatus(**self.outbox.status()),
            recovery=RecoveryStatus(**{**recovery.__dict__, "errors": tuple(recovery.errors)})
            if recovery.anything_cut
            else None,
            devices={device_id: DeviceStatus(s.up, s.since_ns, s.cause) for device_id, s in self.devices.items()},
            refused_readings=self.refused_readings,
            clock=ClockStatus(**self.clock.state) if self.clock else None,
            broker_refused_batches=len(self.publisher.refused),
            changed_devices=tuple(changed) if changed else None,
        )

    def publish_status(self, changed: list[str] | None = None) -> None:
        self.publisher.publish_status(self.status(changed))

    async def _drain(self, timeout_s: float) -> bool:
        """On shutdown, give staged and unacknowledged batches a last chance to be acknowledged.

        Whatever is still unacknowledged afterwards stays in the outbox and
        goes out first after the next start.
        """
        deadline = time.monotonic() + timeout_s
        self.publisher.live.flush()  # a stop does not wait for the live window to close
        while time.monotonic() < deadline:
            self.publisher.pump()
            counts = self.outbox.counts()
            if counts["staged_readings"] == 0 and counts["unacked_batches"] == 0:
                return True
            await asyncio.sleep(0.05)
        return False

    async def _every(self, interval_s: float, stop: asyncio.Event, action) -> None:
        while not stop.is_set():
            await asyncio.sleep(interval_s)
            try:
                action()
            except Exception as exc:  # a periodic duty must not die quietly with its task
                log.error("periodic_task_failed", station=self.station_id, task=action.__name__, error=repr(exc))
