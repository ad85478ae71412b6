"""`quantrac profile check FILE` and `quantrac profile new --from-csv MAP.csv`."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from station_profiles.loader import PROFILES_DIR, load_profile

MAP = """\
Register,Description,Data Type,Byte Order,Scale Factor,Units,Parameter
30001,Dust concentration,REAL,CDAB,1,mg/m3,PM
30003,Flue gas temperature,INT,,0.1,oC,Temp
30005,Flow,UDINT,word swap,1/10,m3/h,Flow
"""


def _run(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_check_a_good_profile_prints_what_it_defines(tmp_path: Path) -> None:
    result = _run("profile", "check", PROFILES_DIR / "demo-stack-cems.yaml")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "demo-stack-cems.yaml: OK" in out and "protocol modbus, address_base 4xxxx" in out
    assert "7 values:" in out
    assert any(
        line.split()[:6] == ["SO2", "holding_register", "40003", "2", "float32", "CDAB"] for line in out.splitlines()
    )
    assert "status: code register" in out and "use it: profile: demo-stack-cems" in out
    assert "note:" not in out  # the built-in file itself is not "another" one


def test_check_a_broken_profile_gives_file_line_fix_and_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "acme.yaml"
    bad.write_text(
        "profile: acme\nmanufacturer: a\nmodel: b\nsource: c\nvalues:\n"
        "  - {parameter: PM10, table: input_register, address: 0, type: float32, word_order: ABDC, unit: ug/m3}\n"
    )
    result = _run("profile", "check", bad)
    assert result.exit_code == 1
    assert f"{bad}:6: values[0].word_order: 'ABDC' is not one of ABCD, CDAB, BADC, DCBA (fix: did you mean" in (
        result.output
    )
    wrong_name = tmp_path / "other.yaml"
    wrong_name.write_text(bad.read_text().replace("ABDC", "ABCD"))
    result = _run("profile", "check", wrong_name)
    assert (
        result.exit_code == 1 and "other.yaml:1: profile: profile 'acme' does not match the file name" in result.output
    )


def test_check_reads_the_file_named_even_without_a_slash_or_yaml_suffix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = _run("profile", "check", "teledyne-t400")  # a file here, not the built-in profile of that name
    assert result.exit_code == 1 and "teledyne-t400: file not found" in result.output
    Path("acme.txt").write_text((PROFILES_DIR / "teledyne-t400.yaml").read_text().replace("t400", "acme", 1))
    result = _run("profile", "check", "acme.txt")
    assert result.exit_code == 1 and "acme.txt:2: profile: profile 'teledyne-acme' does not match" in result.output


def test_check_notes_a_profile_of_the_same_name_in_the_search_path(tmp_path: Path) -> None:
    copy = tmp_path / "teledyne-t400.yaml"
    copy.write_text((PROFILES_DIR / "teledyne-t400.yaml").read_text())
    result = _run("profile", "check", copy)
    assert result.exit_code == 0, result.output
    assert "note: another profile 'teledyne-t400' is at station_profiles/profiles/teledyne-t400.yaml" in result.output


def test_new_from_csv_writes_a_draft_that_passes_check_and_loads(tmp_path: Path) -> None:
    (tmp_path / "map.csv").write_text(MAP)
    out = tmp_path / "models" / "acme-dust.yaml"
    result = _run("profile", "new", "--from-csv", tmp_path / "map.csv", "--out", out, "--manufacturer", "ACME")
    assert result.exit_code == 0, result.output
    assert "profile acme-dust, 3 values from" in result.output and "VERIFY" in result.output
    check = _run("profile", "check", out)
    assert check.exit_code == 0, check.output
    profile = load_profile(out)
    assert [(v.parameter, v.wire_address, v.type, v.word_order, v.scale) for v in profile.values] == [
        ("PM", 0, "float32", "CDAB", 1.0),
        ("Temp", 2, "int16", "ABCD", 0.1),
        ("Flow", 4, "uint32", "CDAB", 0.1),
    ]
    again = _run("profile", "new", "--from-csv", tmp_path / "map.csv", "--out", out)
    assert again.exit_code == 2 and "exists; choose another --out or add --force" in again.output
    assert _run("profile", "new", "--from-csv", tmp_path / "map.csv", "--out", out, "--force").exit_code == 0


def test_new_without_out_prints_the_draft_named_after_the_csv(tmp_path: Path) -> None:
    (tmp_path / "ACME Dust 9 map.csv").write_text(MAP)
    result = _run("profile", "new", "--from-csv", tmp_path / "ACME Dust 9 map.csv")
    assert result.exit_code == 0, result.output
    assert "profile: ACME-Dust-9-map\n" in result.output
    assert "save it as ACME-Dust-9-map.yaml" in result.output


def test_new_refuses_a_bad_row_with_the_csv_line_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "map.csv").write_text(MAP.replace("UDINT", "INT48"))
    out = tmp_path / "acme.yaml"
    result = _run("profile", "new", "--from-csv", tmp_path / "map.csv", "--out", out)
    assert result.exit_code == 1
    assert "map.csv:4: Data Type: type 'INT48' is not one this table can be read as (fix: use one of bool, int16" in (
        result.output
    )
    assert not out.exists()
    mismatch = _run("profile", "new", "--from-csv", tmp_path / "map.csv", "--out", out, "--name", "other")
    assert mismatch.exit_code == 2 and "the file name must be the profile's name" in mismatch.output
