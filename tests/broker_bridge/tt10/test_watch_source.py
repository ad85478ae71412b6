"""Watch mode: a province's drop folders read in place, every file taken exactly once."""

from __future__ import annotations

import os
import time
from pathlib import Path

from broker_bridge.tt10.sources.watch import Watcher, WatchSettings
from tests.broker_bridge.tt10.upload_recorder import RecordingSink

OLD = time.time_ns() - 3600 * 10**9  # an hour ago: long settled


def drop(root: Path, rel: str, data: bytes | None = None, *, mtime_ns: int | None = OLD) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if data is not None else f"PM2,5\t1\tug/m3\t20260325000500\t00\r\n# {rel}\r\n".encode())
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def watcher(tmp_path: Path, sink: RecordingSink, **settings) -> Watcher:
    base = {
        "root": tmp_path / "drop",
        "memory": tmp_path / "state" / "watch.sqlite",
        "settle_s": 0.5,
        "interval_s": 0.1,
    }
    return Watcher(WatchSettings(**(base | settings)), sink)


LAYOUTS = [
    "HN_AIR_1/HN_AIR_1_20260325000500.txt",  # flat
    "HN_AIR_1/20260325/HN_AIR_1_20260325001000.txt",  # day folders
    "HN_WW_2/2026/03/25/HN_WW_2_20260325000500.TXT",  # nested, upper-case extension
    "HN_WW_2/2026/Thang03/20260325/HN_WW_2_20260325001000.txt",
    "Trạm 3/HN_ST_3_20260325000500.txt",  # mapped: a folder name that is not an id
]
IGNORED = [
    "HN_AIR_1/TXT_mov/HN_AIR_1_20260324000500.txt",  # a receiver's "processed" folder
    "HN_AIR_1/2026/03/notes.txt",  # not a day folder
    "HN_AIR_1/20260325/readme.pdf",
    "HN_AIR_1/20260325/.HN_AIR_1_20260325001500.txt",  # a hidden temporary file
    "Bad Folder/HN_X_20260325000500.txt",  # not an id and not mapped
]


def test_every_layout_is_taken_once_with_its_station_and_the_rest_is_left(tmp_path):
    root = tmp_path / "drop"
    for rel in LAYOUTS + IGNORED:
        drop(root, rel)
    sink = RecordingSink(tmp_path / "sink")
    w = watcher(tmp_path, sink, stations={"Trạm 3": "HN_ST_3"})
    assert w.scan_once().taken == len(LAYOUTS)
    assert w.scan_once().taken == 0  # a second scan takes nothing again
    w.memory.close()
    by_path = {u.path: u for u in sink.uploads}
    assert sorted(by_path) == sorted(LAYOUTS)
    for rel, upload in by_path.items():
        assert upload.data == (root / rel).read_bytes() and upload.name == Path(rel).name
        assert (upload.transport, upload.interrupted, upload.account) == ("watch", False, f"watch:{root}")
        assert upload.received_ns == OLD
    assert by_path["Trạm 3/HN_ST_3_20260325000500.txt"].station == "HN_ST_3"
    assert by_path["HN_WW_2/2026/03/25/HN_WW_2_20260325000500.TXT"].station == "HN_WW_2"
    assert all((root / rel).exists() for rel in LAYOUTS)  # never moved or deleted


def test_files_written_while_the_watcher_was_down_are_taken_after_the_restart_and_nothing_twice(tmp_path):
    root = tmp_path / "drop"
    sink = RecordingSink(tmp_path / "sink")
    first = [drop(root, f"HN_AIR_1/2026/03/25/HN_AIR_1_202603250{i}0000.txt") for i in range(3)]
    w = watcher(tmp_path, sink).start()
    sink.wait_for(3)
    w.stop()
    later = [drop(root, f"HN_AIR_1/2026/03/26/HN_AIR_1_202603260{i}0000.txt") for i in range(4)]
    later.append(drop(root, "HN_WW_2/20260326/HN_WW_2_20260326000000.txt"))
    w = watcher(tmp_path, sink).start()  # a new process: only the durable memory survives
    sink.wait_for(8)
    time.sleep(0.5)  # a few more scans
    w.stop()
    names = [u.name for u in sink.uploads]
    assert sorted(names) == sorted(p.name for p in first + later) and len(names) == len(set(names)) == 8


def test_a_file_still_growing_is_taken_only_once_settled_with_its_whole_bytes(tmp_path):
    root = tmp_path / "drop"
    sink = RecordingSink(tmp_path / "sink")
    w = watcher(tmp_path, sink, settle_s=0.6)
    path = drop(root, "HN_AIR_1/HN_AIR_1_20260325000500.txt", b"PM2,5\t1\tug/m3\t2026032", mtime_ns=None)
    assert (w.scan_once().taken, w.scan_once().unsettled) == (0, 1)
    time.sleep(0.3)
    with open(path, "ab") as handle:
        handle.write(b"5000500\t00\r\n")  # the province's server is still writing
    assert w.scan_once().taken == 0
    time.sleep(0.4)  # 0.7 s since the first write, 0.4 s since the last
    assert w.scan_once().taken == 0
    time.sleep(0.4)
    assert w.scan_once().taken == 1
    w.memory.close()
    (upload,) = sink.uploads
    assert upload.data == b"PM2,5\t1\tug/m3\t20260325000500\t00\r\n"


def test_a_touched_file_is_not_taken_again_a_rewritten_one_is(tmp_path):
    root = tmp_path / "drop"
    sink = RecordingSink(tmp_path / "sink")
    w = watcher(tmp_path, sink)
    path = drop(root, "HN_AIR_1/HN_AIR_1_20260325000500.txt", b"first\r\n")
    assert w.scan_once().taken == 1
    os.utime(path, ns=(OLD + 10**9, OLD + 10**9))  # touched, same bytes
    assert w.scan_once().taken == 0
    drop(root, "HN_AIR_1/HN_AIR_1_20260325000500.txt", b"first\r\nand the rest\r\n", mtime_ns=OLD + 2 * 10**9)
    assert w.scan_once().taken == 1  # the province's server replaced it (a re-upload): the sink judges
    w.memory.close()
    assert [u.data for u in sink.uploads] == [b"first\r\n", b"first\r\nand the rest\r\n"]


def test_a_refusing_sink_leaves_the_file_for_the_next_scan(tmp_path):
    root = tmp_path / "drop"
    sink = RecordingSink(tmp_path / "sink")
    w = watcher(tmp_path, sink)
    drop(root, "HN_AIR_1/HN_AIR_1_20260325000500.txt")
    sink.refuse = 1
    first = w.scan_once()
    assert (first.taken, first.failed) == (0, 1)
    assert w.scan_once().taken == 1
    w.memory.close()
    assert len(sink.uploads) == 1
