"""The ledger: one row per upload, its moves, what the warehouse has seen, and retention."""

from __future__ import annotations

from broker_bridge.tt10.ingest.ledger import ACCEPTED, HELD, Ledger, RefusedRow
from tests.broker_bridge.tt10.ingest_helpers import upload

DAY_NS = 86_400 * 10**9


def test_rows_survive_a_reopen_with_their_refused_lines(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    file_id = ledger.record(upload("ST_A", "a.txt", b"x"), "aa" * 32)
    ledger.decide(file_id, HELD, ["cut"], refused=[RefusedRow(3, "NO2\t18", "cut off")], hold_until_ns=5)
    ledger.close()
    again = Ledger(tmp_path / "l.sqlite")
    row = again.get(file_id)
    assert (row.state, row.reasons, row.refused_lines, row.hold_until_ns) == (HELD, ("cut",), 1, 5)
    assert again.refused_of(file_id) == [RefusedRow(3, "NO2\t18", "cut off")]
    assert again.due_holds(4) == [] and [r.id for r in again.due_holds(5)] == [file_id]


def test_a_report_is_due_again_when_the_row_changed_after_it_was_read(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    file_id = ledger.record(upload("ST_A", "a.txt", b"x"), "aa" * 32)
    assert ledger.report_due() == []  # a received file is not a receipt yet
    ledger.decide(file_id, ACCEPTED, [], readings=4)
    seen = ledger.report_due()
    ledger.mark_converted(file_id, 1, 1)  # changes after the warehouse read it
    ledger.mark_reported(seen)
    assert [r.converted_ns is not None for r in ledger.report_due()] == [True]
    ledger.mark_reported(ledger.report_due())
    assert ledger.report_due() == []


def test_prune_forgets_only_finished_old_files_and_names_the_bytes_no_row_needs(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    old = upload("ST_A", "a.txt", b"x")
    done = ledger.record(old, "aa" * 32)
    ledger.decide(done, ACCEPTED, [], readings=1)
    ledger.mark_converted(done, 1, 1)
    unconverted = ledger.record(old, "bb" * 32)
    ledger.decide(unconverted, ACCEPTED, [], readings=1)
    held = ledger.record(old, "cc" * 32)
    ledger.decide(held, HELD, ["cut"], hold_until_ns=1)
    ledger.mark_reported(ledger.report_due())
    assert ledger.prune(old.received_ns) == []  # nothing is older than the cut-off yet
    assert ledger.prune(old.received_ns + 61 * DAY_NS) == ["aa" * 32]
    assert sorted(r.id for r in ledger.files()) == [unconverted, held]


def test_moves_in_one_transaction_are_committed_together_or_not_at_all(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    a = ledger.record(upload("ST_A", "a.txt", b"a"), "aa" * 32)
    b = ledger.record(upload("ST_A", "b.txt", b"b"), "bb" * 32)
    try:
        with ledger.transaction():
            ledger.decide(a, ACCEPTED, [], readings=1)
            assert ledger.get(a).state == ACCEPTED  # a later judgement of the round sees it
            raise RuntimeError("killed mid-round")
    except RuntimeError:
        pass
    assert [ledger.get(i).state for i in (a, b)] == ["received", "received"]
    with ledger.transaction():
        ledger.decide(a, ACCEPTED, [], readings=1)
        ledger.decide(b, HELD, ["cut"], hold_until_ns=1)
    ledger.close()
    again = Ledger(tmp_path / "l.sqlite")
    assert [again.get(i).state for i in (a, b)] == [ACCEPTED, HELD]


def test_record_all_gives_each_upload_its_row(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    ids = ledger.record_all([(upload("ST_A", f"{i}.txt", b"x"), f"{i:02d}" * 32) for i in range(5)])
    assert [ledger.get(i).name for i in ids] == [f"{i}.txt" for i in range(5)]
