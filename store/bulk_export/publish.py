"""Publishing a day's files so that a reader sees the old set or the new one, never a mix.

``OUT/<day>`` is a symbolic link to ``OUT/.versions/<day>/<generation>/``, a folder holding the
day's files and its ``manifest.json``. A new export builds the next generation beside the current
one (files it does not replace are hard-linked over, not copied), makes every file durable
(``store.payload_store.write_durably``), then swaps the link with one ``rename`` and fsyncs ``OUT``.
The manifest and the files it lists therefore change together. The generation before is kept
(a download in progress may be reading it) and older ones are removed. Exports of one ``OUT``
take turns under an ``flock`` on ``OUT/.lock``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from store.bulk_export.layout import MANIFEST, VERSIONS, LocalDay
from store.payload_store import fsync_dir, write_durably


class PublishError(RuntimeError):
    """The output folder cannot be used as it is (said with the path and what to do)."""


@contextmanager
def locked(out: Path) -> Iterator[None]:
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def current_generation(out: Path, day: LocalDay) -> tuple[int, Path] | None:
    """(generation, its folder) that ``OUT/<day>`` links to, or None before the day's first export."""
    link = out / str(day)
    if not link.is_symlink():
        if link.exists():
            raise PublishError(f"{link} is not a link made by the export; move it away and export again")
        return None
    target = out / os.readlink(link)
    try:
        return int(target.name), target
    except ValueError:
        raise PublishError(f"{link} links to {target}, not to a generation folder; move it away") from None


def read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PublishError(
            f"{path}: cannot read the day's manifest ({exc}); move the day away and export again"
        ) from exc


def new_generation(out: Path, day: LocalDay, previous: int | None) -> tuple[int, Path]:
    generation = (previous or 0) + 1
    parent = out / VERSIONS / str(day)
    parent.mkdir(parents=True, exist_ok=True)
    folder = parent / f"{generation:06d}"
    if folder.exists():  # an export that died before its swap: never linked, nobody reads it
        shutil.rmtree(folder)
    folder.mkdir()
    return generation, folder


def keep_file(old_folder: Path, new_folder: Path, name: str) -> None:
    """A file the new generation keeps as it is: the same inode, no copy."""
    os.link(old_folder / name, new_folder / name)


def write_file(folder: Path, name: str, data: bytes) -> None:
    write_durably(folder / name, data)


def write_manifest(folder: Path, manifest: dict) -> None:
    data = (json.dumps(manifest, ensure_ascii=False, indent=2, sort_keys=False) + "\n").encode("utf-8")
    write_durably(folder / MANIFEST, data)  # fsyncs the folder too: the hard links are durable with it


def swap(out: Path, day: LocalDay, folder: Path) -> None:
    """Point ``OUT/<day>`` at ``folder`` in one rename, durably; then drop generations older than the last."""
    link = out / str(day)
    temporary = out / f".{day}.{os.getpid()}.link"
    if temporary.is_symlink() or temporary.exists():
        temporary.unlink()
    os.symlink(os.path.relpath(folder, out), temporary)
    os.replace(temporary, link)
    fsync_dir(out)
    keep = {folder.name, f"{int(folder.name) - 1:06d}"}
    for old in sorted(folder.parent.iterdir()):
        if old.name not in keep:
            shutil.rmtree(old)
