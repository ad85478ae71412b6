"""A server run as a child process and judged ready by a probe, not by a sleep.

QuestDB and Mosquitto (and whatever server comes next) differ in how they are
configured and how readiness is seen; starting, waiting, stopping and killing
them is the same, so it lives here once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from os import PathLike
from pathlib import Path
from typing import Self

from supervisor.process import ManagedProcess, wait_until


class ServerProcess:
    """Base of a supervised server; subclasses set ``root``, ``log_path`` and ``name`` and define ``start``."""

    name: str
    root: Path
    log_path: Path
    started_in_s: float | None = None
    _proc: ManagedProcess | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.running

    def _launch(
        self,
        argv: Sequence[str | PathLike[str]],
        ready: Callable[[], bool],
        *,
        what: str,
        timeout: float,
        interval: float,
        stop_timeout: float,
    ) -> None:
        """Start ``argv`` and wait until ``ready()``; a server that never gets ready is stopped, not left behind."""
        t0 = time.monotonic()
        self._proc = ManagedProcess(list(argv), log_path=self.log_path, cwd=self.root, name=self.name).start()
        try:
            wait_until(ready, timeout=timeout, interval=interval, what=what, process=self._proc)
        except BaseException:
            self._proc.stop(timeout=stop_timeout)
            raise
        self.started_in_s = time.monotonic() - t0

    def start(self, timeout: float = 30.0) -> Self:
        raise NotImplementedError

    def stop(self, timeout: float = 30.0) -> int | None:
        """Graceful shutdown (SIGTERM), SIGKILL after ``timeout``. Idempotent."""
        return self._proc.stop(timeout) if self._proc is not None else None

    def kill(self) -> int | None:
        """SIGKILL (crash simulation): whatever the server had not saved is lost."""
        return self._proc.kill() if self._proc is not None else None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
