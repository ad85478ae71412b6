"""The station registry: which stations exist and which public keys they sign with.

A YAML file that operators manage (``quantrac station ...``); the collector
re-reads it when it changes, so adding a station needs no restart.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker_bridge.envelope import VerifyKey, verifier
from broker_bridge.keys import KeyFileError, key_id, public_key_b64, public_key_from_b64
from broker_bridge.topics import TopicError, check_station_id

KEY_STATES = ("active", "retired")


class RegistryError(ValueError):
    pass


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
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).isoformat(timespec="seconds")


def _parse_time(value, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError as exc:
            raise RegistryError(f"{where}: not_after {value!r} is not an ISO 8601 time, e.g. 2027-01-31T00:00:00+00:00") from exc
    if moment.tzinfo is None:
        raise RegistryError(f"{where}: not_after {value!r} needs a time zone, e.g. +00:00 (times are UTC inside quantrac)")
    return int(moment.timestamp() * 1e9)


@dataclass(frozen=True)
class StationEntry:
    station_id: str
    enabled: bool
    keys: dict[str, StationKey]


def parse_registry(text: str, source: str) -> dict[str, StationEntry]:
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise RegistryError(f"{source}: not valid YAML: {exc}") from exc
    stations = doc.get("stations") if isinstance(doc, dict) else None
    if not isinstance(stations, dict):
        raise RegistryError(f"{source}: expected a top-level 'stations:' mapping")
    entries: dict[str, StationEntry] = {}
    for station_id, spec in stations.items():
        where = f"{source}: station {station_id!r}"
        try:
            check_station_id(str(station_id))
        except TopicError as exc:
            raise RegistryError(f"{where}: {exc}") from exc
        if not isinstance(spec, dict) or not isinstance(spec.get("keys"), list):
            raise RegistryError(f"{where}: needs 'keys:' as a list of {{kid, public_key, state}}")
        keys: dict[str, StationKey] = {}
        for item in spec["keys"]:
            try:
                public_key = public_key_from_b64(str(item["public_key"]))
            except (KeyError, TypeError, KeyFileError) as exc:
                raise RegistryError(f"{where}: bad key entry {item!r}: {exc}") from exc
            derived = key_id(public_key)
            if item.get("kid", derived) != derived:
                raise RegistryError(f"{where}: kid {item.get('kid')!r} does not match its public key ({derived})")
            state = item.get("state", "active")
            if state not in KEY_STATES:
                raise RegistryError(f"{where}: key state {state!r} is not one of {KEY_STATES}")
            keys[derived] = StationKey(derived, public_key, state, _parse_time(item.get("not_after"), where))
        entries[str(station_id)] = StationEntry(str(station_id), bool(spec.get("enabled", True)), keys)
    return entries


class StationRegistry:
    """Thread-safe view of the registry file, reloaded when its mtime changes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._entries: dict[str, StationEntry] = {}
        self.reload_if_changed()
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
        entries = parse_registry(self.path.read_text(), str(self.path))
        with self._lock:
            self._entries, self._stamp = entries, stamp
        return True

    def get(self, station_id: str) -> StationEntry | None:
        with self._lock:
            return self._entries.get(station_id)

    def station_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._entries)


def _load_doc(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text()) if path.exists() else None
    doc = doc or {"stations": {}}
    parse_registry(yaml.safe_dump(doc), str(path))  # refuse to edit a broken file
    return doc


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


def add_station(path: Path, station_id: str, public_key: Ed25519PublicKey) -> str:
    """Add a station (or a further key of it) to the registry file; returns the key id."""
    check_station_id(station_id)
    path = Path(path)
    doc = _load_doc(path)
    entry = doc["stations"].setdefault(station_id, {"enabled": True, "keys": []})
    kid = key_id(public_key)
    if all(k.get("kid") != kid for k in entry["keys"]):
        entry["keys"].append({"kid": kid, "public_key": public_key_b64(public_key), "state": "active"})
    _save_doc(path, doc)
    return kid


def rotate_key(path: Path, station_id: str, new_public_key: Ed25519PublicKey, overlap: timedelta) -> tuple[str, list[str]]:
    """Register the station's next key; its current keys stay valid for ``overlap``, then never again."""
    path = Path(path)
    doc = _load_doc(path)
    entry = _station(doc, station_id, path)
    kid = key_id(new_public_key)
    if any(k.get("kid") == kid for k in entry["keys"]):
        raise RegistryError(f"{path}: key {kid} is already registered for {station_id}; rotate to a new key")
    ending = datetime.now(timezone.utc) + overlap
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
