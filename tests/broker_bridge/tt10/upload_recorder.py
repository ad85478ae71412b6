"""A small real sink for the sources' tests: each upload written into a folder and recorded."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from broker_bridge.tt10.sources.upload import Upload


class RecordingSink:
    """Writes every upload's bytes to ``folder/<n>-<name>`` (fsynced) and keeps the Upload.
    ``refuse`` (a number of takes) makes the next takes raise, as a sink with a full disk would."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.uploads: list[Upload] = []
        self.refuse = 0
        self._lock = threading.Lock()

    def take(self, upload: Upload) -> None:
        with self._lock:
            if self.refuse:
                self.refuse -= 1
                raise OSError("sink refused (test)")
            path = self.folder / f"{len(self.uploads):05d}-{upload.name}"
            with open(path, "wb") as handle:
                handle.write(upload.data)
                handle.flush()
                os.fsync(handle.fileno())
            self.uploads.append(upload)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Upload]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.uploads) >= count:
                    return list(self.uploads)
            time.sleep(0.02)
        raise AssertionError(f"{len(self.uploads)} uploads reached the sink, expected {count}: {self.uploads}")

    def stored(self, index: int) -> bytes:
        return sorted(self.folder.iterdir())[index].read_bytes()
