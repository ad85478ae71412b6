"""The relay's configuration file (``quantrac bridge forward --config relay.yaml``), read by the
one configuration loader: a wrong line fails at start-up with the file, the line and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from broker_bridge.session import BrokerAddress
from configuration.errors import ConfigError, config_error
from configuration.yaml_source import read_yaml, validate
from vocabulary.stations import STATION_ID_PATTERN

README = "broker_bridge/forward/README.md"
SAMPLE = Path(__file__).with_name("relay.sample.yaml")


def _station_id(value: Any) -> str:
    if not isinstance(value, str) or not STATION_ID_PATTERN.match(value):
        raise config_error(
            f"{value!r} is not a station id", "use 1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit"
        )
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrokerSection(_Strict):
    broker: str = Field(description="host:port")
    user: str | None = None
    password_file: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    def address(self) -> BrokerAddress:
        """The address with credentials and TLS; ValueError names what is wrong."""
        return (
            BrokerAddress.parse(self.broker)
            .with_credentials(self.user, self.password_file)
            .with_tls(self.tls_ca, self.tls_cert, self.tls_key)
        )


class RelayFile(_Strict):
    stations: list[Annotated[str, BeforeValidator(_station_id)]] = Field(min_length=1)
    province: BrokerSection
    national: BrokerSection
    outbox_dir: Path
    client_id: str = "quantrac-relay"
    retention_days: float = Field(60.0, gt=0)
    max_mb_per_station: float = Field(2048.0, gt=0)
    # a relay cannot refuse a province batch without stalling the province's queue: it drops the oldest, recorded
    overflow: Literal["drop_oldest"] = "drop_oldest"
    window: int = Field(100, ge=1, le=10_000)
    # the national collectors' public key files: receipts verified, uncovered batches sent again in time
    receipt_keys: list[Path] = Field(default_factory=list)
    receipt_timeout_s: float = Field(30.0, gt=0)  # no receipt this long after the PUBACK: sent again (doubling)
    pass_receipts: bool = False  # national receipts on to the province broker, for agents with no province collector


def load_relay_file(path: Path) -> RelayFile:
    """The relay file as a model; raises ConfigError (FILE:LINE: path: message (fix: ...))."""
    doc = read_yaml(path, readme=README)
    model = validate(RelayFile, doc)
    seen: set[str] = set()
    issues = []
    for index, station_id in enumerate(model.stations):
        if station_id in seen:
            issues.append(
                doc.issue(("stations", index), f"station {station_id} is listed twice", "list each station once")
            )
        seen.add(station_id)
    if issues:
        raise ConfigError(issues)
    return model
