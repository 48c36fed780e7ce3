"""What the numbers were measured on: CPU, memory, kernel, disk, Python, package versions, load."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

PACKAGES = ("fedraft", "pysyncobj", "grpcio", "protobuf", "lmdb", "pynacl")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _first(path: str, prefix: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


def filesystem(path: Path) -> dict[str, str]:
    """Device, type and mount point of the filesystem that holds `path` (from /proc/mounts)."""
    path = path.resolve()
    best = ("", "unknown", "unknown")
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mount, fstype = line.split()[:3]
            if (path == Path(mount) or Path(mount) in path.parents) and len(mount) >= len(best[0]):
                best = (mount, fstype, dev)
    except OSError:
        pass
    return {"path": str(path), "mount": best[0], "type": best[1], "device": best[2]}


def etcd_version() -> str | None:
    exe = shutil.which("etcd")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    first = out.stdout.splitlines()[0] if out.stdout else ""
    return first.split(":", 1)[1].strip() if ":" in first else first or None


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (0.0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat: everything but idle and iowait)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return 0.0
    return (sum(fields) - fields[3] - fields[4]) / CLK_TCK


def busy_processes(sample_s: float = 0.5, threshold: float = 0.10) -> list[dict[str, object]]:
    """Processes (other than this one) using more than `threshold` of a core over a short sample."""
    def snapshot() -> dict[int, float]:
        out = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                out[int(entry.name)] = proc_cpu_seconds(int(entry.name))
        return out

    before = snapshot()
    time.sleep(sample_s)
    after = snapshot()
    busy = []
    for pid, cpu in after.items():
        used = (cpu - before.get(pid, cpu)) / sample_s
        if pid != os.getpid() and used > threshold:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                cmd = "?"
            busy.append({"pid": pid, "cpu_cores": round(used, 2), "cmdline": cmd.strip()[:200]})
    return sorted(busy, key=lambda p: -float(p["cpu_cores"]))  # type: ignore[arg-type]


def fedraft_source(exported: dict[str, str] | None) -> dict[str, str]:
    """Which fedraft is benchmarked: an exported revision, or the working tree (with its commit and state)."""
    import fedraft

    path = Path(fedraft.__file__).resolve().parent
    if exported is not None:
        return {"path": str(path), "commit": exported["commit"], "describe": f"git revision {exported['rev']} = "
                f"{exported['commit'][:12]}, exported"}
    commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--", str(path)))
    return {"path": str(path), "commit": commit, "describe": f"working tree at {commit[:12]}"
            + (" with uncommitted changes" if dirty else ", clean")}


def describe(data_root: Path) -> dict[str, object]:
    mem_kib = _first("/proc/meminfo", "MemTotal").split()[0]
    return {
        "cpu_model": _first("/proc/cpuinfo", "model name"),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gib": round(int(mem_kib) / 1024 / 1024, 1) if mem_kib.isdigit() else None,
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "versions": {name: _version(name) for name in PACKAGES} | {"etcd": etcd_version()},
        "git_commit": _git("rev-parse", "HEAD"),
        "data_filesystem": filesystem(data_root),
        "loadavg_at_start": os.getloadavg(),
        "busy_processes_at_start": busy_processes(),
    }
