"""Judgement from the content alone."""

from __future__ import annotations

from broker_bridge.tt10 import read_file
from broker_bridge.tt10.ingest.judge import INTERRUPTED, judge, keys_of
from tests.broker_bridge.tt10.ingest_helpers import fixture_bytes


def read(variation: str):
    name, data = fixture_bytes(variation)
    return read_file(data, name)


def test_complete_accepted_incomplete_held_until_final():
    assert judge(read("canonical")).state == "accepted"
    cut = read("truncated_last_line")
    held = judge(cut)
    assert held.state == "held" and held.readings == () and len(held.refused) == 1
    final = judge(cut, final=True, held_s=600)
    assert final.state == "accepted" and len(final.readings) == 2
    assert final.reasons[0].startswith("held 600 s") and final.reasons[-1].startswith("line 3: ")


def test_interrupted_is_held_and_nothing_readable_is_refused():
    verdict = judge(read("canonical"), interrupted=True)
    assert verdict.state == "held" and verdict.reasons == (INTERRUPTED,)
    assert judge(read("empty_file"), final=True).state == "refused"
    assert judge(read_file("x".encode("utf-16"), "HN_A_B_20260325000500.txt")).state == "refused"


def test_keys_are_parameter_and_time():
    assert keys_of(read("several_times")) == {("PM2,5", t) for t in {r.ts_ns for r in read("several_times").readings}}
