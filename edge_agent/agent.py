"""The station agent: poll every device, make the readings durable, publish.

Each poll cycle reads all devices concurrently (one slow analyzer delays no
other), commits the cycle's readings to the outbox in one transaction, and
only then hands sealed batches to the publisher.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
import structlog

from broker_bridge.keys import SigningKey
from broker_bridge.session import BrokerAddress
from edge_agent.outbox import Outbox
from edge_agent.publisher import BatchPublisher
from edge_agent.sources import sources_for_station
from station_profiles.profile_model import StationConfig

log = structlog.get_logger("edge_agent")


class StationAgent:
    def __init__(
        self,
        station: StationConfig,
        key: SigningKey,
        broker: BrokerAddress,
        outbox_path: Path,
        *,
        drain_timeout_s: float = 10.0,
    ) -> None:
        self.station = station
        self.station_id = station.id
        self.outbox = Outbox(outbox_path, self.station_id)
        self.publisher = BatchPublisher(self.outbox, key, broker)
        self.sources = sources_for_station(station)
        self.drain_timeout_s = drain_timeout_s
        self.cycles = 0

    async def run(self, stop: asyncio.Event) -> None:
        counts = self.outbox.counts()
        log.info("agent_starting", station=self.station_id, **counts)
        self.publisher.start()
        pump = asyncio.create_task(self._pump_forever(stop))
        interval = self.station.poll_interval_s
        next_tick = time.monotonic()
        try:
            while not stop.is_set():
                await self.poll_once()
                # Fixed-rate schedule: a slow cycle does not shift later ones.
                next_tick += interval
                delay = next_tick - time.monotonic()
                if delay < 0:
                    log.warning("poll_overrun", station=self.station_id, behind_s=round(-delay, 3))
                    next_tick = time.monotonic()
                    delay = 0
                try:
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                except asyncio.TimeoutError:
                    pass
        finally:
            pump.cancel()
            for source in self.sources:
                await source.close()
            drained = await self._drain(self.drain_timeout_s)
            self.publisher.stop()
            log.info("agent_stopped", station=self.station_id, drained=drained, **self.outbox.counts())
            self.outbox.close()

    async def poll_once(self) -> int:
        results = await asyncio.gather(*(source.poll() for source in self.sources))
        readings = [reading for batch in results for reading in batch]
        stored = self.outbox.append(readings)
        self.cycles += 1
        self.publisher.pump()
        return stored

    async def _drain(self, timeout_s: float) -> bool:
        """On shutdown, give staged and unacknowledged batches a last chance to be acknowledged.

        Whatever is still unacknowledged afterwards stays in the outbox and
        goes out first after the next start.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.publisher.pump()
            counts = self.outbox.counts()
            if counts["staged_readings"] == 0 and counts["unacked_batches"] == 0:
                return True
            await asyncio.sleep(0.05)
        return False

    async def _pump_forever(self, stop: asyncio.Event) -> None:
        # Acks and window space arrive between polls; a backlog drains at
        # the broker's pace, not at the poll interval's.
        while not stop.is_set():
            self.publisher.pump()
            await asyncio.sleep(0.05)
