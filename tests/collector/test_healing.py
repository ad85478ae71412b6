"""Gaps are asked for again with back-off until filled or lost at source; committed ranges merge."""

from __future__ import annotations

from broker_bridge.station_messages import ResendReport
from collector.healing import FILLED, LOST_AT_SOURCE, GapBook, HealingPolicy
from collector.sequence import CommittedRanges, SequenceTracker


def test_committed_ranges_merge_and_say_what_is_missing():
    ranges = CommittedRanges()
    for seq in (1, 2, 3, 5, 9, 10, 4):
        ranges.add(seq)
    assert ranges.ranges() == [(1, 5), (9, 10)]
    assert ranges.missing(1, 12) == [(6, 8), (11, 12)]
    ranges.add_range(6, 8)
    assert ranges.ranges() == [(1, 10)] and 7 in ranges and 11 not in ranges


def book_at(clock):
    sequences = SequenceTracker(None)
    return sequences, GapBook(sequences, HealingPolicy(first_retry_s=10, max_retry_s=25), clock=lambda: clock[0])


def test_a_gap_is_asked_for_again_with_back_off_until_filled():
    clock = [0.0]
    sequences, book = book_at(clock)
    sequences.merge_ledger([("S", 1, 3), ("S", 8, 9)])
    book.recorded("S", 4, 7, 123)
    assert book.due() == []  # asked once when it was seen
    clock[0] = 10
    assert book.due() == [("S", 4, 7)]
    clock[0] = 25
    assert book.due() == []  # the next ask waits twice as long
    clock[0] = 30
    sequences.merge_ledger([("S", 5, 5)])
    assert book.due() == [("S", 4, 4), ("S", 6, 7)]  # only what is still missing
    clock[0] = 54
    assert book.due() == []
    clock[0] = 55
    assert book.due() == [("S", 4, 4), ("S", 6, 7)]  # capped at 25 s
    sequences.merge_ledger([("S", 4, 7)])
    book.settle()
    assert book.open_count() == 0
    [(symbols, columns, ts)] = book.closing_rows()
    assert symbols["state"] == FILLED and columns["first_missing"] == 4 and ts == 123


def test_what_the_station_no_longer_holds_closes_the_gap_as_lost_at_source_with_its_range():
    clock = [0.0]
    sequences, book = book_at(clock)
    book.load([("S", 10, 20, 99)])  # open at the last stop: asked for at once
    assert book.due() == [("S", 10, 20)]
    sequences.merge_ledger([("S", 13, 20)])
    book.report(ResendReport("S", 1, 1, 10, 20, 8, ((10, 11),)))
    book.settle()
    assert book.open_count() == 1  # 12 is neither here nor said lost
    book.report(ResendReport("S", 1, 2, 12, 12, 0, ((12, 12),)))
    book.settle()
    [(symbols, columns, ts)] = book.closing_rows()
    assert symbols["state"] == LOST_AT_SOURCE and columns["lost"] == 3
    assert columns["detail"] == "the station no longer holds 10..12"
    book.written(book.closing_rows())
    assert book.closing_rows() == []
