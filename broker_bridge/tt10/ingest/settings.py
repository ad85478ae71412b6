"""What a TT10 ingest sink needs to know: where it keeps things, which stations it serves, its knobs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from broker_bridge.envelope import VerifyKey
from broker_bridge.session import BrokerAddress
from edge_agent.outbox import RetentionPolicy

DEFAULT_DEVICE = "tt10"


@dataclass(frozen=True)
class StationSettings:
    device: str = DEFAULT_DEVICE  # the device id the station's TT10 readings are stored under
    mapping: Mapping[str, str] | None = None  # parameter names as the logger writes them -> symbols


@dataclass(frozen=True)
class IngestSettings:
    root: Path  # archive/, ledger.sqlite and outbox/<station>.sqlite live here
    broker: BrokerAddress
    # The stations this bridge serves (the registry's ``bridges: <name>: stations:``) with their
    # settings; None: every station an account names, with the defaults (tests, a single-station set-up).
    stations: Mapping[str, StationSettings] | None = None
    mapping: Mapping[str, str] | None = None  # for stations without their own
    hold_s: float = 600.0  # how long an incomplete file waits to be completed or sent again
    retention_days: float = 60.0  # archive and ledger: at least the regulation's 60 days
    name_time_tolerance_s: int = 300
    client_id: str = "quantrac-tt10-bridge"
    window: int = 100  # batches in flight per station
    max_readings_per_batch: int = 1000
    historical_after_s: float = 60.0  # a file whose newest reading is older goes out flagged historical
    outbox_retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    ilp_conf: str | None = None  # QuestDB ILP for the tt10_files table; None: the ledger only
    # The collectors' public keys: their warehouse receipts are verified, and a batch no receipt covered
    # in time is sent again (as an agent does; set outbox_retention.require_receipts with them).
    receipt_keys: Mapping[str, VerifyKey] = field(default_factory=dict)

    @property
    def archive_dir(self) -> Path:
        return Path(self.root) / "archive"

    @property
    def ledger_path(self) -> Path:
        return Path(self.root) / "ledger.sqlite"

    @property
    def outbox_dir(self) -> Path:
        return Path(self.root) / "outbox"

    def station(self, station_id: str) -> StationSettings | None:
        """The station's settings, or None when this bridge does not serve it."""
        if self.stations is None:
            return StationSettings(mapping=self.mapping)
        found = self.stations.get(station_id)
        if found is not None and found.mapping is None and self.mapping is not None:
            return StationSettings(found.device, self.mapping)
        return found
