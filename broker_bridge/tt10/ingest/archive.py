"""Every received file, verbatim, named by its SHA-256: ``<root>/<sha[:2]>/<sha>``.

A file is written to a temporary name, fsynced, renamed into place and its directory fsynced, so
after ``put`` returns it survives a power cut; the same bytes are stored once however often they
arrive. Files are 0600 in 0700 directories (a station's data is not for every local user).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from store.payload_store import fsync_dir, write_all_durably, write_durably


class ArchiveError(OSError):
    """An archived file is missing or no longer has the bytes its name promises."""


class Archive:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path_of(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        """Store ``data`` durably; returns its SHA-256 (hex)."""
        sha256 = hashlib.sha256(data).hexdigest()
        target = self.path_of(sha256)
        if target.exists() and target.stat().st_size == len(data):
            return sha256
        if not target.parent.is_dir():
            target.parent.mkdir(exist_ok=True, mode=0o700)
            fsync_dir(self.root)  # the new sub-folder itself
        write_durably(target, data)
        return sha256

    def put_all(self, datas: list[bytes]) -> list[str]:
        """``put`` for several files, durable together when this returns (``write_all_durably``)."""
        shas = [hashlib.sha256(data).hexdigest() for data in datas]
        new: dict[Path, bytes] = {}
        for sha256, data in zip(shas, datas, strict=True):
            target = self.path_of(sha256)
            if target in new or (target.exists() and target.stat().st_size == len(data)):
                continue
            if not target.parent.is_dir():
                target.parent.mkdir(exist_ok=True, mode=0o700)
                fsync_dir(self.root)
            new[target] = data
        if new:
            write_all_durably(new)
        return shas

    def get(self, sha256: str) -> bytes:
        try:
            data = self.path_of(sha256).read_bytes()
        except FileNotFoundError as exc:
            raise ArchiveError(f"{self.path_of(sha256)}: archived file missing") from exc
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ArchiveError(f"{self.path_of(sha256)}: the archived bytes no longer match their SHA-256")
        return data

    def remove(self, sha256: str) -> bool:
        try:
            self.path_of(sha256).unlink()
        except FileNotFoundError:
            return False
        return True
