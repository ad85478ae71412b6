"""Reads an SQLite write-ahead log before SQLite does, to report a torn tail.

After a power cut SQLite silently ignores WAL frames past the last valid
commit (a torn write fails the frame checksum). That is the right recovery,
but the regulator's question "what was cut?" deserves an answer, so the
outbox measures it first: how many bytes and frames follow the last valid
commit frame. Format: https://www.sqlite.org/fileformat2.html#walformat
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

WAL_HEADER = 32
FRAME_HEADER = 24
MAGIC_LE, MAGIC_BE = 0x377F0682, 0x377F0683


@dataclass(frozen=True)
class WalReport:
    total_bytes: int
    committed_frames: int
    cut_frames: int  # frames after the last valid commit: never committed, or torn
    cut_bytes: int
    reason: str  # "" when nothing was cut

    @property
    def cut(self) -> bool:
        return self.cut_bytes > 0


def _checksum(data: bytes, s0: int, s1: int, big_endian: bool) -> tuple[int, int]:
    words = struct.unpack((">" if big_endian else "<") + f"{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def inspect_wal(path: Path) -> WalReport | None:
    """None when there is no WAL file; otherwise what a recovery would keep and cut."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    size = len(data)
    if size == 0:
        return WalReport(0, 0, 0, 0, "")
    if size < WAL_HEADER:
        return WalReport(size, 0, 0, size, "WAL header torn")
    magic, _version, page_size, _ckpt, salt1, salt2, c0, c1 = struct.unpack(">8I", data[:WAL_HEADER])
    if magic not in (MAGIC_LE, MAGIC_BE):
        return WalReport(size, 0, 0, size, "WAL header garbled (bad magic)")
    big_endian = magic == MAGIC_BE
    if _checksum(data[:24], 0, 0, big_endian) != (c0, c1):
        return WalReport(size, 0, 0, size, "WAL header garbled (bad checksum)")
    frame_size = FRAME_HEADER + page_size
    s0, s1 = c0, c1
    offset, frames, committed_frames, committed_end = WAL_HEADER, 0, 0, WAL_HEADER
    stop = ""
    while offset + frame_size <= size:
        header = data[offset : offset + FRAME_HEADER]
        _page_no, db_size, f_salt1, f_salt2, f0, f1 = struct.unpack(">6I", header)
        if (f_salt1, f_salt2) != (salt1, salt2):
            stop = "stale"  # frames of an earlier WAL generation: normal after a checkpoint
            break
        s0, s1 = _checksum(header[:8], s0, s1, big_endian)
        s0, s1 = _checksum(data[offset + FRAME_HEADER : offset + frame_size], s0, s1, big_endian)
        if (s0, s1) != (f0, f1):
            stop = f"frame {frames + 1} garbled (bad checksum)"
            break
        frames += 1
        offset += frame_size
        if db_size:  # a commit frame ends a transaction
            committed_frames, committed_end = frames, offset
    if not stop and offset < size:
        stop = f"last frame torn ({size - offset} of {frame_size} bytes)"
    uncommitted = frames - committed_frames
    if stop in ("", "stale"):
        if not uncommitted:
            return WalReport(size, committed_frames, 0, 0, "")
        return WalReport(
            size,
            committed_frames,
            uncommitted,
            offset - committed_end,
            f"{uncommitted} frames of an unfinished transaction",
        )
    cut_bytes = size - committed_end
    return WalReport(size, committed_frames, -(-cut_bytes // frame_size), cut_bytes, stop)
