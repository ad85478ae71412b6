"""The settings and limit files fail with FILE:LINE: what is wrong (fix: what to write)."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.settings import LIMITS_DIR, Settings, load_limit_file, misspelt_parameter
from configuration.errors import ConfigError

LIMIT_HEAD = "regulation: X\nkinds: [ambient_air]\neffective_from: 2023-09-12\nparameters:\n"


def error_of(call) -> str:
    with pytest.raises(ConfigError) as caught:
        call()
    return str(caught.value)


def test_a_wrong_settings_key_names_its_line_and_the_key_meant(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("averaging:\n  interval_s: 60\n  min_hour_coverag: 0.75\n")
    text = error_of(lambda: Settings.load(path))
    assert f"{path}:3:" in text and "min_hour_coverag" in text and "fix: did you mean 'min_hour_coverage'" in text


def test_a_limit_that_is_not_a_number_names_its_line(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text(
        LIMIT_HEAD + "  SO2:\n    unit: ug/m3\n    limits:\n      - {period: 1h, value: high}\n"
    )
    text = error_of(lambda: load_limit_file("x", tmp_path))
    assert f"{tmp_path / 'x.yaml'}:8:" in text and "parameters.SO2.limits[0].value" in text
    assert "expected a number, got 'high'" in text and "fix: write a plain number" in text


def test_an_unknown_parameter_in_a_limit_file_or_the_settings_names_the_symbol_meant(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text(
        LIMIT_HEAD + "  S02:\n    unit: ug/m3\n    limits:\n      - {period: 1h, value: 350}\n"
    )
    text = error_of(lambda: load_limit_file("x", tmp_path))
    assert f"{tmp_path / 'x.yaml'}:5:" in text and "unknown parameter 'S02'" in text and "fix: write 'SO2'" in text
    settings = tmp_path / "settings.yaml"
    settings.write_text(
        "averaging:\n  parameters:\n    PM10: {min_hours_per_day: 20}\n    PM2.5: {min_hours_per_day: 18}\n"
        "stations:\n  ST1:\n    parameters:\n      cod: {interval_s: 300}\n"
    )
    text = error_of(lambda: Settings.load(settings))
    assert f"{settings}:4:" in text and "unknown parameter 'PM2.5'" in text and "fix: write 'PM2,5'" in text
    assert f"{settings}:8:" in text and "unknown parameter 'cod'" in text and "fix: write 'COD'" in text
    assert "PM10" not in text


def test_the_shipped_limit_files_and_a_station_s_own_symbols_pass() -> None:
    for path in sorted(LIMITS_DIR.glob("*.yaml")):
        assert load_limit_file(path.stem, LIMITS_DIR).parameters  # TSP, BOD5, ... are not lookalikes
    assert [misspelt_parameter(s) for s in ("PM2,5", "PM10", "BOD5", "TSP", "X01", "pm10", "N02")] == [
        None, None, None, None, None, "PM10", "NO2",
    ]  # fmt: skip
