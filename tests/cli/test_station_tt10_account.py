"""`quantrac station tt10-account`: a station's TT10 bridge account made, changed and removed in the registry
without a hand-made hash. The registry holds the scrypt hash only; a generated password file is 0600 and
never overwritten; the account the bridge loads from the registry (as `quantrac bridge tt10 serve` does)
accepts the password; a refused edit leaves the registry byte for byte as it was."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from broker_bridge.keys import write_new_key
from broker_bridge.tt10.sources.accounts import PasswordChecker, accounts_from_mapping, verify_password
from cli.main import app
from collector.registry import add_station, parse_registry, tt10_accounts

A, B = "HN_TT_001", "HN_TT_002"


def run(*args: str):
    return CliRunner().invoke(app, ["station", "tt10-account", *args])


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    path = tmp_path / "registry.yaml"
    for station in (A, B):
        add_station(path, station, write_new_key(tmp_path / "keys" / f"{station}.key").public_key)
    return path


def bridge_accounts(registry: Path, tmp_path: Path):
    """The accounts exactly as `quantrac bridge tt10 serve --registry` builds them."""
    entries = parse_registry(registry.read_text(), str(registry))
    return accounts_from_mapping(tt10_accounts(entries), homes_dir=tmp_path / "homes", source=str(registry))


def tt10_entry(registry: Path, station: str) -> dict | None:
    return yaml.safe_load(registry.read_text())["stations"][station].get("tt10")


def test_a_generated_password_is_0600_only_its_hash_is_stored_and_the_bridge_accepts_it(
    registry: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secrets" / "hn_tt_001.password"
    secret.parent.mkdir()
    result = run(A, "--registry", str(registry), "--account", "hn_tt_001", "--generate-password-file", str(secret),
                 "--max-files-per-minute", "12", "--quota-mb", "8")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    password = secret.read_text().strip()
    assert len(password) == 20 and password.isalnum()
    assert password not in result.output and password not in registry.read_text()
    assert "TT10 account hn_tt_001" in result.output and "12 files/min, quota 8 MiB" in result.output

    entry = tt10_entry(registry, A)
    assert set(entry) == {"account", "password_hash", "max_files_per_minute", "quota_bytes"}
    assert entry["password_hash"].startswith("scrypt$16384$8$1$")
    assert (entry["max_files_per_minute"], entry["quota_bytes"]) == (12, 8 * 1024 * 1024)
    accounts = bridge_accounts(registry, tmp_path)
    assert list(accounts) == ["hn_tt_001"]
    account = accounts["hn_tt_001"]
    assert (account.station, account.max_files_per_minute, account.quota_bytes) == (A, 12, 8 * 1024 * 1024)
    checker = PasswordChecker()
    assert checker.check(account, password)
    assert not checker.check(account, password + "x")
    assert not checker.check(account, password[:-1])

    # A later change of the limits keeps the password; a new password file replaces the hash.
    old_hash = entry["password_hash"]
    assert run(A, "--registry", str(registry), "--max-files-per-minute", "30").exit_code == 0
    assert tt10_entry(registry, A)["password_hash"] == old_hash
    assert tt10_entry(registry, A)["max_files_per_minute"] == 30
    mine = tmp_path / "logger.password"
    mine.write_text("the-loggers-old-password\n")
    mine.chmod(0o600)
    assert run(A, "--registry", str(registry), "--password-file", str(mine)).exit_code == 0
    new_hash = tt10_entry(registry, A)["password_hash"]
    assert verify_password("the-loggers-old-password", new_hash) and not verify_password(password, new_hash)


def test_an_sftp_key_account_and_its_removal(registry: Path, tmp_path: Path) -> None:
    public = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    pub = tmp_path / "id_ed25519.pub"
    pub.write_text(f"{public} logger@station\n")
    result = run(B, "--registry", str(registry), "--account", "hn_tt_002", "--authorized-key", str(pub))
    assert result.exit_code == 0, result.output
    assert tt10_entry(registry, B) == {"account": "hn_tt_002", "authorized_keys": [f"{public} logger@station"]}
    assert bridge_accounts(registry, tmp_path)["hn_tt_002"].authorized_keys == (f"{public} logger@station",)

    result = run(B, "--registry", str(registry), "--remove")
    assert result.exit_code == 0 and "TT10 account hn_tt_002 removed" in result.output
    assert tt10_entry(registry, B) is None
    before = registry.read_bytes()
    result = run(B, "--registry", str(registry), "--remove")
    assert result.exit_code == 2 and f"station {B} has no TT10 account" in result.output
    assert registry.read_bytes() == before


def test_refused_edits_name_the_reason_and_leave_the_registry_and_no_password_file(
    registry: Path, tmp_path: Path
) -> None:
    first = tmp_path / "a.password"
    assert (
        run(A, "--registry", str(registry), "--account", "shared", "--generate-password-file", str(first)).exit_code
        == 0
    )
    before = registry.read_bytes()
    loose = tmp_path / "loose.password"
    loose.write_text("pw\n")
    loose.chmod(0o644)
    two_lines = tmp_path / "two.password"
    two_lines.write_text("one\ntwo\n")
    two_lines.chmod(0o600)
    bad_pub = tmp_path / "bad.pub"
    bad_pub.write_text("not a key\n")
    generated = tmp_path / "b.password"
    cases = [
        (["--account", "shared", "--generate-password-file", str(generated)], f"TT10 account shared is station {A}'s"),
        (["--generate-password-file", str(generated)], f"station {B} has no TT10 account yet"),
        (["--account", "hn_b"], "neither password_hash nor authorized_keys"),
        (["--account", "hn_b", "--generate-password-file", str(first)], f"{first} exists"),
        (["--account", "hn_b", "--password-file", str(loose)], "readable by others (mode 644)"),
        (["--account", "hn_b", "--password-file", str(two_lines)], "on one line"),
        (["--account", "hn_b", "--authorized-key", str(bad_pub)], "is not an OpenSSH public key line"),
        (["--account", "bad name", "--generate-password-file", str(generated)], "not usable as a login"),
        (["--account", "hn_b", "--generate-password-file", str(generated), "--quota-mb", "0"], "must be > 0"),
        (["--account", "hn_b", "--password-file", str(first), "--generate-password-file", str(generated)], "not both"),
        (["--remove", "--account", "hn_b"], "--remove takes no other account option"),
    ]  # fmt: skip
    for args, expected in cases:
        result = run(B, "--registry", str(registry), *args)
        assert result.exit_code == 2, (args, result.output)
        assert expected in " ".join(result.output.split()), (args, result.output)
        assert registry.read_bytes() == before, args
        assert not generated.exists(), args  # a refused edit leaves no password nobody's hash knows
    assert run("NO_SUCH", "--registry", str(registry), "--account", "x", "--generate-password-file",
               str(generated)).exit_code == 2  # fmt: skip
    assert registry.read_bytes() == before and not generated.exists()


def test_bind_bridge_binds_the_bridges_key_to_registered_stations_only(registry: Path, tmp_path: Path) -> None:
    key = write_new_key(tmp_path / "bridge.key")
    pub = tmp_path / "bridge.pub"
    result = CliRunner().invoke(app, ["station", "bind-bridge", "tt10-hn", str(pub), "--station", A,
                                      "--registry", str(registry)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"key {key.key_id} bound to {A}" in result.output
    entries = parse_registry(registry.read_text(), str(registry))
    assert {n for n, _ in entries[A].bridge_keys.values()} == {"tt10-hn"} and not entries[B].bridge_keys
    before = registry.read_bytes()
    result = CliRunner().invoke(app, ["station", "bind-bridge", "tt10-hn", str(pub), "--station", "NO_SUCH",
                                      "--registry", str(registry)])  # fmt: skip
    assert result.exit_code == 2 and "NO_SUCH is not registered" in result.output
    assert registry.read_bytes() == before
