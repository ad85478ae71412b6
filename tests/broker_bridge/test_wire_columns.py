"""The column decoder accepts and refuses exactly what the per-reading checks do.

``decode_body_columns`` takes a shortcut for bodies whose columns are
certainly valid; these tests hold it to the per-reading reference on bodies
built to sit on every edge of the contract.
"""

from __future__ import annotations

import math

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker_bridge.envelope import (
    MAX_TIMESTAMP_NS,
    EnvelopeError,
    _decode_reading,
    _refuse_repeated_keys,
    decode_body_columns,
)

EDGE_INTS = st.sampled_from([0, 1, -1, MAX_TIMESTAMP_NS, MAX_TIMESTAMP_NS + 1, 2**63 - 1, 1_700_000_000_000_000_000])
ANY_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    EDGE_INTS,
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -1e308, 0.0, -0.0]),
    st.text(max_size=70),
    st.sampled_from(["", "00", "01", "02", "03", "x" * 64, "x" * 65, "c" * 256, "c" * 257]),
    st.sampled_from(["a\x00b", "\x00", "a\nb", "\x1f", "\x7f", "tab\there", "\x80", "\u2028"]),
    st.binary(max_size=4),
)
GOOD_TS = st.one_of(st.integers(min_value=1, max_value=MAX_TIMESTAMP_NS), EDGE_INTS)
GOOD_NAME = st.one_of(st.sampled_from(["PM2,5", "SO2", "t400", "x" * 64]), st.text(min_size=1, max_size=64))
GOOD_VALUE = st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([1e308, -1e308]))
GOOD_READING = st.tuples(
    GOOD_TS,
    GOOD_NAME,
    GOOD_NAME,
    GOOD_VALUE,
    st.text(max_size=64),
    st.sampled_from(["00", "01", "02"]),
    st.text(max_size=256),
).map(list)


@st.composite
def readings(draw) -> list:
    """Mostly valid readings, with a few fields (or whole readings) broken at random."""
    items = draw(st.lists(GOOD_READING, min_size=1, max_size=12))
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        i = draw(st.integers(min_value=0, max_value=len(items) - 1))
        how = draw(st.integers(min_value=0, max_value=3))
        if how == 0 and isinstance(items[i], list) and len(items[i]) == 7:
            items[i][draw(st.integers(min_value=0, max_value=6))] = draw(ANY_SCALAR)
        elif how == 1 and isinstance(items[i], list):
            items[i] = items[i][: draw(st.integers(min_value=0, max_value=6))]
        elif how == 2 and isinstance(items[i], list):
            items[i] = items[i] + [draw(ANY_SCALAR)]
        elif how == 3:
            items[i] = draw(ANY_SCALAR)
    return items


def reference(items: list):
    """The per-reading checks, then the batch's one rule across readings (no key twice)."""
    columns = tuple(zip(*(_decode_reading(i, item).as_wire() for i, item in enumerate(items))))
    _refuse_repeated_keys(*columns[:3])
    return columns


def body_bytes(items: list) -> bytes:
    return msgpack.packb({"station": "S1", "seq": 1, "sent_ns": 1, "hist": False, "readings": items}, use_bin_type=True)


def outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except EnvelopeError as exc:
        return ("error", exc.reason, exc.detail)


def same(a, b) -> bool:
    """Equal, with NaN equal to NaN (never accepted, but compared safely)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@pytest.mark.slow  # 3,000 generated bodies through both decoders (~20 s of CPU)
@settings(max_examples=3000, deadline=None)
@given(readings())
def test_column_decoder_equals_per_reading_checks(items):
    payload = body_bytes(items)
    # Round-trip through msgpack first: the decoder sees what the wire carries (tuples become lists, ...).
    wire_items = msgpack.unpackb(payload, raw=False)["readings"]
    expected = outcome(reference, wire_items)
    got = outcome(lambda: decode_body_columns(payload).columns())
    assert got[0] == expected[0], (got, expected)
    if got[0] == "ok":
        assert same(got[1], expected[1])
    else:
        assert got[1:] == expected[1:]


@pytest.mark.parametrize(
    "value, accepted",
    [
        (1.5, True),
        (None, True),
        (float("nan"), False),
        (float("inf"), False),
        (-float("inf"), False),
        (1e308, True),
        (3, False),
        (True, False),
    ],
)
def test_values_at_the_edge(value, accepted):
    items = [[1, "d", "p", 1e308, "u", "00", ""], [2, "d", "p", value, "u", "00", ""]]
    result = outcome(lambda: decode_body_columns(body_bytes(items)))
    assert (result[0] == "ok") == accepted, result
    if not accepted:
        assert result[1] == "schema" and "reading 1" in result[2]
