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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

import structlog
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, field_validator, model_validator

from broker_bridge.envelope import VerifyKey, verifier
from broker_bridge.keys import KeyFileError, key_id, public_key_b64, public_key_from_b64
from broker_bridge.topics import check_station_id
from collector.registry_metadata import (
    Degrees,
    FreeText,
    ParameterSymbol,
    ProvinceCode,
    RegistryParameterRecord,
    coordinate_problems,
)
from configuration.errors import ConfigError, ConfigIssue, DocumentProblem, SemanticErrors, config_error
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
    # Bridges that may speak for the station (``bridges:``): their keys sign converted batches
    # (a TT10 file's readings), never the station's own. Key id -> (bridge name, key).
    bridge_keys: dict[str, tuple[str, StationKey]] = field(default_factory=dict)
    tt10: Tt10Account | None = None  # the station's TT10 upload account on the bridge, if it has one
    # What the station is (collector/registry_metadata.py): for people, the warehouse's station_metadata
    # and the aggregator's expected counts. None where the registry does not say.
    name: str | None = None
    province_code: str | None = None  # the administrative province (TT10's <Tinh>), never the relay's user
    facility: str | None = None
    latitude: float | None = None  # WGS 84 decimal degrees
    longitude: float | None = None
    intervals: Mapping[str, float] = field(default_factory=dict)  # parameter symbol -> logging interval (s)


@dataclass(frozen=True)
class Tt10Account:
    """A station's account on the TT10 bridge's FTP/FTPS/SFTP servers (never a plain password)."""

    name: str
    password_hash: str | None  # scrypt$<n>$<r>$<p>$<salt b64>$<hash b64> (broker_bridge/tt10/sources/accounts.py)
    authorized_keys: tuple[str, ...]  # OpenSSH public key lines (SFTP)
    quota_bytes: int
    max_files_per_minute: int


@dataclass(frozen=True)
class BridgeEntry:
    """A bridge (the TT10 ingest bridge of a province, say): its keys and the stations it serves."""

    name: str
    keys: dict[str, StationKey]
    stations: tuple[str, ...]


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


def _scrypt_hash(value: Any) -> str | None:
    """The shape of a scrypt hash string (hashing itself is broker_bridge/tt10/sources/accounts.py's)."""
    if value is None:
        return None
    parts = str(value).split("$")
    if len(parts) != 6 or parts[0] != "scrypt" or not all(parts[1:]) or not all(p.isdigit() for p in parts[1:4]):
        raise config_error(
            "password_hash is not a scrypt hash string; plain-text passwords are never stored",
            "set the password with `quantrac station tt10-account STATION --password-file F`"
            " (it writes the scrypt$16384$8$1$<salt b64>$<hash b64> hash)",
        )
    return str(value)


class RegistryTt10Record(_Strict):
    account: Annotated[str, BeforeValidator(_station_id)]  # the login and folder name
    password_hash: Annotated[str | None, BeforeValidator(_scrypt_hash)] = None
    authorized_keys: list[str] = Field(default_factory=list)
    quota_bytes: int = Field(64 * 1024 * 1024, gt=0)
    max_files_per_minute: int = Field(60, gt=0)

    @model_validator(mode="after")
    def _can_log_in(self) -> RegistryTt10Record:
        if self.password_hash is None and not self.authorized_keys:
            raise config_error("the TT10 account has neither password_hash nor authorized_keys", "add one of them")
        return self


class RegistryStationRecord(_Strict):
    enabled: bool = True
    kind: StationKind | None = None
    # The broker user of the province relay that forwards the station (a delegation of trust), not where
    # the station stands: that is province_code.
    province: Annotated[str | None, BeforeValidator(_province)] = None
    keys: list[RegistryKeyRecord]
    tt10: RegistryTt10Record | None = None
    name: FreeText | None = None  # what people call it, Vietnamese as written
    province_code: ProvinceCode | None = None  # the administrative province, as the TT10 file name's <Tinh>
    facility: FreeText | None = None  # the facility (TT10's <CoSo>) of an industrial station
    latitude: Degrees | None = None
    longitude: Degrees | None = None
    parameters: dict[ParameterSymbol, RegistryParameterRecord] = Field(default_factory=dict)


class RegistryBridgeRecord(_Strict):
    keys: list[RegistryKeyRecord] = Field(min_length=1)
    stations: list[Annotated[str, BeforeValidator(_station_id)]]


class RegistryFile(_Strict):
    stations: dict[Annotated[str, BeforeValidator(_station_id)], RegistryStationRecord]
    # Bridge name -> its keys and the stations it may speak for; like ``province:`` a delegation, so a
    # station may be served by several bridges, but a bridge only for registered stations.
    bridges: dict[Annotated[str, BeforeValidator(_station_id)], RegistryBridgeRecord] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _bridges_and_accounts(self) -> RegistryFile:
        problems: list[DocumentProblem] = []
        station_kids = {
            key_id(public_key_from_b64(k.public_key)): sid for sid, spec in self.stations.items() for k in spec.keys
        }
        bridge_kids: dict[str, str] = {}
        for name, bridge in self.bridges.items():
            seen: set[str] = set()
            for index, station_id in enumerate(bridge.stations):
                where = ("bridges", name, "stations", index)
                if station_id not in self.stations:
                    problems.append(
                        DocumentProblem(
                            where,
                            f"bridge {name} serves {station_id}, which is not registered",
                            f"add the station first (quantrac station add {station_id} ...) or remove this line",
                        )
                    )
                elif station_id in seen:
                    problems.append(DocumentProblem(where, f"{station_id} is listed twice", "remove one of them"))
                seen.add(station_id)
            for index, key in enumerate(bridge.keys):
                kid = key_id(public_key_from_b64(key.public_key))
                where = ("bridges", name, "keys", index)
                if kid in station_kids:
                    problems.append(
                        DocumentProblem(
                            where,
                            f"key {kid} is also station {station_kids[kid]}'s: a bridge signs with a key of its own",
                            "make the bridge a key of its own (quantrac keys new bridge.key)",
                        )
                    )
                elif bridge_kids.setdefault(kid, name) != name:
                    problems.append(
                        DocumentProblem(where, f"key {kid} is also bridge {bridge_kids[kid]}'s", "one key per bridge")
                    )
        accounts: dict[str, str] = {}
        for station_id, spec in self.stations.items():
            problems += coordinate_problems(station_id, spec.latitude, spec.longitude)
            if spec.tt10 is not None and accounts.setdefault(spec.tt10.account, station_id) != station_id:
                problems.append(
                    DocumentProblem(
                        ("stations", station_id, "tt10", "account"),
                        f"TT10 account {spec.tt10.account} is also station {accounts[spec.tt10.account]}'s",
                        "give every station an account of its own",
                    )
                )
        if problems:
            raise SemanticErrors(problems)
        return self


def _keys(records: list[RegistryKeyRecord]) -> dict[str, StationKey]:
    keys: dict[str, StationKey] = {}
    for item in records:
        public_key = public_key_from_b64(item.public_key)
        derived = key_id(public_key)
        not_after_ns = int(item.not_after.timestamp() * 1e9) if item.not_after is not None else None
        keys[derived] = StationKey(derived, public_key, item.state, not_after_ns)
    return keys


def _bridges(model: RegistryFile) -> dict[str, BridgeEntry]:
    return {
        name: BridgeEntry(name, _keys(spec.keys), tuple(dict.fromkeys(spec.stations)))
        for name, spec in model.bridges.items()
    }


def _entries(model: RegistryFile) -> dict[str, StationEntry]:
    bound: dict[str, dict[str, tuple[str, StationKey]]] = {}
    for bridge in _bridges(model).values():
        for station_id in bridge.stations:
            bound.setdefault(station_id, {}).update({kid: (bridge.name, k) for kid, k in bridge.keys.items()})
    entries: dict[str, StationEntry] = {}
    for station_id, spec in model.stations.items():
        tt10 = None
        if spec.tt10 is not None:
            t = spec.tt10
            tt10 = Tt10Account(
                t.account, t.password_hash, tuple(t.authorized_keys), t.quota_bytes, t.max_files_per_minute
            )
        entries[station_id] = StationEntry(
            station_id,
            spec.enabled,
            _keys(spec.keys),
            spec.kind,
            spec.province,
            bound.get(station_id, {}),
            tt10,
            name=spec.name,
            province_code=spec.province_code,
            facility=spec.facility,
            latitude=spec.latitude,
            longitude=spec.longitude,
            intervals=MappingProxyType({p: r.interval_s for p, r in spec.parameters.items()}),
        )
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


def parse_bridges(text: str, source: str) -> dict[str, BridgeEntry]:
    """The ``bridges:`` section of a registry document (bridge name -> keys and stations)."""
    try:
        doc = parse_yaml(text.encode("utf-8"), source, readme=README, allow_empty=True)
    except ConfigError as exc:
        raise RegistryFileError(exc.issues) from None
    return _bridges(_validated(doc))


def load_bridges(path: Path) -> dict[str, BridgeEntry]:
    """The ``bridges:`` section of a registry file: which stations each bridge may speak for."""
    return _bridges(_read(Path(path)))


def tt10_accounts(entries: Mapping[str, StationEntry]) -> dict[str, dict[str, Any]]:
    """Account name -> the TT10 bridge's account entry (the mapping ``accounts_from_mapping`` of
    broker_bridge/tt10/sources/accounts.py reads), for the enabled stations that have one."""
    return {
        e.tt10.name: {
            "station": e.station_id,
            "password_hash": e.tt10.password_hash,
            "authorized_keys": list(e.tt10.authorized_keys),
            "quota_bytes": e.tt10.quota_bytes,
            "max_files_per_minute": e.tt10.max_files_per_minute,
        }
        for e in (entries[sid] for sid in sorted(entries))
        if e.tt10 is not None and e.enabled
    }


class StationRegistry:
    """Thread-safe view of the registry file, reloaded when its mtime changes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._entries: dict[str, StationEntry] = {}
        self._bridges: dict[str, BridgeEntry] = {}
        self._bridge_kids: dict[str, str] = {}  # key id -> bridge name, for every bridge key
        self._kinds: Mapping[str, str] = MappingProxyType({})
        self._intervals: Mapping[str, Mapping[str, float]] = MappingProxyType({})
        self.generation = 0  # rises with every good load of the file: the collector writes station_metadata then
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
            model = _read(self.path)
            entries, bridges = _entries(model), _bridges(model)
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
        intervals = MappingProxyType({sid: e.intervals for sid, e in entries.items() if e.intervals})
        bridge_kids = {kid: b.name for b in bridges.values() for kid in b.keys}
        with self._lock:
            self._entries, self._stamp, self._bridges, self._bridge_kids = entries, stamp, bridges, bridge_kids
            if kinds != self._kinds:
                self._kinds = kinds
            if intervals != self._intervals:
                self._intervals = intervals
            self.generation += 1
        return True

    def get(self, station_id: str) -> StationEntry | None:
        with self._lock:
            return self._entries.get(station_id)

    def bridge_of_key(self, kid: str) -> str | None:
        """The bridge a key belongs to, bound to the station in question or not."""
        with self._lock:
            return self._bridge_kids.get(kid)

    def bridges(self) -> dict[str, BridgeEntry]:
        with self._lock:
            return dict(self._bridges)

    def station_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._entries)

    def entries(self) -> dict[str, StationEntry]:
        """Every station's entry, as loaded last (a copy: the next reload does not change it)."""
        with self._lock:
            return dict(self._entries)

    def intervals(self) -> Mapping[str, Mapping[str, float]]:
        """Station id -> parameter -> logging interval in seconds, for the stations that declare one; the
        same object until a reload changes one (like ``kinds``)."""
        with self._lock:
            return self._intervals

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
    # allow_unicode: Vietnamese names stay readable (not \u escapes); UTF-8 whatever the locale says.
    tmp.write_text(header + yaml.safe_dump(doc, sort_keys=True, allow_unicode=True), encoding="utf-8")
    os.replace(tmp, path)  # readers see the old or the new file, never half of one


def _station(doc: dict, station_id: str, path: Path) -> dict:
    entry = doc["stations"].get(station_id)
    if entry is None:
        raise RegistryError(f"{path}: station {station_id} is not registered; add it with `quantrac station add`")
    return entry


def bind_bridge(path: Path, bridge: str, public_key: Ed25519PublicKey, stations: list[str]) -> str:
    """Register a bridge's key (if new) and bind it to registered stations; returns the key id."""
    check_station_id(bridge)
    path = Path(path)
    doc = _load_doc(path)
    for station_id in stations:
        _station(doc, station_id, path)
    entry = doc.setdefault("bridges", {}).setdefault(bridge, {"keys": [], "stations": []})
    kid = key_id(public_key)
    if all(k.get("kid") != kid for k in entry["keys"]):
        entry["keys"].append({"kid": kid, "public_key": public_key_b64(public_key), "state": "active"})
    entry["stations"] = list(dict.fromkeys([*entry["stations"], *stations]))
    _validated(parse_yaml(yaml.safe_dump(doc).encode("utf-8"), str(path), readme=README, allow_empty=True))
    _save_doc(path, doc)
    return kid


def delegations(entries: Mapping[str, StationEntry]) -> dict[str, list[str]]:
    """Province user -> its enabled delegated stations (sorted): the national broker's province ACL."""
    by_province: dict[str, list[str]] = {}
    for station_id in sorted(entries):
        entry = entries[station_id]
        if entry.province is not None and entry.enabled:
            by_province.setdefault(entry.province, []).append(station_id)
    return by_province


def bridge_delegations(entries: Mapping[str, StationEntry]) -> dict[str, list[str]]:
    """Bridge name -> the enabled stations bound to it (sorted): the broker ACL of the bridge's user.
    A bridge bound to no enabled station is absent, as a disabled station is (no broker access)."""
    by_bridge: dict[str, list[str]] = {}
    for station_id in sorted(entries):
        entry = entries[station_id]
        if entry.enabled:
            for bridge in sorted({name for name, _ in entry.bridge_keys.values()}):
                by_bridge.setdefault(bridge, []).append(station_id)
    return dict(sorted(by_bridge.items()))


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


@dataclass(frozen=True)
class MetadataEdit:
    """A change to what the registry says about a station (``quantrac station set``); None leaves a field
    as it is. ``intervals`` maps a parameter symbol to its logging interval in seconds (None removes it);
    ``clear`` names fields to remove: name, province_code, facility, coordinates, parameters, kind."""

    name: str | None = None
    province_code: str | None = None
    facility: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    kind: str | None = None
    intervals: Mapping[str, float | None] = field(default_factory=dict)
    clear: frozenset[str] = frozenset()

    def apply(self, entry: dict) -> None:
        unknown = self.clear - set(CLEARABLE)
        if unknown:
            raise RegistryError(f"cannot clear {', '.join(sorted(unknown))}; use one of {', '.join(CLEARABLE)}")
        for name in self.clear:
            for key in CLEARABLE[name]:
                entry.pop(key, None)
        if self.kind is not None:
            _check_kind(self.kind)
        for key in ("name", "province_code", "facility", "latitude", "longitude", "kind"):
            value = getattr(self, key)
            if value is not None:
                entry[key] = value
        parameters = entry.setdefault("parameters", {})
        for symbol, interval in self.intervals.items():
            if interval is None:
                parameters.pop(symbol, None)
            else:
                parameters.setdefault(symbol, {})["interval_s"] = interval
        if not parameters:
            entry.pop("parameters")


CLEARABLE: dict[str, tuple[str, ...]] = {
    "name": ("name",),
    "province_code": ("province_code",),
    "facility": ("facility",),
    "coordinates": ("latitude", "longitude"),
    "parameters": ("parameters",),
    "kind": ("kind",),
}


def _save_checked(path: Path, doc: dict) -> RegistryFile:
    """Save an edited document only if it loads: a refused edit leaves the file as it was."""
    try:
        model = _validated(
            parse_yaml(yaml.safe_dump(doc, allow_unicode=True).encode("utf-8"), str(path), readme=README)
        )
    except ConfigError as exc:
        problems = "; ".join(f"{i.path}: {i.message} (fix: {i.fix})" for i in exc.issues)
        raise RegistryError(f"{path} not changed: {problems}") from None
    _save_doc(path, doc)
    return model


def add_station(
    path: Path,
    station_id: str,
    public_key: Ed25519PublicKey,
    kind: str | None = None,
    metadata: MetadataEdit | None = None,
) -> str:
    """Add a station (or a further key of it) to the registry file; returns the key id.
    ``kind`` (one of vocabulary.stations.STATION_KINDS) sets the station's kind, ``metadata`` the rest."""
    check_station_id(station_id)
    if kind is not None:
        _check_kind(kind)
    path = Path(path)
    doc = _load_doc(path)
    entry = doc["stations"].setdefault(station_id, {"enabled": True, "keys": []})
    if kind is not None:
        entry["kind"] = kind
    if metadata is not None:
        metadata.apply(entry)
    kid = key_id(public_key)
    if all(k.get("kid") != kid for k in entry["keys"]):
        entry["keys"].append({"kid": kid, "public_key": public_key_b64(public_key), "state": "active"})
    _save_checked(path, doc)
    return kid


def set_tt10_account(
    path: Path,
    station_id: str,
    account: str | None = None,
    *,
    password_hash: str | None = None,
    authorized_keys: list[str] | None = None,
    quota_bytes: int | None = None,
    max_files_per_minute: int | None = None,
    check: Callable[[dict[str, Any]], None] | None = None,
) -> Tt10Account:
    """Create or change a registered station's TT10 account (``tt10:`` on its entry); None leaves a field as
    it is (``authorized_keys=[]`` removes the keys). The password is only ever a scrypt hash here
    (broker_bridge/tt10/sources/accounts.py makes it). ``check`` sees the account entry before it is saved
    (and raises to refuse it); then it is checked as the collector would load the file. A refused edit
    leaves the file as it was. Returns the account as the registry now says it."""
    path = Path(path)
    doc = _load_doc(path)
    entry = _station(doc, station_id, path)
    current = dict(entry.get("tt10") or {})
    name = account if account is not None else current.get("account")
    if name is None:
        raise RegistryError(f"{path}: station {station_id} has no TT10 account yet; give it a name (--account)")
    for other_id, other in doc["stations"].items():
        if other_id != station_id and (other.get("tt10") or {}).get("account") == name:
            raise RegistryError(
                f"{path} not changed: TT10 account {name} is station {other_id}'s; give {station_id} another name"
            )
    current["account"] = name
    for key, value in (
        ("password_hash", password_hash),
        ("quota_bytes", quota_bytes),
        ("max_files_per_minute", max_files_per_minute),
    ):
        if value is not None:
            current[key] = value
    if authorized_keys is not None:
        current["authorized_keys"] = list(authorized_keys)
        if not authorized_keys:
            current.pop("authorized_keys")
    if check is not None:
        check(current)
    entry["tt10"] = current
    account_saved = _entries(_save_checked(path, doc))[station_id].tt10
    assert account_saved is not None
    return account_saved


def remove_tt10_account(path: Path, station_id: str) -> str:
    """Remove a registered station's TT10 account; returns its name. The bridge refuses its logins once it
    re-reads the registry (at its next start)."""
    path = Path(path)
    doc = _load_doc(path)
    entry = _station(doc, station_id, path)
    if "tt10" not in entry:
        raise RegistryError(f"{path}: station {station_id} has no TT10 account")
    name = entry.pop("tt10").get("account")
    _save_checked(path, doc)
    return name


def set_metadata(path: Path, station_id: str, edit: MetadataEdit) -> None:
    """Change what the registry says about a registered station (checked as the collector would load it)."""
    path = Path(path)
    doc = _load_doc(path)
    edit.apply(_station(doc, station_id, path))
    _save_checked(path, doc)


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
