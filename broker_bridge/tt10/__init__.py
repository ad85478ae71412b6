"""The TT10 TXT format (TT 10/2021, Phụ lục 15): file names, lines, local time. See README.md."""

from broker_bridge.tt10.codec import (
    CANONICAL_LINE_ENDING,
    DEFAULT_NAME_TIME_TOLERANCE_S,
    INCOMPLETE_CODES,
    Finding,
    RefusedLine,
    Tt10File,
    Tt10Reading,
    Tt10WriteError,
    WritableReading,
    describe_time,
    format_line,
    format_value,
    read_file,
    read_path,
    write_file,
    write_lines,
)
from broker_bridge.tt10.local_time import VIETNAM, StampError, stamp_to_utc_ns, utc_ns_to_stamp
from broker_bridge.tt10.mapping import MappingError, check_mapping, load_mapping
from broker_bridge.tt10.names import NAME_FORMS, FileName, FileNameError, format_file_name, parse_file_name

__all__ = [
    "CANONICAL_LINE_ENDING",
    "DEFAULT_NAME_TIME_TOLERANCE_S",
    "INCOMPLETE_CODES",
    "NAME_FORMS",
    "VIETNAM",
    "FileName",
    "FileNameError",
    "Finding",
    "MappingError",
    "RefusedLine",
    "StampError",
    "Tt10File",
    "Tt10Reading",
    "Tt10WriteError",
    "WritableReading",
    "check_mapping",
    "describe_time",
    "format_file_name",
    "format_line",
    "format_value",
    "load_mapping",
    "parse_file_name",
    "read_file",
    "read_path",
    "stamp_to_utc_ns",
    "utc_ns_to_stamp",
    "write_file",
    "write_lines",
]
