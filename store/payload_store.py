"""The content-addressed file store of rejected payloads too large to keep whole in QuestDB.

The ``rejects`` table keeps the first ``REJECT_HEAD_BYTES`` of every payload
with its size and SHA-256, so no reject can overflow a QuestDB request; the
whole bytes of a larger payload live here, in a file named by its SHA-256.
A file is made durable (fsync of the file, then of the directory) before the
reject row is committed and the message acknowledged, so a crash in between
leaves at worst a file without its row, never a row without its bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

REJECT_HEAD_BYTES = 64 * 1024  # what the rejects table keeps of each payload (base64: ~87 KB per row)
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_READ_CHUNK = 1 << 20


class PayloadStoreError(RuntimeError):
    """The store's directory cannot be used, said with the path and the fix."""


class PayloadStore:
    """Files named by the SHA-256 of their content, mode 0600 in a directory of mode 0700."""

    def __init__(self, root: str | Path, writable: bool = True) -> None:
        self.root = Path(root)
        if not writable:  # a reader (rejects export) needs only what is there
            return
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise PayloadStoreError(
                f"--reject-store {self.root}: cannot create it ({exc}); give a writable directory"
            ) from exc
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise PayloadStoreError(f"--reject-store {self.root}: not writable; give a directory this user may write")

    def path_of(self, sha256: str) -> Path:
        if not _SHA256_HEX.match(sha256):
            raise ValueError(f"not a SHA-256 in lower-case hex: {sha256!r}")
        return self.root / sha256

    def has(self, sha256: str) -> bool:
        return self.path_of(sha256).is_file()

    def put(self, payload: bytes) -> str:
        """Store ``payload`` durably under its SHA-256 (once: the same bytes are the same file); return the hash."""
        sha256 = hashlib.sha256(payload).hexdigest()
        final = self.path_of(sha256)
        if final.is_file() and final.stat().st_size == len(payload):
            return sha256
        write_durably(final, payload)
        return sha256

    def read_chunks(self, sha256: str, chunk: int = _READ_CHUNK) -> Iterator[bytes]:
        """The stored bytes in chunks (a payload may be far larger than is wise to hold at once)."""
        with self.path_of(sha256).open("rb") as handle:
            while block := handle.read(chunk):
                yield block


def write_durably(target: Path, data: bytes) -> None:
    """``data`` into ``target`` so that it survives a power cut once this returns: a temporary file
    beside it (0600), fsynced, renamed into place, and the directory fsynced (the rename itself)."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    fsync_dir(target.parent)


def write_all_durably(files: dict[Path, bytes]) -> None:
    """``write_durably`` for several files, durable together once this returns: every temporary file
    written before any is fsynced (the file system can write them back together instead of one journal
    commit each), then renamed, then each directory fsynced once."""
    opened: list[tuple[int, Path, Path]] = []
    try:
        for target, data in files.items():
            tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            opened.append((fd, tmp, target))
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        for fd, _, _ in opened:
            os.fsync(fd)
    finally:
        for fd, _, _ in opened:
            os.close(fd)
    for _, tmp, target in opened:
        os.replace(tmp, target)
    for folder in {target.parent for target in files}:
        fsync_dir(folder)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a rename, a new file or folder) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
