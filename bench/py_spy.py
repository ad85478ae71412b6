"""py-spy for the benches: sample a running process without pausing it, and summarise what it held.

py-spy comes with the test extras (``pip install -e '.[test]'``, which scripts/bootstrap.sh runs).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

HZ = 100


def record(pid: int, out: Path, seconds: float | None = None, idle: bool = False) -> subprocess.Popen:
    """py-spy sampling every thread of ``pid`` into ``out`` (raw collapsed stacks, one root frame per
    thread), for ``seconds`` or until ``finish``; non-blocking: the process is never paused, so its
    CPU share is what it would be unprofiled. ``idle``: waits are sampled too."""
    exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if exe is None:
        raise SystemExit("py-spy is missing: run `bash scripts/bootstrap.sh` (the test extras install it)")
    argv = [exe, "record", "--pid", str(pid), "--rate", str(HZ), "--format", "raw", "--threads", "--nonblocking"]
    if seconds is not None:
        argv += ["--duration", str(max(1, int(seconds)))]
    if idle:
        argv.append("--idle")
    return subprocess.Popen([*argv, "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(spy: subprocess.Popen, stop: bool = False) -> None:
    """Wait for py-spy to write its file (``stop``: end its sampling now)."""
    if stop:
        spy.send_signal(signal.SIGINT)
    _, err = spy.communicate(timeout=60)
    if spy.returncode not in (0, -signal.SIGINT):
        raise RuntimeError(f"py-spy failed ({spy.returncode}): {err[-500:]}")


def summary(raw: Path, seconds: float, what: str, top: int = 20) -> str:
    """The functions with the most samples (own: on top of the stack; cumulative: anywhere in it, once
    per stack), each as a share of one core (samples / (rate x seconds)), and each thread's share."""
    own: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    entries: dict[str, Counter[str]] = {}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        n = int(count)
        functions = [f.rsplit(":", 1)[0] + ")" if ":" in f else f for f in frames[1:]]  # the line number off
        threads[frames[0]] += n
        # a thread is named by its first frame outside threading.py (the target it runs)
        entry = next((f for f in functions if "threading.py" not in f), "?")
        entries.setdefault(frames[0], Counter())[entry] += n
        if functions:
            own[functions[-1]] += n
        for f in set(functions):
            cumulative[f] += n
    per_core = HZ * seconds
    lines = [f"py-spy of {what} over {seconds:.0f} s ({HZ} Hz, % of one core's samples):", "threads:"]
    lines += [f"  {100 * n / per_core:6.2f} %  {t} {entries[t].most_common(1)[0][0]}" for t, n in threads.most_common()]
    lines.append(f"own time (top {top}):")
    lines += [f"  {100 * n / per_core:6.2f} %  {f}" for f, n in own.most_common(top)]
    lines.append(f"cumulative (top {top}):")
    lines += [f"  {100 * n / per_core:6.2f} %  {f}" for f, n in cumulative.most_common(top)]
    return "\n".join(lines)
