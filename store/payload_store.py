"""The content-addressed file store of rejected payloads too large to keep whole in QuestDB.

The ``rejects`` table keeps the first ``REJECT_HEAD_BYTES`` of every payload
with its size and SHA-256, so no reject can overflow a QuestDB request; the
whole bytes of a larger payload live here, in a file named by its SHA-256.
A file is made durable (fsync of the file, then of the directory) before the
reject row is committed and the message acknowledged, so a crash in between
leaves at worst a file without its row, never a row without its bytes.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
import sys
from collections.abc import Callable, Iterator
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
    """``write_durably`` for several files, all durable once this returns, with the same order: every
    file's bytes durable before its rename, every rename durable before the return. Where the system
    has ``syncfs`` (Linux), each of the two steps is one ``syncfs`` of the file system instead of an
    fsync per file and per directory (measured: 100 files' fsyncs are ~100 journal commits)."""
    if not files:
        return
    temporary = {target: target.with_name(f".{target.name}.{os.getpid()}.partial") for target in files}
    sync_all = _syncfs_of(next(iter(files)))
    for target, data in files.items():
        fd = os.open(temporary[target], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if sync_all is None:
                os.fsync(fd)
        finally:
            os.close(fd)
    if sync_all is not None:
        sync_all()
    for target, tmp in temporary.items():
        os.replace(tmp, target)
    if sync_all is not None:
        sync_all()
    else:
        for folder in {target.parent for target in files}:
            fsync_dir(folder)


def _syncfs_of(path: Path) -> Callable[[], None] | None:
    """A call that makes everything written to ``path``'s file system durable (``syncfs(2)``), or None."""
    syncfs = getattr(_libc(), "syncfs", None) if sys.platform.startswith("linux") else None
    if syncfs is None:
        return None
    folder = path.parent

    def sync() -> None:
        fd = os.open(folder, os.O_RDONLY)
        try:
            if syncfs(fd) != 0:
                error = ctypes.get_errno()
                raise OSError(error, f"syncfs {folder}: {os.strerror(error)}")
        finally:
            os.close(fd)

    return sync


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a rename, a new file or folder) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
