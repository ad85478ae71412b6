"""``quantrac station tt10-account``: a station's account on the TT10 ingest bridge, in the registry.

The registry keeps only the scrypt hash (broker_bridge/tt10/sources/accounts.py's ``hash_password``);
the password itself is in a file the operator gives (``--password-file``: the logger's current one, so
nothing changes at the station) or one this command writes (``--generate-password-file``: 0600, created
with O_EXCL, never printed). The edit is checked as the bridge would load the account and as the
collector would load the registry; a refused one leaves the registry as it was (and removes a password
file it had just generated).
"""

from __future__ import annotations

import os
import secrets
import stat
import string
from pathlib import Path

import typer

#: Letters and digits only: a logger's FTP client may choke on anything else. 20 of 62 symbols: 119 bits.
PASSWORD_ALPHABET = string.ascii_letters + string.digits
PASSWORD_LENGTH = 20
MB = 1024 * 1024


class AccountError(ValueError):
    """An account edit refused before the registry is touched."""


def new_password() -> str:
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))


def read_password_file(path: Path) -> str:
    """The password on the file's one line; refused if others may read the file, or if it is empty."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AccountError(f"cannot read the password file {path}: {exc.strerror}") from exc
    if mode & 0o077:
        raise AccountError(f"{path} is readable by others (mode {mode:o}); run `chmod 600 {path}` first")
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise AccountError(f"{path} must hold the password on one line (it has {len(lines)} non-empty lines)")
    return lines[0].strip()


def write_new_password_file(path: Path) -> str:
    """A fresh password in a new file, 0600 from its first byte; an existing file is never replaced."""
    password = new_password()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise AccountError(
            f"{path} exists; a password file is never overwritten (use --password-file {path} to reuse it)"
        ) from None
    except OSError as exc:
        raise AccountError(f"cannot create {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(password + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return password


def read_authorized_keys(paths: list[Path]) -> list[str]:
    """The OpenSSH public key lines of the given .pub files (comments and blank lines left out)."""
    lines: list[str] = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise AccountError(f"cannot read the public key file {path}: {exc.strerror}") from exc
        found = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
        if not found:
            raise AccountError(f"{path} holds no public key line")
        lines += found
    return list(dict.fromkeys(lines))


def check_as_the_bridge_would(station_id: str, entry: dict) -> None:
    """The account entry through the bridge's own loader (``accounts_from_mapping``), so what the registry
    accepts the bridge starts with: key lines, hash shape, limits."""
    from broker_bridge.tt10.sources.accounts import accounts_from_mapping
    from configuration.errors import ConfigError

    fields = {k: v for k, v in entry.items() if k != "account"}
    try:
        accounts_from_mapping({entry["account"]: {"station": station_id, **fields}}, homes_dir=Path("homes"))
    except ConfigError as exc:
        raise AccountError("; ".join(f"{i.path}: {i.message} (fix: {i.fix})" for i in exc.issues)) from None


def tt10_account(
    station_id: str = typer.Argument(..., help="the registered station, e.g. HN_BKHN_KHIKXQ"),
    registry: Path = typer.Option(Path("registry.yaml"), help="registry file the collector and the bridge read"),
    account: str | None = typer.Option(
        None, "--account", help="the login and home folder name (new account: required; given: renames it)"
    ),
    password_file: Path | None = typer.Option(
        None, "--password-file", help="a file (0600) holding the password on one line, e.g. the logger's current one"
    ),
    generate_password_file: Path | None = typer.Option(
        None, "--generate-password-file", help="write a new random password to this file (0600; must not exist)"
    ),
    authorized_key: list[Path] = typer.Option(
        [], "--authorized-key", help="an OpenSSH .pub file for SFTP key login (repeatable; replaces the list)"
    ),
    clear_authorized_keys: bool = typer.Option(False, "--clear-authorized-keys", help="remove the account's SSH keys"),
    max_files_per_minute: int | None = typer.Option(
        None, "--max-files-per-minute", help="upload rate limit of the account (default 60)"
    ),
    quota_mb: int | None = typer.Option(None, "--quota-mb", help="the account's byte quota in MiB (default 64)"),
    remove: bool = typer.Option(False, "--remove", help="remove the station's TT10 account"),
) -> None:
    """Create, change or remove a station's account on the TT10 ingest bridge (`tt10:` in the registry).

    Only the scrypt hash goes into the registry; the password stays in its file. Restart
    `quantrac bridge tt10 serve` to apply (it reads the accounts at start)."""
    from broker_bridge.tt10.sources.accounts import hash_password
    from cli.main import fail
    from collector.registry import RegistryError, remove_tt10_account, set_tt10_account

    if remove:
        given = [account, password_file, generate_password_file, max_files_per_minute, quota_mb]
        if any(v is not None for v in given) or authorized_key or clear_authorized_keys:
            fail("--remove takes no other account option")
        try:
            name = remove_tt10_account(registry, station_id)
        except (RegistryError, FileNotFoundError) as exc:
            fail(str(exc))
        typer.echo(f"{station_id}: TT10 account {name} removed from {registry}; restart the bridge to apply")
        return
    if password_file is not None and generate_password_file is not None:
        fail("give --password-file or --generate-password-file, not both")
    if authorized_key and clear_authorized_keys:
        fail("give --authorized-key or --clear-authorized-keys, not both")
    for value, option in ((max_files_per_minute, "--max-files-per-minute"), (quota_mb, "--quota-mb")):
        if value is not None and value <= 0:
            fail(f"{option} must be > 0")

    created: Path | None = None
    try:
        keys = read_authorized_keys(authorized_key) if authorized_key else ([] if clear_authorized_keys else None)
        password = None
        if password_file is not None:
            password = read_password_file(password_file)
        elif generate_password_file is not None:
            password = write_new_password_file(generate_password_file)
            created = generate_password_file
        edit = {
            "password_hash": hash_password(password) if password is not None else None,
            "authorized_keys": keys,
            "quota_bytes": quota_mb * MB if quota_mb is not None else None,
            "max_files_per_minute": max_files_per_minute,
        }

        def check(entry: dict) -> None:
            check_as_the_bridge_would(station_id, entry)

        saved = set_tt10_account(registry, station_id, account, check=check, **edit)
    except (AccountError, RegistryError, FileNotFoundError) as exc:
        if created is not None:
            created.unlink(missing_ok=True)  # its hash never reached the registry: nobody may use it
        fail(str(exc))
    what = []
    if password_file is not None:
        what.append(f"password from {password_file}")
    elif created is not None:
        what.append(f"new password in {created} (0600): give it to the station's logger")
    typer.echo(
        f"{station_id}: TT10 account {saved.name} in {registry}"
        + (f" ({'; '.join(what)})" if what else "")
        + f"; {saved.max_files_per_minute} files/min, quota {saved.quota_bytes / MB:g} MiB,"
        f" {'a password hash' if saved.password_hash else 'no password'}, {len(saved.authorized_keys)} SSH key(s);"
        " restart the bridge to apply"
    )
