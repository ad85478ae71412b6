"""Writes the TT10 fixture files with their exact bytes: python -m tests.broker_bridge.tt10.tt10_fixtures.make_fixtures

Each variation real stations send (shared/reference/sharing-and-legacy.md §1) is one folder holding
one file under a TT10 name. The bytes are spelled out here, so a BOM, a CR or a missing final
newline is visible in review; tests/broker_bridge/tt10/test_tt10_codec.py checks that the committed files are exactly
these bytes and what the codec reads from each.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
NAME = "HN_BKHN_KHIKXQ_20260325000500.txt"  # 25/03/2026 00:05:00 Vietnam = 2026-03-24T17:05:00Z
T = b"20260325000500"

FIXTURES: dict[str, bytes] = {
    # The canonical form the writer produces: TAB, '.' decimal, CRLF, final newline, no BOM.
    f"canonical/{NAME}": (
        b"PM2,5\t23.4\tug/m3\t" + T + b"\t00\r\n"
        b"PM10\t41.0\tug/m3\t" + T + b"\t00\r\n"
        b"SO2\t12.5\tug/m3\t" + T + b"\t01\r\n"
        b"CO\t\tmg/m3\t" + T + b"\t02\r\n"
    ),
    f"lf/{NAME}": b"PM2,5\t23.4\tug/m3\t" + T + b"\t00\nPM10\t41.0\tug/m3\t" + T + b"\t00\n",
    f"cr/{NAME}": b"PM2,5\t23.4\tug/m3\t" + T + b"\t00\rPM10\t41.0\tug/m3\t" + T + b"\t00\r",
    f"bom/{NAME}": b"\xef\xbb\xbfPM2,5\t23.4\tug/m3\t" + T + b"\t00\r\nPM10\t41.0\tug/m3\t" + T + b"\t00\r\n",
    # '\n'-joined with no final newline (a Python logger): the last line is whole and is read.
    f"no_final_newline/{NAME}": b"PM2,5\t23.4\tug/m3\t" + T + b"\t00\nPM10\t41.0\tug/m3\t" + T + b"\t00",
    f"blank_lines/{NAME}": (
        b"\r\nPM2,5\t23.4\tug/m3\t" + T + b"\t00\r\n\r\n   \r\n\t\r\nPM10\t41.0\tug/m3\t" + T + b"\t00\r\n\r\n"
    ),
    f"spaces_around_fields/{NAME}": b" PM2,5 \t 23.4\tug/m3 \t" + T + b" \t 00 \r\n",
    # pH has no unit: an empty third field.
    f"empty_unit_ph/{NAME.replace('KHIKXQ', 'NUOSXL')}": b"pH\t7.12\t\t"
    + T
    + b"\t00\r\nCOD\t45.3\tmg/L\t"
    + T
    + b"\t00\r\n",
    # A missing value: empty field with status 02 (stored as None, never 0); with 00 it is refused.
    f"missing_value_02/{NAME}": b"SO2\t\tug/m3\t" + T + b"\t02\r\nNO2\t\tug/m3\t" + T + b"\t01\r\n",
    f"empty_value_00/{NAME}": b"SO2\t\tug/m3\t" + T + b"\t00\r\nNO2\t18.2\tug/m3\t" + T + b"\t00\r\n",
    # One line per reading of the interval, sorted by time (one logger does this).
    f"several_times/{NAME}": b"".join(
        b"PM2,5\t" + v + b"\tug/m3\t2026032500" + m + b"\t00\r\n"
        for v, m in ((b"20.1", b"0100"), (b"21.7", b"0300"), (b"22.9", b"0500"))
    ),
    f"negative_value/{NAME}": b"Radiation\t-1.60\tw/m2\t" + T + b"\t00\r\nTemp\t-0.5\toC\t" + T + b"\t00\r\n",
    f"decimal_comma/{NAME.replace('KHIKXQ', 'NUOSXL')}": b"pH\t7,12\t\t"
    + T
    + b"\t00\r\nCOD\t1,234.5\tmg/L\t"
    + T
    + b"\t00\r\n",
    # Names outside the regulation's table: kept as sent, mapped where a mapping says so.
    f"unlisted_parameters/{NAME}": (
        "Nhiệtđộ\t31.2\toC\t".encode() + T + b"\t00\r\n"
        b"PM25\t23.4\tug/m3\t" + T + b"\t00\r\n"
        b"m,p-Xylene\t0.8\tppb\t" + T + b"\t00\r\n"
        b"Vinyl chloride\t0.1\tppb\t" + T + b"\t00\r\n"
    ),
    f"status_03/{NAME}": b"PM2,5\t23.4\tug/m3\t"
    + T
    + b"\t03\r\nPM10\t41.0\tug/m3\t"
    + T
    + b"\t0\r\nSO2\t12.5\tug/m3\t"
    + T
    + b"\t00\r\n",
    # The name says 00:05 but the lines say 23:00 the day before.
    f"name_time_mismatch/{NAME}": b"PM2,5\t23.4\tug/m3\t20260324230000\t00\r\n",
    # An upload cut off inside the last line (the value of NO2).
    f"truncated_last_line/{NAME}": b"PM2,5\t23.4\tug/m3\t"
    + T
    + b"\t00\r\nPM10\t41.0\tug/m3\t"
    + T
    + b"\t00\r\nNO2\t18",
    # A single-byte (cp1258 / latin-1) 0xD2 where UTF-8 was expected: the line is refused with the byte offset.
    f"non_utf8/{NAME}": b"PM2,5\t23.4\tug/m3\t" + T + b"\t00\r\nNhi\xd2t\t31.2\toC\t" + T + b"\t00\r\n",
    f"not_finite/{NAME}": (
        b"PM2,5\tNaN\tug/m3\t"
        + T
        + b"\t00\r\nPM10\tinf\tug/m3\t"
        + T
        + b"\t00\r\nSO2\t1e999\tug/m3\t"
        + T
        + b"\t00\r\n"
    ),
    f"repeated_lines/{NAME}": (
        b"PM2,5\t23.4\tug/m3\t"
        + T
        + b"\t00\r\nPM2,5\t23.4\tug/m3\t"
        + T
        + b"\t00\r\nPM2,5\t99.9\tug/m3\t"
        + T
        + b"\t00\r\n"
    ),
    "doubled_underscore/TH_BSON_KHILO2__20260325000500.txt": b"SO2\t12.5\tmg/Nm3\t" + T + b"\t00\r\n",
    "old_name/KCNDiemThuy20170228145700.txt": b"Flow\t38.5\tm3/h\t20170228145700\t00\r\n",
    "bad_name/readings.txt": b"PM2,5\t23.4\tug/m3\t" + T + b"\t00\r\n",
    f"empty_file/{NAME}": b"",
    f"bad_time/{NAME}": b"PM2,5\t23.4\tug/m3\t20260230000500\t00\r\nPM10\t41.0\tug/m3\t2026032500050\t00\r\n",
}


def write_all(root: Path = HERE) -> None:
    for relative, content in FIXTURES.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


if __name__ == "__main__":
    write_all()
