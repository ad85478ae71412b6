"""The Modbus data model: tables, value types and their widths, word orders, limits.

Profiles (``station_profiles``) describe analyzers in these terms and the
agent's codec (``edge_agent.codec``) decodes by them; both import them here.
"""

from __future__ import annotations

from typing import Literal

Table = Literal["coil", "discrete_input", "input_register", "holding_register"]
ValueType = Literal["bool", "int16", "uint16", "int32", "uint32", "float32", "float64"]
WordOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]

TABLES: tuple[str, ...] = ("coil", "discrete_input", "input_register", "holding_register")
BIT_TABLES = frozenset({"coil", "discrete_input"})
REGISTER_TABLES = frozenset({"input_register", "holding_register"})
WORD_ORDERS: tuple[str, ...] = ("ABCD", "CDAB", "BADC", "DCBA")
INTEGER_TYPES = frozenset({"int16", "uint16", "int32", "uint32"})
FLOAT_TYPES = frozenset({"float32", "float64"})

#: Width of each type: registers for register tables, bits for bit tables.
TYPE_WIDTH: dict[str, int] = {"bool": 1, "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "float64": 4}

INT_LIMITS: dict[str, tuple[int, int]] = {
    "int16": (-(1 << 15), (1 << 15) - 1),
    "uint16": (0, (1 << 16) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1),
    "uint32": (0, (1 << 32) - 1),
}

#: Read function code of each table.
FUNCTION_CODES: dict[str, int] = {"coil": 1, "discrete_input": 2, "holding_register": 3, "input_register": 4}

#: Modicon reference prefix of each table ("4xxxx" numbering).
MODICON_PREFIX: dict[str, int] = {"coil": 0, "discrete_input": 1, "input_register": 3, "holding_register": 4}

MAX_REGISTERS_PER_READ = 125  # FC03/FC04 limit of the Modbus spec
MAX_BITS_PER_READ = 2000  # FC01/FC02 limit of the Modbus spec

#: Exception codes of the Modbus application protocol, for people.
EXCEPTION_NAMES: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    7: "negative acknowledge",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}
