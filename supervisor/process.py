"""Small, stdlib-only helpers to run and supervise external server processes.

Used by :mod:`store.questdb_server` and :mod:`broker_bridge.mosquitto_server`
(and through them by the demo and the test-suite).  Nothing here knows about
QuestDB or Mosquitto.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1


# --------------------------------------------------------------------------- ports


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """Return ``n`` distinct TCP ports that were free on ``host`` a moment ago.

    The ports come from outside the kernel's ephemeral range: a port taken
    from inside it (as binding port 0 does) can be handed to any outgoing
    connection between this call and the server's bind, which CI saw happen
    ("cannot listen on 127.0.0.1:33999"). All sockets are held open until
    every port is chosen, so the ports are distinct from each other; another
    process that also picks ports can still race, and servers started
    through this package fail loudly if that happens.
    """
    socks: list[socket.socket] = []
    low, high = _ephemeral_range()
    pick = random.SystemRandom()
    try:
        attempts = 0
        while len(socks) < n and attempts < 1000:
            attempts += 1
            port = pick.randrange(10_000, 65_536)
            if low <= port <= high:
                continue
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((host, port))
            except OSError:
                s.close()
                continue
            socks.append(s)
        if len(socks) < n:
            raise OSError(f"found only {len(socks)} of {n} free TCP ports on {host} outside the ephemeral range")
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _ephemeral_range() -> tuple[int, int]:
    """The ports the kernel gives outgoing connections (Linux's default if it cannot be read)."""
    try:
        low, high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def free_port(host: str = "127.0.0.1") -> int:
    """Return one TCP port that was free on ``host`` a moment ago."""
    return free_ports(1, host)[0]


def port_in_use(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- errors


def log_tail(path: Path | str | None, lines: int = 40, max_bytes: int = 64 * 1024) -> str:
    """Last ``lines`` lines of a (possibly missing) text file, for error messages."""
    if path is None:
        return ""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError as exc:
        return f"<could not read {p}: {exc}>"
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


class ServerStartError(RuntimeError):
    """A supervised server did not become ready.

    The message always ends with the tail of the server's log file (when one is
    known), so a failing test or ``make demo`` shows *why* without digging.
    """

    def __init__(self, message: str, log_path: Path | str | None = None, *, tail_lines: int = 40):
        self.log_path = Path(log_path) if log_path is not None else None
        self.log_tail = log_tail(self.log_path, tail_lines) if self.log_path else ""
        full = message
        if self.log_path is not None:
            full += f"\n--- last {tail_lines} lines of {self.log_path} ---\n{self.log_tail or '<empty>'}"
        super().__init__(full)


# --------------------------------------------------------------------------- process


def _make_preexec(death_signal: int | None, parent_pid: int) -> Callable[[], None] | None:
    """Build the ``preexec_fn`` that arms PR_SET_PDEATHSIG in the child (Linux)."""
    if death_signal is None or not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c") or "libc.so.6"
    # Load libc *before* fork: doing dlopen() between fork and exec is unsafe.
    libc = ctypes.CDLL(libc_name, use_errno=True)
    prctl = libc.prctl

    def _preexec() -> None:  # runs in the child between fork() and exec()
        prctl(_PR_SET_PDEATHSIG, int(death_signal), 0, 0, 0)
        # The parent may have died before prctl() ran: then nobody would ever
        # signal us, so give up right away.
        if os.getppid() != parent_pid:
            os._exit(1)

    return _preexec


class ManagedProcess:
    """One child process with its output in a log file.

    * stdout and stderr go (appended) to ``log_path``;
    * the child runs in its own session/process group, so a Ctrl-C typed in
      the parent's terminal reaches only the parent, which then stops the
      child in an orderly way;
    * on Linux the child gets ``death_signal`` (SIGTERM by default, i.e. the
      server's graceful shutdown) when the parent dies.  Caveat from
      prctl(2): "parent" means the *thread* that started the child, so start
      long-lived servers from a long-lived thread (normally the main thread);
    * ``stop()`` = SIGTERM, then SIGKILL after ``timeout``; ``kill()`` =
      immediate SIGKILL (crash simulation).  Both signal the whole process
      group.
    """

    def __init__(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        log_path: Path | str,
        cwd: Path | str | None = None,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
        death_signal: int | None = signal.SIGTERM,
    ) -> None:
        self.argv = [os.fspath(a) for a in argv]
        self.log_path = Path(log_path)
        self.cwd = Path(cwd) if cwd is not None else None
        self.env = dict(env) if env is not None else None
        self.name = name or Path(self.argv[0]).name
        self.death_signal = death_signal
        self._popen: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    # -- state ---------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        """Exit status once exited (negative = killed by that signal), else None."""
        return self._popen.poll() if self._popen is not None else None

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited({self.returncode})" if self._popen else "not started"
        return f"<ManagedProcess {self.name} pid={self.pid} {state}>"

    # -- control -------------------------------------------------------------

    def start(self) -> ManagedProcess:
        with self._lock:
            if self.running:
                raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            env = dict(os.environ) if self.env is None else self.env
            with self.log_path.open("ab") as log:
                log.write(f"\n===== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(self.argv)}\n".encode())
                log.flush()
                try:
                    self._popen = subprocess.Popen(
                        self.argv,
                        cwd=self.cwd,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                        close_fds=True,
                        preexec_fn=_make_preexec(self.death_signal, os.getpid()),
                    )
                except OSError as exc:
                    raise ServerStartError(f"could not execute {self.argv[0]!r}: {exc}", self.log_path) from exc
            return self

    def _signal_group(self, sig: int) -> None:
        assert self._popen is not None
        if self._popen.poll() is not None:
            return
        try:
            os.killpg(self._popen.pid, sig)  # pgid == pid thanks to start_new_session
        except ProcessLookupError:
            pass
        except PermissionError:
            self._popen.send_signal(sig)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for exit; raises ``subprocess.TimeoutExpired`` on timeout."""
        if self._popen is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._popen.wait(timeout)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (graceful), then SIGKILL if still alive after ``timeout`` s.

        Returns the exit status, or None if never started.  Idempotent.
        """
        with self._lock:
            if self._popen is None:
                return None
            if self._popen.poll() is None:
                self._signal_group(signal.SIGTERM)
                try:
                    self._popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._signal_group(signal.SIGKILL)
                    self._popen.wait()
            return self._popen.returncode

    def kill(self) -> int | None:
        """SIGKILL now (no graceful shutdown) and reap.  For crash tests."""
        with self._lock:
            if self._popen is None:
                return None
            self._signal_group(signal.SIGKILL)
            self._popen.wait()
            return self._popen.returncode


# --------------------------------------------------------------------------- polling


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "condition",
    process: ManagedProcess | None = None,
) -> T:
    """Poll ``predicate`` until it returns something truthy; return that value.

    Exceptions raised by the predicate count as "not yet" (the last one is
    reported on timeout).  Raises :class:`ServerStartError` - with the tail of
    ``process.log_path`` when a process is given - if ``process`` exits before
    the predicate holds, or when ``timeout`` seconds pass.  Polls quickly at
    first and backs off to ``interval``.
    """
    deadline = time.monotonic() + timeout
    log_path = process.log_path if process is not None else None
    last_exc: BaseException | None = None
    delay = min(0.01, interval)
    while True:
        if process is not None and not process.running:
            raise ServerStartError(
                f"{process.name} exited with status {process.returncode} while waiting for {what}",
                log_path,
            )
        try:
            result = predicate()
        except Exception as exc:  # noqa: BLE001 - "not ready yet"
            last_exc = exc
        else:
            if result:
                return result
        now = time.monotonic()
        if now >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc is not None else ""
            raise ServerStartError(f"timed out after {timeout:.1f}s waiting for {what}{detail}", log_path)
        time.sleep(min(delay, deadline - now))
        delay = min(delay * 2, interval)
