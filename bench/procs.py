"""Child processes of a benchmark: free loopback ports, start with a death signal, stop for sure."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from bench.machine import machine_busy_seconds, proc_cpu_seconds

T = TypeVar("T")
PR_SET_PDEATHSIG = 1

# Where child processes import fedraft and bench from, first to last (set by bench.__main__). Children
# run in their data directory, so the current directory never shadows these.
PYTHON_PATH: list[str] = [str(Path(__file__).resolve().parent.parent)]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(PYTHON_PATH + inherited),
            **(extra or {})}


# Runs in the child before exec: ask Linux for SIGKILL when the benchmark dies (kept across exec), so no
# node outlives a crashed run. Done in a launcher rather than `preexec_fn`, which is unsafe once this
# process has threads (gRPC's, for instance).
_LAUNCHER = (
    "import ctypes, os, sys\n"
    "try:\n"
    f"    ctypes.CDLL(None).prctl({PR_SET_PDEATHSIG}, {int(signal.SIGKILL)})\n"
    "except (OSError, AttributeError):\n"
    "    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit('benchmark parent already gone')\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(offsets: Sequence[int]) -> int:
    """A base port B such that B + o is free on 127.0.0.1 for every offset o."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + max(offsets) < 65000 and all(port_free(base + o) for o in offsets):
            return base
    raise RuntimeError("no free loopback ports")


def start(argv: Sequence[str], log_path: Path, *, env: dict[str, str] | None = None,
          stdin: int | None = subprocess.DEVNULL, stdout: int | None = None) -> subprocess.Popen[bytes]:
    log = open(log_path, "ab")  # noqa: SIM115 - the child owns it for its lifetime
    try:
        return subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(os.getpid()), *argv], stdin=stdin,
                                stdout=stdout if stdout is not None else log, stderr=log,
                                cwd=log_path.parent, env=child_env(env))
    finally:
        log.close()


def stop_all(procs: Sequence[subprocess.Popen[bytes]], grace: float = 10.0) -> dict[int, int | None]:
    """SIGTERM every process, wait up to `grace` seconds, then SIGKILL what is left. Returns exit codes."""
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return {p.pid: p.returncode for p in procs}


def cpu_seconds(procs: Sequence[subprocess.Popen[bytes]]) -> list[float]:
    return [proc_cpu_seconds(p.pid) for p in procs]


class CpuWindow:
    """CPU seconds of the given processes and of the whole machine between `start()` and `stop()`."""

    def __init__(self, procs: Sequence[subprocess.Popen[bytes]]) -> None:
        self.procs = list(procs)
        self.nodes: list[float] = []
        self.machine = 0.0

    def start(self) -> None:
        self.nodes = [-c for c in cpu_seconds(self.procs)]
        self.machine = -machine_busy_seconds()

    def stop(self) -> None:
        self.nodes = [a + b for a, b in zip(self.nodes, cpu_seconds(self.procs), strict=True)]
        self.machine += machine_busy_seconds()


class ChildExited(RuntimeError):
    """A node process is gone: waiting longer cannot help (`wait_for` re-raises it at once)."""


def wait_for(condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except ChildExited:
            raise
        except Exception as exc:
            last = exc
        time.sleep(interval)
    detail = f" (last error: {last})" if last else ""
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""
