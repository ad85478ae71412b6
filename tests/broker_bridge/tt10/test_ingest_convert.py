"""The builder: judgement, holds, duplicates, supersession, and sealing once into the outbox."""

from __future__ import annotations

import time

import pytest

from broker_bridge.envelope import decode_body, open_envelope, verify
from broker_bridge.keys import write_new_key
from broker_bridge.session import BrokerAddress
from broker_bridge.tt10 import read_file
from broker_bridge.tt10.ingest.archive import Archive
from broker_bridge.tt10.ingest.convert import Converter
from broker_bridge.tt10.ingest.ledger import Ledger
from broker_bridge.tt10.ingest.settings import IngestSettings, StationSettings
from broker_bridge.tt10.ingest.sink import Tt10Sink
from edge_agent.outbox import Outbox
from tests.broker_bridge.tt10.ingest_helpers import cycle_file, fixture_bytes, upload

S = "HN_BKHN_KHIKXQ"
T0 = 1774371900 * 10**9  # 2026-03-24T17:05:00Z, the fixtures' 20260325000500 in Vietnam


class Rig:
    def __init__(self, tmp_path, **settings):
        self.settings = IngestSettings(root=tmp_path, broker=BrokerAddress("127.0.0.1", 1), **settings)
        self.key = write_new_key(tmp_path / "bridge.key")
        self.outboxes: dict[str, Outbox] = {}
        self.open()

    def open(self):
        self.archive = Archive(self.settings.archive_dir)
        self.ledger = Ledger(self.settings.ledger_path)
        self.sink = Tt10Sink(self.archive, self.ledger)
        self.converter = Converter(self.settings, self.archive, self.ledger, self.key, self.outbox)

    def outbox(self, station):
        if station not in self.outboxes:
            self.outboxes[station] = Outbox(self.settings.outbox_dir / f"{station}.sqlite", station)
        return self.outboxes[station]

    def take(self, name, data, **kw):
        self.sink.take(upload(S, name, data, **kw))
        self.converter.step()
        return self.ledger.files()[-1]

    def bodies(self, station=S):
        box = self.outbox(station)
        out = []
        for batch in box.unacked(limit=1000):
            envelope = open_envelope(batch.payload)
            verify(envelope, self.key.public_key)
            out.append(decode_body(envelope.body))
        return out


def test_complete_file_is_accepted_and_sealed_with_its_provenance(tmp_path):
    rig = Rig(tmp_path)
    name, data = fixture_bytes("canonical")
    row = rig.take(name, data)
    assert (row.state, row.readings, row.refused_lines, row.reasons) == ("accepted", 4, 0, ())
    assert row.converted_ns is not None and (row.first_seq, row.last_seq) == (1, 1)
    (body,) = rig.bodies()
    assert (body.source, body.file_sha256, body.station) == ("tt10", row.sha256, S)
    assert [(r.device, r.parameter, r.value, r.unit, r.status, r.ts_ns) for r in body.readings] == [
        ("tt10", "PM2,5", 23.4, "ug/m3", "00", T0),
        ("tt10", "PM10", 41.0, "ug/m3", "00", T0),
        ("tt10", "SO2", 12.5, "ug/m3", "01", T0),
        ("tt10", "CO", None, "mg/m3", "02", T0),
    ]


def test_refused_lines_are_recorded_with_number_raw_text_and_reason(tmp_path):
    rig = Rig(tmp_path)
    name, data = fixture_bytes("status_03")
    row = rig.take(name, data)
    assert row.state == "accepted" and row.refused_lines >= 1
    refused = rig.ledger.refused_of(row.id)
    assert any("03" in r.raw and "not a TT10 status code" in r.reason for r in refused)
    assert any(reason.startswith(f"line {refused[0].line}: ") for reason in row.reasons)
    assert sum(len(b.readings) for b in rig.bodies()) == row.readings


def test_cut_file_is_held_then_replaced_by_the_whole_one(tmp_path):
    rig = Rig(tmp_path)
    name, whole = fixture_bytes("canonical")
    cut = whole[: whole.index(b"SO2") + 6]
    held = rig.take(name, cut)
    assert held.state == "held" and held.hold_until_ns > held.received_ns
    assert any("cut off" in r for r in held.reasons)
    assert rig.bodies() == []  # nothing of it is sent while it is held
    full = rig.take(name, whole)
    assert full.state == "accepted" and full.readings == 4
    assert rig.ledger.get(held.id).state == "superseded" and rig.ledger.get(held.id).superseded_by == full.id
    assert [len(b.readings) for b in rig.bodies()] == [4]
    rig.converter.step(now_ns=time.time_ns() + 10**12)  # long after the hold would have ended
    assert rig.ledger.get(held.id).state == "superseded" and [len(b.readings) for b in rig.bodies()] == [4]


def test_after_its_wait_a_held_file_gives_its_whole_lines_and_refuses_the_cut_one(tmp_path):
    rig = Rig(tmp_path, hold_s=60)
    name, data = fixture_bytes("truncated_last_line")
    held = rig.take(name, data)
    assert held.state == "held"
    rig.converter.step(now_ns=held.received_ns + 59 * 10**9)
    assert rig.ledger.get(held.id).state == "held"
    rig.converter.step(now_ns=held.received_ns + 61 * 10**9)
    taken = rig.ledger.get(held.id)
    assert (taken.state, taken.readings, taken.refused_lines) == ("accepted", 2, 1)
    assert taken.reasons[0].startswith("held 60 s")
    (cut,) = rig.ledger.refused_of(held.id)
    assert cut.raw == "NO2\t18" and "interrupted" in cut.reason
    assert [r.parameter for b in rig.bodies() for r in b.readings] == ["PM2,5", "PM10"]


def test_interrupted_upload_is_held_even_when_it_ends_on_a_line_break(tmp_path):
    rig = Rig(tmp_path)
    name, whole = fixture_bytes("canonical")
    row = rig.take(name, whole[: whole.index(b"SO2")], interrupted=True)
    assert row.state == "held" and any("transport" in r for r in row.reasons)


def test_an_accepted_file_holding_every_reading_of_a_held_one_replaces_it(tmp_path):
    rig = Rig(tmp_path)
    name, whole = fixture_bytes("canonical")
    held = rig.take(name, whole[: whole.index(b"SO2") + 6])
    later = rig.take(name.replace("000500", "000501"), whole)  # another name, same content
    assert later.state == "accepted" and rig.ledger.get(held.id).state == "superseded"


def test_identical_bytes_again_are_recorded_as_a_duplicate_and_never_sealed_twice(tmp_path):
    rig = Rig(tmp_path)
    name, data = fixture_bytes("canonical")
    first = rig.take(name, data)
    again = rig.take(name, data)
    assert again.state == "duplicate" and again.duplicate_of == first.id and again.converted_ns is None
    assert len(rig.bodies()) == 1


def test_empty_file_is_held_then_refused(tmp_path):
    rig = Rig(tmp_path, hold_s=1)
    row = rig.take("HN_BKHN_KHIKXQ_20260325000500.txt", b"")
    assert row.state == "held"
    rig.converter.step(now_ns=row.received_ns + 2 * 10**9)
    done = rig.ledger.get(row.id)
    assert done.state == "refused" and "the file is empty" in done.reasons[0]
    assert rig.bodies() == []


def test_utf16_file_is_refused_at_once(tmp_path):
    rig = Rig(tmp_path)
    row = rig.take("HN_BKHN_KHIKXQ_20260325000500.txt", "PM10\t41.0".encode("utf-16"))
    assert row.state == "refused" and any("UTF-16" in r for r in row.reasons)


def test_a_station_the_bridge_does_not_serve_is_refused_but_archived(tmp_path):
    rig = Rig(tmp_path, stations={"OTHER_1": StationSettings()})
    name, data = fixture_bytes("canonical")
    row = rig.take(name, data)
    assert row.state == "refused" and "not served by this bridge" in row.reasons[0]
    assert rig.archive.get(row.sha256) == data


def test_device_id_is_per_station(tmp_path):
    rig = Rig(tmp_path, stations={S: StationSettings(device="logger1")})
    name, data = fixture_bytes("canonical")
    rig.take(name, data)
    assert {r.device for b in rig.bodies() for r in b.readings} == {"logger1"}


def test_a_large_file_is_split_into_batches_that_all_name_it(tmp_path):
    rig = Rig(tmp_path, max_readings_per_batch=3)
    name, data = cycle_file(S, T0, {f"P{i}": float(i) for i in range(7)})
    row = rig.take(name, data)
    assert (row.first_seq, row.last_seq) == (1, 3)
    assert [len(b.readings) for b in rig.bodies()] == [3, 3, 1]
    assert {b.file_sha256 for b in rig.bodies()} == {row.sha256}


def test_a_kill_between_sealing_and_marking_seals_nothing_twice(tmp_path):
    rig = Rig(tmp_path)
    name, data = fixture_bytes("canonical")
    rig.sink.take(upload(S, name, data))
    rig.converter.judge_received()
    (row,) = rig.ledger.to_convert()
    # What the kill leaves behind: the outbox committed the file, the ledger never heard of it.
    readings = [r.to_reading("tt10") for r in read_file(data, name).readings]
    assert rig.outbox(S).seal_file(rig.key, readings, source="tt10", file_sha256=row.sha256) == (1, 1, True)
    rig.ledger.close()
    rig.open()  # the restart
    rig.converter.step()
    assert rig.ledger.get(row.id).converted_ns is not None
    assert len(rig.bodies()) == 1


@pytest.mark.parametrize("variation", ["name_time_mismatch"])
def test_name_time_mismatch_is_held(tmp_path, variation):
    rig = Rig(tmp_path)
    name, data = fixture_bytes(variation)
    row = rig.take(name, data)
    assert row.state == "held" and any("apart" in r for r in row.reasons)
