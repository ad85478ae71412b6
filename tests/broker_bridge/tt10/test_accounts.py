"""Upload accounts: scrypt hashes and accounts read from a mapping with operator-style errors."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from broker_bridge.tt10.sources.accounts import PasswordChecker, accounts_from_mapping, hash_password, verify_password
from configuration.errors import ConfigError


def test_hash_carries_its_parameters_and_a_salt():
    one, two = hash_password("s3cret"), hash_password("s3cret")
    assert one.startswith("scrypt$16384$8$1$") and one != two  # salted
    assert verify_password("s3cret", one) and verify_password("s3cret", two)
    assert not verify_password("s3cret ", one) and not verify_password("", one)
    cheap = hash_password("x", n=2**10, r=4, p=2)
    assert cheap.startswith("scrypt$1024$4$2$") and verify_password("x", cheap)


@pytest.mark.parametrize(
    "bad", ["", "s3cret", "scrypt$16384$8$1$abc", "scrypt$1000$8$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA=="]
)
def test_a_malformed_hash_never_verifies(bad):
    assert verify_password("s3cret", bad) is False


def test_the_checker_remembers_a_success_but_not_a_changed_hash(tmp_path):
    (account,) = accounts_from_mapping(
        {"a1": {"station": "HN_A", "password_hash": hash_password("pw")}}, homes_dir=tmp_path
    ).values()
    checker = PasswordChecker()
    start = time.perf_counter()
    assert checker.check(account, "pw")
    first = time.perf_counter() - start
    start = time.perf_counter()
    assert checker.check(account, "pw")
    assert time.perf_counter() - start < first / 10  # no scrypt the second time
    assert not checker.check(account, "PW")
    assert not checker.check(replace(account, password_hash=hash_password("new")), "pw")


def test_accounts_from_a_mapping(tmp_path):
    accounts = accounts_from_mapping(
        {
            "hn_air": {"station": "HN_BKHN_KHIKXQ", "password_hash": hash_password("pw"), "quota_bytes": 1000},
            "hn_ww": {
                "station": "HN_KCN_NUOSXL",
                "authorized_keys": ["ssh-ed25519 AAAAC3Nz... tech"],
                "root": "/srv/x",
            },
        },
        homes_dir=tmp_path,
    )
    assert accounts["hn_air"].root == tmp_path / "hn_air" and accounts["hn_air"].quota_bytes == 1000
    assert accounts["hn_air"].max_files_per_minute == 60
    assert accounts["hn_ww"].root == Path("/srv/x") and accounts["hn_ww"].password_hash is None


def test_bad_accounts_name_the_path_and_the_fix():
    with pytest.raises(ConfigError) as err:
        accounts_from_mapping(
            {
                "ok": {"station": "HN A", "password_hash": "plain text", "quota: 5": 1},
            },
            source="registry.yaml",
        )
    text = str(err.value)
    assert "registry.yaml: accounts.ok.station: 'HN A' is not a station id" in text
    assert "plain-text passwords are never stored (fix: write the output of hash_password" in text
    assert "unknown key 'quota: 5'" in text
    with pytest.raises(ConfigError, match="account name 'hn air' is not usable as a login and a folder name"):
        accounts_from_mapping({"hn air": {"station": "HN_A", "password_hash": hash_password("p")}})
    with pytest.raises(ConfigError, match="neither password_hash nor authorized_keys"):
        accounts_from_mapping({"a": {"station": "A"}}, homes_dir=Path("/tmp"))
    with pytest.raises(ConfigError, match="no root for the account and no homes_dir"):
        accounts_from_mapping({"a": {"station": "A", "password_hash": hash_password("p")}})
