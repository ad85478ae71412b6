"""The TT10 codec: every variation real stations send, read exactly or refused with line and reason.

The fixture files' bytes are spelled out in tests.broker_bridge.tt10.tt10_fixtures/make_fixtures.py.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker_bridge.envelope import Reading
from broker_bridge.tt10 import (
    FileNameError,
    MappingError,
    StampError,
    Tt10WriteError,
    format_file_name,
    load_mapping,
    parse_file_name,
    read_file,
    read_path,
    stamp_to_utc_ns,
    utc_ns_to_stamp,
    write_file,
    write_lines,
)
from tests.broker_bridge.tt10.tt10_fixtures.make_fixtures import FIXTURES, HERE, NAME
from vocabulary.parameters import REGULATION_SYMBOLS
from vocabulary.status import STATUS_CODES

S = 1_000_000_000
T_UTC = "2026-03-24T17:05:00"  # the fixtures' 20260325000500 in Vietnam


def ns(iso_utc: str) -> int:
    return int(datetime.fromisoformat(iso_utc).replace(tzinfo=UTC).timestamp()) * S


def fixture(variation: str):
    (path,) = (HERE / variation).glob("*.txt")
    return read_path(path)


def rows(parsed):
    return [(r.line, r.parameter, r.value, r.unit, r.ts_ns, r.status) for r in parsed.readings]


def codes(parsed):
    return {f.code for f in parsed.findings}


def test_committed_fixtures_are_exactly_the_generators_bytes():
    on_disk = {str(p.relative_to(HERE)): p.read_bytes() for p in HERE.glob("*/*.txt")}
    assert on_disk == FIXTURES, "re-run: .venv/bin/python -m tests.broker_bridge.tt10.tt10_fixtures.make_fixtures"


def test_local_time_is_utc_plus_7_and_converted_both_ways():
    assert stamp_to_utc_ns("20260325000500") == ns(T_UTC)
    assert utc_ns_to_stamp(ns(T_UTC)) == "20260325000500"
    assert stamp_to_utc_ns("20260101065959") == ns("2025-12-31T23:59:59")  # the local new year is 07:00 UTC
    with pytest.raises(StampError, match="not a real date"):
        stamp_to_utc_ns("20260230000500")
    with pytest.raises(StampError, match="14 digits"):
        stamp_to_utc_ns("2026032500050")
    with pytest.raises(StampError, match="whole second"):
        utc_ns_to_stamp(ns(T_UTC) + 1)


# --------------------------------------------------------------------------- each variation


def test_canonical():
    f = fixture("canonical")
    T = ns(T_UTC)
    assert rows(f) == [
        (1, "PM2,5", 23.4, "ug/m3", T, "00"),
        (2, "PM10", 41.0, "ug/m3", T, "00"),
        (3, "SO2", 12.5, "ug/m3", T, "01"),
        (4, "CO", None, "mg/m3", T, "02"),
    ]
    assert f.refused == () and f.complete and f.clean
    assert codes(f) == {"line_endings"} and f.station == "HN_BKHN_KHIKXQ"
    assert f.file_name.province == "HN" and f.file_name.facility == "BKHN" and f.file_name.station == "KHIKXQ"


@pytest.mark.parametrize("variation, ending", [("lf", "LF (2)"), ("cr", "CR (2)"), ("bom", "CRLF (2)")])
def test_line_endings_and_bom_read_the_same_readings(variation, ending):
    f = fixture(variation)
    T = ns(T_UTC)
    assert rows(f) == [(1, "PM2,5", 23.4, "ug/m3", T, "00"), (2, "PM10", 41.0, "ug/m3", T, "00")]
    assert f.clean and f.complete
    assert [x.detail for x in f.findings if x.code == "line_endings"] == [f"line endings: {ending}"]
    assert ("bom" in codes(f)) == (variation == "bom")
    assert f.readings[0].parameter == "PM2,5"  # no U+FEFF left on the first name


def test_whole_last_line_without_newline_is_read():
    f = fixture("no_final_newline")
    assert [r.parameter for r in f.readings] == ["PM2,5", "PM10"] and f.readings[1].value == 41.0
    assert f.complete and f.clean and "no_final_newline" in codes(f) and "truncated_last_line" not in codes(f)


def test_blank_lines_are_skipped_and_counted():
    f = fixture("blank_lines")
    assert [(r.line, r.parameter) for r in f.readings] == [(2, "PM2,5"), (6, "PM10")]
    assert f.lines == 7 and f.blank_lines == 5 and f.clean


def test_spaces_around_fields():
    f = fixture("spaces_around_fields")
    assert rows(f) == [(1, "PM2,5", 23.4, "ug/m3", ns(T_UTC), "00")]
    assert f.readings[0].notes == ("spaces around fields ignored",) and f.clean


def test_empty_unit_for_ph():
    f = fixture("empty_unit_ph")
    assert rows(f) == [(1, "pH", 7.12, "", ns(T_UTC), "00"), (2, "COD", 45.3, "mg/L", ns(T_UTC), "00")]
    assert f.station == "HN_BKHN_NUOSXL" and f.clean


def test_missing_value_is_none_never_zero():
    f = fixture("missing_value_02")
    assert [(r.parameter, r.value, r.status) for r in f.readings] == [("SO2", None, "02"), ("NO2", None, "01")]
    assert f.clean


def test_empty_value_with_status_00_is_refused():
    f = fixture("empty_value_00")
    assert [(r.parameter, r.value) for r in f.readings] == [("NO2", 18.2)]
    (refused,) = f.refused
    assert (refused.line, refused.raw, refused.byte_offset) == (1, "SO2\t\tug/m3\t20260325000500\t00", 0)
    assert "value is empty but the status is 00" in refused.reason and not refused.truncated
    assert not f.clean and f.complete


def test_several_times_of_one_parameter():
    f = fixture("several_times")
    assert [(r.value, r.ts_ns) for r in f.readings] == [
        (20.1, ns("2026-03-24T17:01:00")),
        (21.7, ns("2026-03-24T17:03:00")),
        (22.9, ns("2026-03-24T17:05:00")),
    ]
    assert "several_times" in codes(f) and f.clean and f.complete


def test_negative_values():
    f = fixture("negative_value")
    assert [(r.parameter, r.value, r.unit) for r in f.readings] == [("Radiation", -1.6, "w/m2"), ("Temp", -0.5, "oC")]
    assert f.clean


def test_decimal_comma_read_thousands_separator_refused():
    f = fixture("decimal_comma")
    assert [(r.parameter, r.value) for r in f.readings] == [("pH", 7.12)]
    assert f.readings[0].notes == ("decimal comma read as a point: '7,12'",)
    (refused,) = f.refused
    assert refused.line == 2 and refused.raw == "COD\t1,234.5\tmg/L\t20260325000500\t00"
    assert "thousands separator" in refused.reason


def test_unlisted_parameters_kept_as_sent():
    f = fixture("unlisted_parameters")
    assert [(r.parameter, r.sent_as) for r in f.readings] == [
        ("Nhiệtđộ", "Nhiệtđộ"),
        ("PM25", "PM25"),
        ("m,p-Xylene", "m,p-Xylene"),
    ]
    (refused,) = f.refused
    assert refused.line == 4 and refused.raw.startswith("Vinyl chloride\t") and "has a space" in refused.reason
    assert "unlisted_parameter" in codes(f)


def test_unlisted_parameters_mapped_by_a_dict():
    data = FIXTURES[f"unlisted_parameters/{NAME}"]
    f = read_file(data, NAME, mapping={"PM25": "PM2,5", "Nhiệtđộ": "Temp", "Vinyl chloride": "Vinyl_chloride"})
    assert [(r.parameter, r.sent_as) for r in f.readings] == [
        ("Temp", "Nhiệtđộ"),
        ("PM2,5", "PM25"),
        ("m,p-Xylene", "m,p-Xylene"),
        ("Vinyl_chloride", "Vinyl chloride"),
    ]
    assert f.clean and f.readings[1].notes == ("'PM25' mapped to 'PM2,5'",)


def test_mapping_file_sample_and_errors(tmp_path):
    sample = load_mapping(Path(__file__).parents[3] / "broker_bridge" / "tt10" / "parameter_map.sample.yaml")
    assert sample["PM25"] == "PM2,5" and sample["Nhiệtđộ"] == "Temp" and sample["Vinyl chloride"] == "Vinyl_chloride"
    good = tmp_path / "map.yaml"
    good.write_text("NO: NO2\nPM25: 'PM2,5'\n", encoding="utf-8")
    assert load_mapping(good) == {"NO": "NO2", "PM25": "PM2,5"}  # 'NO' stays text, not a YAML boolean
    bad = tmp_path / "bad.yaml"
    bad.write_text("PM25: 'PM2,5'\nFlowin: Flow in\n", encoding="utf-8")
    with pytest.raises(MappingError, match=r"bad.yaml, line 2: 'Flowin' maps to 'Flow in'"):
        load_mapping(bad)
    twice = tmp_path / "twice.yaml"
    twice.write_text("PM25: 'PM2,5'\nPM25: PM10\n", encoding="utf-8")
    with pytest.raises(MappingError, match="line 2: 'PM25' is mapped twice"):
        load_mapping(twice)


def test_status_03_and_one_digit_codes_refused_never_read_as_00():
    f = fixture("status_03")
    assert [(r.line, r.parameter, r.status) for r in f.readings] == [(3, "SO2", "00")]
    assert [(x.line, x.raw.split("\t")[-1]) for x in f.refused] == [(1, "03"), (2, "0")]
    assert "03 for maintenance" in f.refused[0].reason and "not read as 00" in f.refused[0].reason
    assert "two digits" in f.refused[1].reason and not any(x.truncated for x in f.refused)


def test_name_time_disagreeing_with_lines_is_a_finding_not_a_refusal():
    f = fixture("name_time_mismatch")
    assert rows(f) == [(1, "PM2,5", 23.4, "ug/m3", ns("2026-03-24T16:00:00"), "00")]
    assert f.clean and not f.complete
    (reason,) = f.incomplete_reasons
    assert "20260325000500" in reason and "20260324230000" in reason and "3900 s" in reason
    assert read_file(FIXTURES[f"name_time_mismatch/{NAME}"], NAME, name_time_tolerance_s=3900).complete


def test_truncated_last_line_is_refused_and_the_file_incomplete():
    f = fixture("truncated_last_line")
    assert [r.parameter for r in f.readings] == ["PM2,5", "PM10"]
    (cut,) = f.refused
    assert (cut.line, cut.raw, cut.truncated, cut.byte_offset) == (3, "NO2\t18", True, 71)
    assert "interrupted" in cut.reason and not f.complete and not f.clean


def test_non_utf8_line_refused_with_byte_offset():
    f = fixture("non_utf8")
    assert [r.parameter for r in f.readings] == ["PM2,5"]
    (bad,) = f.refused
    assert bad.line == 2 and bad.raw == "Nhi\\xd2t\t31.2\toC\t20260325000500\t00"
    assert "byte 0xD2 at byte offset 39" in bad.reason
    assert FIXTURES[f"non_utf8/{NAME}"][39] == 0xD2


def test_values_that_are_not_finite_are_refused():
    f = fixture("not_finite")
    assert f.readings == ()
    assert [x.line for x in f.refused] == [1, 2, 3]
    assert all("finite" in x.reason for x in f.refused)


def test_repeated_line_read_once_conflicting_line_refused():
    f = fixture("repeated_lines")
    assert rows(f) == [(1, "PM2,5", 23.4, "ug/m3", ns(T_UTC), "00")]
    (conflict,) = f.refused
    assert (
        conflict.line == 3
        and conflict.raw == "PM2,5\t99.9\tug/m3\t20260325000500\t00"
        and "line 1 is kept" in conflict.reason
    )
    assert "repeated_line" in codes(f)


def test_bad_times_refused():
    f = fixture("bad_time")
    assert [(x.line, "not a real date" in x.reason or "14 digits" in x.reason) for x in f.refused] == [
        (1, True),
        (2, True),
    ]


def test_empty_file_is_incomplete():
    f = fixture("empty_file")
    assert f.readings == () and f.refused == () and not f.complete and not f.clean and codes(f) == {"empty_file"}


def test_utf16_file_refused_whole():
    f = read_file("PM2,5\t23.4\tug/m3\t20260325000500\t00\r\n".encode("utf-16"), NAME)
    assert f.readings == () and "utf16" in codes(f) and not f.clean


def test_invisible_characters_refused():
    f = read_file(b"PM2,5\t23.4\tug/m3\t20260325000500\t00\r\n\xef\xbb\xbfPM10\t1\tug/m3\t20260325000500\t00\r\n", NAME)
    (bad,) = f.refused
    assert bad.line == 2 and "U+FEFF" in bad.reason


def test_wrong_separator_said_so():
    f = read_file(b"PM2,5;23.4;ug/m3;20260325000500;00\r\nPM10 41.0 ug/m3 20260325000500 00\r\n", NAME)
    assert ["semicolons" in f.refused[0].reason, "spaces" in f.refused[1].reason] == [True, True]


# --------------------------------------------------------------------------- file names


@pytest.mark.parametrize(
    "name, prefix, form, stamp",
    [
        ("HN_BKHN_KHIKXQ_20260325000500.txt", "HN_BKHN_KHIKXQ", "tinh_coso_tram", "20260325000500"),
        ("TH_BSON_KHILO2__20260325000500.txt", "TH_BSON_KHILO2", "doubled_underscore", "20260325000500"),
        ("KCNDiemThuy20170228145700.txt", "KCNDiemThuy", "no_separator", "20170228145700"),
        ("LS_LSOS_KHIKHO_20260325000500.TXT", "LS_LSOS_KHIKHO", "tinh_coso_tram", "20260325000500"),
        (
            "/srv/ftp/HN/2026/03/25/HN_BKHN_KHIKXQ_20260325000500.txt",
            "HN_BKHN_KHIKXQ",
            "tinh_coso_tram",
            "20260325000500",
        ),
    ],
)
def test_file_names(name, prefix, form, stamp):
    parsed = parse_file_name(name)
    assert (parsed.prefix, parsed.form, parsed.stamp, parsed.ts_ns) == (prefix, form, stamp, stamp_to_utc_ns(stamp))
    assert str(parsed).lower() == name.rsplit("/", 1)[-1].lower()


def test_doubled_underscore_and_old_fixtures_name_their_station():
    assert fixture("doubled_underscore").station == "TH_BSON_KHILO2" and fixture("doubled_underscore").complete
    old = fixture("old_name")
    assert old.station == "KCNDiemThuy" and old.file_name.province is None
    assert rows(old) == [(1, "Flow", 38.5, "m3/h", ns("2017-02-28T07:57:00"), "00")] and old.complete


@pytest.mark.parametrize(
    "name, why",
    [
        ("readings.txt", "must end in 14 digits"),
        ("HN_BKHN_KHIKXQ_20260325000500.csv", "must end in 14 digits"),
        ("HN_BKHN_KHIKXQ___20260325000500.txt", "3 underscores"),
        ("20260325000500.txt", "no station"),
        ("Hà Nội_20260325000500.txt", "no spaces or accents"),
        ("HN_BKHN_KHIKXQ_20261325000500.txt", "not a real date"),
    ],
)
def test_bad_file_names(name, why):
    with pytest.raises(FileNameError, match=why):
        parse_file_name(name)


def test_bad_name_is_an_error_finding_lines_still_checked():
    f = fixture("bad_name")
    assert f.station is None and "name_unrecognised" in codes(f) and not f.clean
    assert [r.parameter for r in f.readings] == ["PM2,5"]


def test_format_file_name():
    assert format_file_name("HN_BKHN_KHIKXQ", ns(T_UTC)) == "HN_BKHN_KHIKXQ_20260325000500.txt"
    assert format_file_name("TH_BSON_KHILO2", ns(T_UTC), "doubled_underscore") == "TH_BSON_KHILO2__20260325000500.txt"
    assert format_file_name("KCNDiemThuy", ns("2017-02-28T07:57:00"), "no_separator") == "KCNDiemThuy20170228145700.txt"
    with pytest.raises(FileNameError):
        format_file_name("HN BKHN", ns(T_UTC))


# --------------------------------------------------------------------------- writing


def test_canonical_bytes_round_trip_byte_for_byte():
    data = FIXTURES[f"canonical/{NAME}"]
    parsed = read_file(data, NAME)
    name, written = write_file(parsed.station, parsed.file_name.ts_ns, parsed.readings)
    assert (name, written) == (NAME, data)


def test_writer_options_and_refusals():
    r = Reading(ts_ns=ns(T_UTC), device="d", parameter="pH", value=7.0, unit="", status="00")
    assert write_lines([r]) == b"pH\t7.0\t\t20260325000500\t00\r\n"
    assert write_lines([r], line_ending="\n", decimals=2) == b"pH\t7.00\t\t20260325000500\t00\n"
    assert (
        write_lines([Reading(ns(T_UTC), "d", "COD", 1e-7, "mg/L", "00")])
        == b"COD\t0.0000001\tmg/L\t20260325000500\t00\r\n"
    )
    for bad, why in [
        (Reading(ns(T_UTC), "d", "pH", math.nan, "", "00"), "not finite"),
        (Reading(ns(T_UTC), "d", "pH", None, "", "00"), "missing value needs status 01 or 02"),
        (Reading(ns(T_UTC) + 1, "d", "pH", 7.0, "", "00"), "whole second"),
        (Reading(ns(T_UTC), "d", "pH", 7.0, "mg\tL", "00"), "control character"),
        (Reading(ns(T_UTC), "d", "pH", 7.0, "", "03"), "status '03'"),
        (Reading(ns(T_UTC), "d", "Vinyl chloride", 7.0, "", "00"), "one word"),
    ]:
        with pytest.raises(Tt10WriteError, match=why):
            write_lines([bad])


def test_to_reading_gives_the_wire_reading():
    r = fixture("canonical").readings[3]
    assert r.to_reading("tt10", cause="file x") == Reading(ns(T_UTC), "tt10", "CO", None, "mg/m3", "02", "file x")


_names = st.one_of(
    st.sampled_from(REGULATION_SYMBOLS),
    st.text(st.characters(blacklist_categories=("Z", "C")), min_size=1, max_size=64),
)
_units = st.one_of(
    st.sampled_from(["", "ug/m3", "mg/Nm3", "mg/L", "oC", "%", "µS/cm", "-"]),
    st.text(st.characters(blacklist_categories=("C",)), max_size=12).map(str.strip),
)
_values = st.floats(allow_nan=False, allow_infinity=False)
_times = st.integers(min_value=ns("1990-01-01T00:00:00") // S, max_value=ns("2200-01-01T00:00:00") // S).map(
    lambda s: s * S
)


@st.composite
def _readings(draw):
    status = draw(st.sampled_from(STATUS_CODES))
    value = draw(st.one_of(st.none(), _values)) if status != "00" else draw(_values)
    return Reading(draw(_times), "d", draw(_names), value, draw(_units), status)


@settings(max_examples=300, deadline=None)
@given(st.lists(_readings(), max_size=30, unique_by=lambda r: (r.parameter, r.ts_ns)), st.sampled_from(["\r\n", "\n"]))
def test_random_readings_written_and_read_back_identically(readings, line_ending):
    data = write_lines(readings, line_ending=line_ending)
    parsed = read_file(data)
    assert parsed.refused == () and parsed.clean == bool(readings)  # no lines at all: an empty file
    assert [(r.parameter, r.value, r.unit, r.ts_ns, r.status) for r in parsed.readings] == [
        (r.parameter, r.value, r.unit, r.ts_ns, r.status) for r in readings
    ]
    assert all(
        math.copysign(1, a.value) == math.copysign(1, b.value)
        for a, b in zip(parsed.readings, readings)
        if a.value is not None
    )
    assert write_lines(parsed.readings, line_ending=line_ending) == data


def test_a_cut_anywhere_never_yields_a_wrong_value():
    data = FIXTURES[f"canonical/{NAME}"]
    full = {r.line: r for r in read_file(data, NAME).readings}
    for cut in range(len(data) + 1):
        part = read_file(data[:cut], NAME)
        assert all(r == full[r.line] for r in part.readings), cut
        tail = data[:cut].split(b"\n")[-1].split(b"\r")[-1]  # the unterminated rest, if any
        whole_lines = tail == b"" or (tail.count(b"\t") == 4 and len(tail.rsplit(b"\t", 1)[1]) == 2)
        assert part.complete == (whole_lines and cut > 0), cut
        assert sum(x.truncated for x in part.refused) == (0 if whole_lines or cut == 0 else 1), cut


def test_mixed_line_endings_are_a_warning_and_every_line_read():
    f = read_file(b"PM2,5\t23.4\tug/m3\t20260325000500\t00\r\nPM10\t41.0\tug/m3\t20260325000500\t00\n", NAME)
    assert [r.line for r in f.readings] == [1, 2] and f.clean
    (endings,) = [x for x in f.findings if x.code == "line_endings"]
    assert (endings.severity, endings.detail) == ("warning", "mixed line endings: CRLF (1) and LF (1)")


def test_nbsp_around_fields_is_space_not_an_invisible_character():
    f = read_file("PM2,5\t\u00a023.4\tug/m3\t20260325000500\t00\r\n".encode(), NAME)
    assert [r.value for r in f.readings] == [23.4] and f.readings[0].notes == ("spaces around fields ignored",)
