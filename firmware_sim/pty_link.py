"""A serial line made of a pseudo-terminal pair, for simulated serial devices.

The simulator keeps the *master* side; the *slave* side (``/dev/pts/N``) is
what the agent opens, exactly like a USB-RS485 adapter's ``/dev/ttyUSB0``.
When the station file names a path (``port: /tmp/quantrac-sim/bus0``), that
path becomes a symlink to the slave, replaced atomically, so the agent finds
the device where the station file says it is. ``disconnect()`` closes the
pair and removes the link (a USB adapter pulled out): the agent's reads fail;
``connect()`` makes a new pair behind the same path (plugged back in, maybe
as another /dev/pts/N).

The simulator also holds the slave side open: while no process has the slave
open, reads on the master fail with EIO on Linux, and a master with nothing
to read must just wait. The slave is put into raw mode at once, so nothing
the agent writes is echoed back or has its line endings translated.
"""

from __future__ import annotations

import asyncio
import os
import tty
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("firmware_sim.pty")


class PtyLink:
    def __init__(
        self,
        link_path: str | os.PathLike[str] | None,
        on_data: Callable[[bytes], None],
        *,
        name: str = "",
        logger: Any = None,
    ) -> None:
        self.link_path = Path(link_path) if link_path is not None else None
        self.log = logger if logger is not None else log
        self.on_data = on_data
        self.name = name
        self.master: int | None = None
        self._slave: int | None = None
        self.slave_path: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.connects = 0

    @property
    def connected(self) -> bool:
        return self.master is not None

    @property
    def path(self) -> str:
        """What a master should open: the symlink if there is one, else the pty itself."""
        if self.link_path is not None:
            return str(self.link_path)
        if self.slave_path is None:
            raise RuntimeError("not connected")
        return self.slave_path

    def connect(self) -> None:
        if self.master is not None:
            return
        self._loop = asyncio.get_running_loop()
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self.master, self._slave = master, slave
        self.slave_path = os.ttyname(slave)
        if self.link_path is not None:
            self.link_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.link_path.with_name(f".{self.link_path.name}.{os.getpid()}.tmp")
            if tmp.is_symlink():
                tmp.unlink()
            os.symlink(self.slave_path, tmp)
            os.replace(tmp, self.link_path)  # atomic: a master never sees the path missing while we move it
        self._loop.add_reader(master, self._readable)
        self.connects += 1
        self.log.info("sim.pty_ready", link=self.name, path=self.path, pty=self.slave_path)

    def disconnect(self) -> None:
        if self.master is None:
            return
        assert self._loop is not None
        self._loop.remove_reader(self.master)
        if (
            self.link_path is not None
            and self.link_path.is_symlink()
            and os.readlink(self.link_path) == self.slave_path
        ):
            self.link_path.unlink()
        for fd in (self.master, self._slave):
            if fd is not None:
                os.close(fd)
        self.log.info("sim.pty_closed", link=self.name, pty=self.slave_path)
        self.master = self._slave = None

    def write(self, data: bytes) -> None:
        if self.master is None or not data:
            return
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.master, view)
            except BlockingIOError:
                # A reply is at most a few hundred bytes and the pty buffer is 4 KiB;
                # a master that stopped reading just loses the rest, as on a real line.
                self.log.warning("sim.pty_overflow", link=self.name, dropped=len(view))
                return
            view = view[n:]

    def _readable(self) -> None:
        assert self.master is not None
        try:
            data = os.read(self.master, 4096)
        except BlockingIOError:
            return  # woken for nothing; the next readiness brings the bytes
        if data:
            self.on_data(data)
