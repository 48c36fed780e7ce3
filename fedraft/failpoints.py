"""Failpoints for fault-injection tests (issue 8): no-ops unless FEDRAFT_FAILPOINTS is set.

    FEDRAFT_FAILPOINTS="journal.after_fsync=kill@37,apply.entry=kill@5"

arms `journal.after_fsync` to kill this process with SIGKILL at its 37th hit, and `apply.entry` at
its 5th (`kill` alone: the first hit). Hits are counted per process from its start. The variable is
read once, at import; when it is absent or empty, `hit()` returns at once and nothing else runs.
Before dying, the process writes one line naming the failpoint to stderr.

Failpoints (the call sites):
- journal.before_fsync   the journal is about to commit (fsync) a batch: that batch is lost
- journal.after_fsync    the batch is durable, nothing that depends on it has left the node yet
- apply.entry            inside apply: an entry's changes are in the open write transaction
- snapshot.install       a received snapshot is verified and renamed into place, the state not yet swapped
"""

from __future__ import annotations

import os
import signal
import sys
import threading

ENV = "FEDRAFT_FAILPOINTS"
NAMES = frozenset({"journal.before_fsync", "journal.after_fsync", "apply.entry", "snapshot.install"})


def _parse(text: str) -> dict[str, int]:
    armed: dict[str, int] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, _, action = item.partition("=")
        verb, _, count = action.partition("@")
        if name not in NAMES or verb != "kill" or (count and not count.isdigit()):
            raise ValueError(f"{ENV}: bad failpoint {item!r} (NAME=kill[@N], NAME one of {', '.join(sorted(NAMES))})")
        armed[name] = int(count) if count else 1
    return armed


_ARMED: dict[str, int] | None = _parse(os.environ.get(ENV, "")) or None
_hits: dict[str, int] = {}
_lock = threading.Lock()


def hit(name: str) -> None:
    """Count a hit of `name`; kill the process if this is the hit it is armed for."""
    if _ARMED is None:
        return
    at = _ARMED.get(name)
    if at is None:
        return
    with _lock:
        _hits[name] = count = _hits.get(name, 0) + 1
    if count == at:
        sys.stderr.write(f"failpoint {name} hit {count}: kill -9\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def armed() -> dict[str, int]:
    return dict(_ARMED or {})
