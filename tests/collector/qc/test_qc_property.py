"""collector.qc never raises and answers every reading, whatever the readings are."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker_bridge.envelope import Reading
from collector.qc import QualityControl, SeriesState, ThresholdSource
from tests.collector.qc.test_qc_checks import RECEIVED, T0

INT64_MAX = (1 << 63) - 1
CHECK_NAMES = {
    "device_status",
    "missing",
    "timestamp",
    "clock_sync",
    "gross_range",
    "spike",
    "rate_of_change",
    "flat_line",
    "consistency",
}

timestamps = st.one_of(
    st.integers(1, INT64_MAX),  # anything the wire allows
    st.integers(T0 - 3600 * 10**9, T0 + 3600 * 10**9),  # dense around one hour, so windows fill
    st.sampled_from([T0, T0 + 60 * 10**9, RECEIVED + 301 * 10**9, 1]),  # collisions and edges
)
values = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-50, 150),
    st.sampled_from([0.0, 20.0, -0.0, 1e308, -1e308, 5e-324]),
)
readings = st.builds(
    Reading,
    ts_ns=timestamps,
    device=st.sampled_from(["d1", "d2", "x" * 64]),
    parameter=st.sampled_from(["PM2,5", "PM10", "NO2", "NOx", "pH", "Flow", "UNKNOWN", "A"]),
    value=values,
    unit=st.sampled_from(["ug/m3", "-", "m3/h", "", "mg/L"]),
    status=st.sampled_from(["00", "00", "00", "01", "02"]),
    cause=st.one_of(
        st.just(""),
        st.text(max_size=40),
        st.sampled_from(["clock offset +9 s", "clock offset -1e3 ms", "clock unsynchronised", "sentinel -9999.0"]),
    ),
)
SOURCE = ThresholdSource()  # parsing the defaults once: QualityControl only reads it

messages = st.lists(st.tuples(st.sampled_from(["S1", "S2"]), st.lists(readings, max_size=40)), min_size=1, max_size=6)


def check(results, msgs) -> None:
    assert len(results) == len(msgs)
    for res, (_, rs) in zip(results, msgs):
        assert len(res) == len(rs)
        for q in res:
            assert q.flag in (1, 2, 3, 4, 9)
            assert set(q.checks) <= CHECK_NAMES
            if q.flag == 1:
                assert q.checks == () and q.check == ""
            elif q.flag == 2:
                assert q.check == "not_evaluated" and q.checks == ()
            else:
                assert q.check in q.checks and q.cause.startswith(q.check + ":")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msgs=messages, small=st.booleans())
def test_evaluate_never_raises_and_answers_every_reading(msgs, small):
    qc = QualityControl(SOURCE, SeriesState(max_series=3 if small else 1000))
    results = [qc.evaluate(station, rs, RECEIVED) for station, rs in msgs]
    check(results, msgs)
    # the same input in one call answers every reading too
    again = QualityControl(SOURCE, SeriesState(max_series=3 if small else 1000))
    check(again.evaluate_many([(station, rs, RECEIVED) for station, rs in msgs]), msgs)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msgs=messages)
def test_evaluation_is_deterministic(msgs):
    def run():
        qc = QualityControl(SOURCE, SeriesState())
        return [qc.evaluate(station, rs, RECEIVED) for station, rs in msgs]

    assert run() == run()
