"""The station registry: which stations exist and which public keys they sign with.

A YAML file that operators manage (``quantrac station ...``); the collector
re-reads it when it changes, so adding a station needs no restart. A file
broken at start-up stops the collector with its file:line:fix; one broken
while the collector runs is logged once per change, the last good registry
stays in force, and the mended file is picked up when it is saved.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

import structlog
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainValidator, field_validator, model_validator

from broker_bridge.envelope import VerifyKey, verifier
from broker_bridge.keys import KeyFileError, key_id, public_key_b64, public_key_from_b64
from broker_bridge.topics import check_station_id
from configuration.errors import ConfigError, ConfigIssue, config_error
from configuration.yaml_source import YamlDocument, parse_yaml, read_yaml, validate
from vocabulary.stations import STATION_ID_PATTERN, STATION_KINDS, StationKind

log = structlog.get_logger("collector.registry")

KEY_STATES = ("active", "retired")
README = "collector/README.md"


class RegistryError(ValueError):
    """A registry edit refused, or (as :class:`RegistryFileError`) a registry file that is invalid."""


class RegistryFileError(ConfigError, RegistryError):
    """The registry file is invalid; ``issues`` lists every problem with its line and fix."""


@dataclass(frozen=True)
class StationKey:
    key_id: str
    public_key: Ed25519PublicKey
    state: str
    not_after_ns: int | None = None  # end of a rotation's overlap: retired from then on
    verify_key: VerifyKey | None = field(default=None, compare=False)  # built once: every message checks it

    def __post_init__(self) -> None:
        if self.verify_key is None:
            object.__setattr__(self, "verify_key", verifier(self.public_key))

    def refusal(self, received_ns: int) -> str | None:
        """Why a batch signed with this key is refused now, or None when the key is valid."""
        if self.state != "active":
            return f"key {self.key_id} is {self.state}"
        if self.not_after_ns is not None and received_ns >= self.not_after_ns:
            return f"key {self.key_id} was retired at {_iso(self.not_after_ns)} (end of its rotation overlap)"
        return None


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class StationEntry:
    station_id: str
    enabled: bool
    keys: dict[str, StationKey]
    kind: str | None = None  # the station's kind (vocabulary.stations.STATION_KINDS): the QC's kind layer
    # National registry: the province whose relay or bridge forwards this station (its broker user).
    # One scalar per station, so a station delegated to two provinces cannot be written.
    province: str | None = None


# --------------------------------------------------------------------------- #
# The file, as pydantic models
# --------------------------------------------------------------------------- #


def _station_id(value: Any) -> str:
    text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if text is None or not STATION_ID_PATTERN.match(text):
        raise config_error(
            f"{value!r} is not a station id", "use 1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit"
        )
    return text


def _not_after(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            raise config_error(
                f"not_after {value!r} is not an ISO 8601 time", "write e.g. 2027-01-31T00:00:00+00:00"
            ) from None
    if moment.tzinfo is None:
        raise config_error(
            f"not_after {value!r} has no time zone", "add one, e.g. +00:00 (times are UTC inside quantrac)"
        )
    return moment


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegistryKeyRecord(_Strict):
    kid: str | None = None  # derived from the key when absent; checked when present
    public_key: str
    state: Literal["active", "retired"] = "active"
    not_after: Annotated[datetime | None, PlainValidator(_not_after)] = None

    @field_validator("public_key", mode="before")
    @classmethod
    def _decodes(cls, value: Any) -> str:
        try:
            public_key_from_b64(str(value))
        except (KeyFileError, ValueError, TypeError) as exc:
            raise config_error(
                f"public_key is not an Ed25519 public key: {exc}",
                "paste the base64 line of the station's .pub file (quantrac keys new)",
            ) from None
        return str(value)

    @model_validator(mode="after")
    def _kid_matches(self) -> RegistryKeyRecord:
        derived = key_id(public_key_from_b64(self.public_key))
        if self.kid is not None and self.kid != derived:
            raise config_error(
                f"kid {self.kid!r} does not match its public key ({derived})", f"write kid: {derived}, or remove kid:"
            )
        return self


def _province(value: Any) -> str:
    if isinstance(value, list):
        raise config_error(
            f"a station is delegated to one province, not {len(value)}: {value!r}",
            "keep the one province the national operator delegated it to",
        )
    if not isinstance(value, str) or not STATION_ID_PATTERN.match(value):
        raise config_error(f"{value!r} is not a province user name", "use the province broker user, e.g. province-HN")
    return value


class RegistryStationRecord(_Strict):
    enabled: bool = True
    kind: StationKind | None = None
    province: Annotated[str | None, BeforeValidator(_province)] = None
    keys: list[RegistryKeyRecord]


class RegistryFile(_Strict):
    stations: dict[Annotated[str, BeforeValidator(_station_id)], RegistryStationRecord]


def _entries(model: RegistryFile) -> dict[str, StationEntry]:
    entries: dict[str, StationEntry] = {}
    for station_id, spec in model.stations.items():
        keys: dict[str, StationKey] = {}
        for item in spec.keys:
            public_key = public_key_from_b64(item.public_key)
            derived = key_id(public_key)
            not_after_ns = int(item.not_after.timestamp() * 1e9) if item.not_after is not None else None
            keys[derived] = StationKey(derived, public_key, item.state, not_after_ns)
        entries[station_id] = StationEntry(station_id, spec.enabled, keys, spec.kind, spec.province)
    return entries


def _validated(doc: YamlDocument) -> RegistryFile:
    if doc.data is None:
        raise RegistryFileError(
            [ConfigIssue(doc.shown, 1, "", "the registry is empty", "add stations with `quantrac station add`")]
        )
    try:
        return validate(RegistryFile, doc)
    except ConfigError as exc:
        raise RegistryFileError(exc.issues) from None


def _read(path: Path) -> RegistryFile:
    try:
        return _validated(read_yaml(path, readme=README, allow_empty=True))
    except RegistryFileError:
        raise
    except ConfigError as exc:
        raise RegistryFileError(exc.issues) from None


def parse_registry(text: str, source: str) -> dict[str, StationEntry]:
    """The entries of a registry document; raises :class:`RegistryFileError` (FILE:LINE: ... (fix: ...))."""
    try:
        doc = parse_yaml(text.encode("utf-8"), source, readme=README, allow_empty=True)
    except ConfigError as exc:
        raise RegistryFileError(exc.issues) from None
    return _entries(_validated(doc))


class StationRegistry:
    """Thread-safe view of the registry file, reloaded when its mtime changes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._entries: dict[str, StationEntry] = {}
        self._kinds: Mapping[str, str] = MappingProxyType({})
        self.last_error: RegistryFileError | None = None  # the file as saved now is broken: the last good one applies
        self.reload_errors = 0  # broken versions of the file seen while running (one per change)
        self._loaded = False
        self.reload_if_changed()
        self._loaded = True
        if not self._entries and not self.path.exists():
            raise RegistryError(f"{self.path}: registry file not found; add stations with `quantrac station add`")

    def reload_if_changed(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return False
        try:
            entries = _entries(_read(self.path))
        except RegistryFileError as exc:
            if not self._loaded:
                raise  # at start-up a broken registry stops the collector with file:line:fix
            self._stamp = stamp  # judged once per change of the file, not once per message
            self.last_error = exc
            self.reload_errors += 1
            log.error(
                "registry_invalid",
                file=str(self.path),
                issues=[str(i) for i in exc.issues],
                kept="the last good registry, until the file is mended",
                stations=len(self._entries),
            )
            return False
        if self.last_error is not None:
            log.info("registry_mended", file=str(self.path), stations=len(entries))
        self.last_error = None
        kinds = MappingProxyType({sid: e.kind for sid, e in entries.items() if e.kind is not None})
        with self._lock:
            self._entries, self._stamp = entries, stamp
            if kinds != self._kinds:
                self._kinds = kinds
        return True

    def get(self, station_id: str) -> StationEntry | None:
        with self._lock:
            return self._entries.get(station_id)

    def station_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._entries)

    def kinds(self) -> Mapping[str, str]:
        """Station id -> kind, for the stations that have one. The same object until a
        reload changes a kind, so a caller polling it can compare by identity."""
        with self._lock:
            return self._kinds


def _load_doc(path: Path) -> dict:
    """The file as plain data to edit; a broken file is refused, never rewritten."""
    if not path.exists():
        return {"stations": {}}
    try:
        doc = read_yaml(path, readme=README, allow_empty=True)
    except ConfigError as exc:
        raise RegistryFileError(exc.issues) from None
    if doc.data is None:
        return {"stations": {}}
    _validated(doc)
    return doc.data


def _save_doc(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    header = "# quantrac station registry: stations and the public keys the collector trusts\n"
    tmp.write_text(header + yaml.safe_dump(doc, sort_keys=True))
    os.replace(tmp, path)  # readers see the old or the new file, never half of one


def _station(doc: dict, station_id: str, path: Path) -> dict:
    entry = doc["stations"].get(station_id)
    if entry is None:
        raise RegistryError(f"{path}: station {station_id} is not registered; add it with `quantrac station add`")
    return entry


def delegations(entries: Mapping[str, StationEntry]) -> dict[str, list[str]]:
    """Province user -> its enabled delegated stations (sorted): the national broker's province ACL."""
    by_province: dict[str, list[str]] = {}
    for station_id in sorted(entries):
        entry = entries[station_id]
        if entry.province is not None and entry.enabled:
            by_province.setdefault(entry.province, []).append(station_id)
    return by_province


def set_province(path: Path, station_id: str, province: str | None) -> None:
    """Delegate a registered station to one province (None: take the delegation back)."""
    if province is not None:
        check_station_id(province)
    _set_field(Path(path), station_id, "province", province)


def _set_field(path: Path, station_id: str, name: str, value: str | None) -> None:
    """Set (None: remove) one optional field of a registered station's entry."""
    doc = _load_doc(path)
    entry = _station(doc, station_id, path)
    if value is None:
        entry.pop(name, None)
    else:
        entry[name] = value
    _save_doc(path, doc)


def _check_kind(kind: str) -> None:
    if kind not in STATION_KINDS:
        raise RegistryError(f"{kind!r} is not a station kind; use one of {', '.join(STATION_KINDS)}")


def add_station(path: Path, station_id: str, public_key: Ed25519PublicKey, kind: str | None = None) -> str:
    """Add a station (or a further key of it) to the registry file; returns the key id.
    ``kind`` (one of vocabulary.stations.STATION_KINDS) sets the station's kind."""
    check_station_id(station_id)
    if kind is not None:
        _check_kind(kind)
    path = Path(path)
    doc = _load_doc(path)
    entry = doc["stations"].setdefault(station_id, {"enabled": True, "keys": []})
    if kind is not None:
        entry["kind"] = kind
    kid = key_id(public_key)
    if all(k.get("kid") != kid for k in entry["keys"]):
        entry["keys"].append({"kid": kid, "public_key": public_key_b64(public_key), "state": "active"})
    _save_doc(path, doc)
    return kid


def rotate_key(
    path: Path, station_id: str, new_public_key: Ed25519PublicKey, overlap: timedelta
) -> tuple[str, list[str]]:
    """Register the station's next key; its current keys stay valid for ``overlap``, then never again."""
    path = Path(path)
    doc = _load_doc(path)
    entry = _station(doc, station_id, path)
    kid = key_id(new_public_key)
    if any(k.get("kid") == kid for k in entry["keys"]):
        raise RegistryError(f"{path}: key {kid} is already registered for {station_id}; rotate to a new key")
    ending = datetime.now(UTC) + overlap
    retiring = []
    for item in entry["keys"]:
        if item.get("state", "active") == "active" and item.get("not_after") is None:
            item["not_after"] = ending.isoformat(timespec="seconds")
            retiring.append(item["kid"])
    entry["keys"].append({"kid": kid, "public_key": public_key_b64(new_public_key), "state": "active"})
    _save_doc(path, doc)
    return kid, retiring


def retire_key(path: Path, station_id: str, kid: str) -> None:
    """Retire a key at once (e.g. a stolen one): batches signed with it are rejected from now on."""
    path = Path(path)
    doc = _load_doc(path)
    entry = _station(doc, station_id, path)
    for item in entry["keys"]:
        if item.get("kid") == kid:
            item["state"] = "retired"
            _save_doc(path, doc)
            return
    raise RegistryError(f"{path}: station {station_id} has no key {kid}")


def set_enabled(path: Path, station_id: str, enabled: bool) -> None:
    path = Path(path)
    doc = _load_doc(path)
    _station(doc, station_id, path)["enabled"] = enabled
    _save_doc(path, doc)


def set_kind(path: Path, station_id: str, kind: str | None) -> None:
    """Set (or with None remove) a registered station's kind; the QC's kind layer follows it."""
    if kind is not None:
        _check_kind(kind)
    _set_field(Path(path), station_id, "kind", kind)
