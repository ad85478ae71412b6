"""Agencies' API keys: a JSON file (mode 0600) of scrypt hashes, never the keys themselves.

A key is ``qk_<id>_<secret>``: the id finds its entry without trying every hash, the secret is
checked against the entry's scrypt hash with the TT10 accounts' helper (broker_bridge.tt10.sources.accounts:
same format, same constant-time compare, same memory of successes, so a busy agency costs one scrypt, not
one per request). The server re-reads the file when it changes: a revoked key stops at its next request.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from broker_bridge.tt10.sources.accounts import PasswordChecker, hash_password

PREFIX = "qk_"
DEFAULT_RATE_PER_MINUTE = 600


class KeyFileError(ValueError):
    """The keys file cannot be used (unreadable, malformed, readable by others)."""


@dataclass(frozen=True)
class ApiKey:
    id: str
    agency: str
    password_hash: str  # scrypt$n$r$p$salt$hash of the secret
    created: str  # UTC, ISO 8601
    rate_per_minute: int
    revoked: str | None = None  # UTC, ISO 8601, when it was revoked

    @property
    def name(self) -> str:  # PasswordChecker's memory is keyed by an account's name
        return self.id


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def load(path: Path) -> dict[str, ApiKey]:
    if not path.exists():
        return {}
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise KeyFileError(f"{path}: mode {mode:04o}, must be 0600 (it holds the agencies' key hashes)")
    try:
        entries = json.loads(path.read_text())["keys"]
        keys = {e["id"]: ApiKey(**e) for e in entries}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a keys file ({type(exc).__name__}: {exc})") from exc
    return keys


def _save(path: Path, keys: dict[str, ApiKey]) -> None:
    body = json.dumps({"keys": [k.__dict__ for k in keys.values()]}, indent=2, ensure_ascii=False) + "\n"
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(body)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def add(path: Path, agency: str, rate_per_minute: int = DEFAULT_RATE_PER_MINUTE) -> tuple[ApiKey, str]:
    """A new key for ``agency``: (its entry, the key itself, shown this once and stored nowhere)."""
    if rate_per_minute < 1:
        raise ValueError("rate_per_minute must be at least 1")
    keys = load(path)
    key_id = secrets.token_hex(4)
    while key_id in keys:
        key_id = secrets.token_hex(4)
    secret = secrets.token_urlsafe(24)
    entry = ApiKey(key_id, agency, hash_password(secret), _now(), rate_per_minute)
    keys[key_id] = entry
    _save(path, keys)
    return entry, f"{PREFIX}{key_id}_{secret}"


def revoke(path: Path, key_id: str) -> ApiKey:
    keys = load(path)
    if key_id not in keys:
        raise KeyError(f"no key {key_id!r} in {path}")
    entry = keys[key_id]
    if entry.revoked is None:
        entry = ApiKey(**{**entry.__dict__, "revoked": _now()})
        keys[key_id] = entry
        _save(path, keys)
    return entry


class KeyRing:
    """The keys file as the server sees it: re-read when its size or mtime changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._keys: dict[str, ApiKey] = {}
        self._lock = threading.Lock()
        self._checker = PasswordChecker()
        self._current()  # a broken file fails at start, not at the first agency's request

    def _current(self) -> dict[str, ApiKey]:
        if self.path is None:
            return {}
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = (0, 0)
        with self._lock:
            if stamp != self._stamp:
                self._keys, self._stamp = load(self.path), stamp
            return self._keys

    def check(self, presented: str) -> ApiKey | None:
        """The live key ``presented`` is, or None (unknown, wrong secret, revoked, malformed)."""
        if not presented.startswith(PREFIX):
            return None
        key_id, _, secret = presented[len(PREFIX) :].partition("_")
        entry = self._current().get(key_id)
        if entry is None or entry.revoked is not None or not secret:
            return None
        return entry if self._checker.check(entry, secret) else None  # type: ignore[arg-type]
