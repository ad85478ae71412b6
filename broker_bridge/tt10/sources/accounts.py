"""Upload accounts: one per station, a chrooted home, a scrypt password hash and/or SSH keys,
a byte quota and a files-per-minute limit.

Hash format: ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>`` (stdlib ``hashlib.scrypt``; the
parameters travel with the hash, so they can be raised later without breaking old hashes).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from configuration.errors import ConfigError, ConfigIssue, config_error
from configuration.yaml_source import YamlDocument, validation_issues
from vocabulary.stations import STATION_ID_PATTERN

README = "broker_bridge/tt10/sources/README.md"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # about 60 ms and 16 MiB per hash on the development machine
_MAXMEM = 256 * 1024 * 1024


@dataclass(frozen=True)
class Account:
    name: str
    station: str
    password_hash: str | None  # None: key authentication only (SFTP)
    root: Path
    quota_bytes: int
    max_files_per_minute: int
    authorized_keys: tuple[str, ...] = ()  # OpenSSH public key lines (SFTP)


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32, maxmem=_MAXMEM)
    return f"scrypt${n}${r}${p}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def _parse_hash(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    """(n, r, p, salt, digest); ValueError when ``encoded`` is not a scrypt hash of ours."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("not scrypt$n$r$p$salt$hash")
    n, r, p = (int(x) for x in parts[1:4])
    if n < 2 or n & (n - 1) or r < 1 or p < 1:
        raise ValueError("n must be a power of two, r and p at least 1")
    salt, digest = base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5], validate=True)
    if len(salt) < 8 or len(digest) < 16:
        raise ValueError("salt or hash too short")
    return n, r, p, salt, digest


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches ``encoded`` (constant-time compare); False for a malformed hash."""
    try:
        n, r, p, salt, digest = _parse_hash(encoded)
    except ValueError:
        return False
    got = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(digest), maxmem=_MAXMEM)
    return hmac.compare_digest(got, digest)


class PasswordChecker:
    """``verify_password`` with a memory of successes: a station logs in every 5 minutes, and one
    scrypt per login for 2,000 stations would cost about 40 % of a core. A success is remembered
    as HMAC-SHA256(per-process random key, account, password, stored hash), in memory only; a
    changed hash or password misses the memory and runs scrypt again. Failures are not remembered."""

    def __init__(self, max_entries: int = 20_000) -> None:
        self._key = secrets.token_bytes(32)
        self._ok: set[bytes] = set()
        self._max = max_entries
        self._lock = threading.Lock()

    def check(self, account: Account, password: str) -> bool:
        if account.password_hash is None:
            return False
        token = hmac.new(
            self._key, b"\0".join([account.name.encode(), password.encode(), account.password_hash.encode()]), "sha256"
        ).digest()
        with self._lock:
            if token in self._ok:
                return True
        if not verify_password(password, account.password_hash):
            return False
        with self._lock:
            if len(self._ok) >= self._max:
                self._ok.clear()
            self._ok.add(token)
        return True


# -- accounts from a mapping (the sources file, later the station registry) -----------------


class AccountEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    station: str
    password_hash: str | None = None
    authorized_keys: list[str] = Field(default_factory=list)
    root: Path | None = None
    quota_bytes: int = Field(64 * 1024 * 1024, gt=0)
    max_files_per_minute: int = Field(60, gt=0)

    @field_validator("station")
    @classmethod
    def _station(cls, value: str) -> str:
        if not STATION_ID_PATTERN.match(value):
            raise config_error(
                f"{value!r} is not a station id",
                "use 1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit",
            )
        return value

    @field_validator("password_hash")
    @classmethod
    def _hash(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                _parse_hash(value)
            except ValueError as exc:
                raise config_error(
                    f"not a password hash ({exc}); plain-text passwords are never stored",
                    "write the output of hash_password (scrypt$16384$8$1$<salt>$<hash>)",
                ) from None
        return value

    @field_validator("authorized_keys")
    @classmethod
    def _keys(cls, value: list[str]) -> list[str]:
        for line in value:
            fields = line.split()
            if len(fields) < 2 or not fields[0].startswith(("ssh-", "ecdsa-", "sk-")):
                raise config_error(
                    f"{line[:40]!r} is not an OpenSSH public key line", "paste one line of the station's id_*.pub"
                )
        return value


class AccountsModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    accounts: dict[str, AccountEntry] = Field(min_length=1)

    @field_validator("accounts")
    @classmethod
    def _names(cls, value: dict[str, AccountEntry]) -> dict[str, AccountEntry]:
        for name in value:
            if not STATION_ID_PATTERN.match(name):
                raise config_error(
                    f"account name {name!r} is not usable as a login and a folder name",
                    "use 1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit",
                )
        return value


def accounts_from_model(
    model: AccountsModel, *, homes_dir: Path | None, doc: YamlDocument | None = None, at: tuple = ()
) -> dict[str, Account]:
    """Accounts by name; an account without ``root`` lives in ``homes_dir/<name>``."""
    issues: list[ConfigIssue] = []
    out: dict[str, Account] = {}
    for name, entry in model.accounts.items():
        loc = (*at, "accounts", name)
        problem = None
        if entry.password_hash is None and not entry.authorized_keys:
            problem = ("the account has neither password_hash nor authorized_keys", "add one of them")
        elif entry.root is None and homes_dir is None:
            problem = ("no root for the account and no homes_dir", f"add root: /srv/tt10/{name} or homes_dir")
        if problem:
            issues.append(
                doc.issue(loc, *problem) if doc else ConfigIssue("accounts", 0, ".".join(map(str, loc)), *problem)
            )
            continue
        root = entry.root if entry.root is not None else homes_dir / name  # type: ignore[operator]
        out[name] = Account(
            name=name,
            station=entry.station,
            password_hash=entry.password_hash,
            root=Path(root),
            quota_bytes=entry.quota_bytes,
            max_files_per_minute=entry.max_files_per_minute,
            authorized_keys=tuple(entry.authorized_keys),
        )
    if issues:
        raise ConfigError(issues)
    return out


def accounts_from_mapping(
    accounts: dict[str, Any], *, homes_dir: Path | None = None, source: str = "accounts"
) -> dict[str, Account]:
    """Accounts from ``{name: {station, password_hash, ...}}``; raises ConfigError naming ``source``
    and the path of each problem (no lines: a mapping has none)."""
    data = {"accounts": accounts}
    doc = YamlDocument(Path(source), source, README, data, None)
    try:
        model = AccountsModel.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_issues(exc, AccountsModel, doc)) from None
    return accounts_from_model(model, homes_dir=homes_dir)
