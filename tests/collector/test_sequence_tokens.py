"""Several flushes open at once: the next flush is judged while the previous one commits."""

from __future__ import annotations

import pytest

from collector.sequence import DUPLICATE, NEW, SEQUENCE_REUSE, SequenceTracker

T = 1_763_700_000_000_000_000


def test_a_younger_flush_sees_the_older_ones_provisional_numbers():
    tracker = SequenceTracker(None)
    first, second = tracker.begin_flush(), tracker.begin_flush()
    assert tracker.judge("S1", 1, "aa", T, first).kind == NEW
    assert tracker.judge("S1", 1, "aa", T, second).kind == DUPLICATE  # a redelivery while the first commits
    assert tracker.judge("S1", 1, "bb", T, second).kind == SEQUENCE_REUSE
    verdict = tracker.judge("S1", 2, "cc", T, second)
    assert verdict.kind == NEW and verdict.gap is None  # 1 is provisional in the first flush, not missing
    tracker.commit_flush(first)
    tracker.commit_flush(second)
    assert tracker.highest == {"S1": 2}


def test_aborting_a_flush_aborts_the_younger_ones_judged_against_it():
    tracker = SequenceTracker(None)
    first, second = tracker.begin_flush(), tracker.begin_flush()
    tracker.judge("S1", 1, "aa", T, first)
    tracker.judge("S1", 2, "bb", T, second)
    tracker.abort_flush(first)
    retry = tracker.begin_flush()
    assert tracker.judge("S1", 1, "aa", T, retry).kind == NEW  # nothing of either flush was kept
    assert tracker.judge("S1", 2, "bb", T, retry).kind == NEW
    tracker.commit_flush(retry)
    assert tracker.highest == {"S1": 2}


def test_flushes_commit_oldest_first():
    tracker = SequenceTracker(None)
    first, second = tracker.begin_flush(), tracker.begin_flush()
    with pytest.raises(RuntimeError, match="oldest first"):
        tracker.commit_flush(second)
    tracker.commit_flush(first)
    tracker.commit_flush(second)


def test_a_gap_is_measured_against_committed_and_provisional_numbers():
    tracker = SequenceTracker(None)
    first = tracker.begin_flush()
    tracker.judge("S1", 1, "aa", T, first)
    tracker.commit_flush(first)
    second, third = tracker.begin_flush(), tracker.begin_flush()
    assert tracker.judge("S1", 3, "cc", T, second).gap == (2, 2)
    assert tracker.judge("S1", 6, "dd", T, third).gap == (4, 5)
