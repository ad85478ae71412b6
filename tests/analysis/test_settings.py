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


def test_the_registry_s_logging_interval_sets_the_expected_count_and_the_settings_only_default_it(
    tmp_path: Path,
) -> None:
    settings = tmp_path / "settings.yaml"
    settings.write_text("averaging:\n  interval_s: 120\n  parameters:\n    COD: {interval_s: 600}\n")
    loaded = Settings.load(settings)
    assert loaded.rule("KCN_WW_01", "COD", 300).expected_per_hour == 12  # the registry's 300 s wins
    assert loaded.rule("KCN_WW_01", "COD").expected_per_hour == 6  # none in the registry: the parameter's default
    assert loaded.rule("KCN_WW_01", "pH").expected_per_hour == 30  # ... else the settings' default
    assert Settings.load(None).rule("S", "PM10").expected_per_hour == 60


def test_a_station_s_interval_in_the_settings_is_refused_with_the_registry_command_meant(tmp_path: Path) -> None:
    settings = tmp_path / "settings.yaml"
    settings.write_text(
        "stations:\n  NM_STACK_01:\n    interval_s: 60\n  KCN_WW_01:\n    parameters:\n      COD: {interval_s: 300}\n"
    )
    text = error_of(lambda: Settings.load(settings))
    assert f"{settings}:3:" in text and "it lives in the registry now" in text
    assert "quantrac station set NM_STACK_01 --interval <PARAMETER>=60" in text
    assert f"{settings}:6:" in text and "quantrac station set KCN_WW_01 --interval COD=300" in text
