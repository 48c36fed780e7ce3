"""Recovery benchmark: a node whose data directory was lost rejoins (`fedraft node --rejoin`) and catches
up from the leader's snapshot.

The federation is filled with `recovery_entries` signed registry writes (256-byte values, each a new key
under /settings/bench/fill/), sent in batches of BATCH envelopes per Propose, so the leader packs them
into few log entries: the state, hence the snapshot, holds every write. The nodes take a snapshot every
`compaction_min_time_s` (the only Raft setting changed; election and heartbeat timing are the defaults):
once the leader's snapshot covers the fill, a follower is killed with SIGKILL, its data directory is
deleted and it starts again with --rejoin. Caught up means: its applied index reached the leader's commit
index and both report the same state digest (SPEC D18) at the same applied index.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import procs
from bench.node_control import ControlledFederation

BATCH = 500      # envelopes per Propose request (the API takes up to 1000)
FILL_THREADS = 2  # Propose requests in flight during the fill (the leader keeps 2 entries in flight)
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")  # `fedraft node`'s asctime (local time)


def compaction_interval_s(entries: int) -> int:
    """Seconds between snapshots: long enough that no new snapshot restarts the transfer being measured."""
    return max(2, min(60, entries // 2_000))


def fill(fed: ControlledFederation, entries: int, value_size: int) -> dict[str, Any]:
    from fedraft.client import Client
    from fedraft.domain.commands import Put

    value = b"f" * value_size
    client = Client.from_profile(fed.profile, timeout=120.0, attempt_timeout=60.0)

    def batch(start: int) -> tuple[int, int, int]:
        envelopes = [client.envelope(Put(f"/settings/bench/fill/{i:07d}", value))
                     for i in range(start, min(start + BATCH, entries))]
        results = client.propose_signed(envelopes)
        ok = sum(1 for r in results if r.code == 0)
        return ok, len(results) - ok, max(int(r.index) for r in results)

    t0 = time.monotonic()
    try:
        with ThreadPoolExecutor(FILL_THREADS) as pool:
            done = list(pool.map(batch, range(0, entries, BATCH)))
    finally:
        client.close()
    seconds = time.monotonic() - t0
    ok = sum(d[0] for d in done)
    refused = sum(d[1] for d in done)
    if refused:
        raise RuntimeError(f"fill: {refused} of {entries} writes were refused")
    return {"writes": ok, "last_index": max(d[2] for d in done), "seconds": round(seconds, 2),
            "writes_per_s": round(ok / seconds, 1)}


def log_marks(text: str, node: str, started_wall: float) -> dict[str, float]:
    """Seconds from the process start to "node up" and to the snapshot install, from the node's own log."""
    marks: dict[str, float] = {}
    for line in text.splitlines():
        m = LOG_TIME.match(line)
        if m is None:
            continue
        at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() - started_wall
        if f" node {node} up:" in line:
            marks.setdefault("node_up_s", at)
        elif "installed snapshot at index" in line:
            marks.setdefault("snapshot_installed_s", at)
    return marks


def catch_up(fed: ControlledFederation, victim: str, timeout: float) -> dict[str, Any]:
    """Kill, wipe and rejoin `victim`; time until it was up, installed the snapshot, and caught up."""
    fed.kill(victim)
    fed.wipe(victim)
    log_path = fed.root / f"{victim}.log"
    offset = log_path.stat().st_size
    started_wall = time.time()
    t0 = fed.restart(victim, rejoin=True)
    marks: dict[str, float] = {}
    from fedraft.client import Client

    # A fresh client per attempt until the node answers: a channel that failed while the process started
    # waits out gRPC's reconnect back-off (up to 1 s) before trying again, which would show as catch-up time.
    client = Client.from_profile(fed.profile)

    def progressed() -> bool:
        nonlocal client
        fed._check_alive()
        try:
            s = client.status(fed.endpoints[victim], timeout=2.0)
        except Exception:
            if "first_status_s" not in marks:
                client.close()
                client = Client.from_profile(fed.profile)
            raise
        now = time.monotonic() - t0
        marks.setdefault("first_status_s", now)
        leader = fed.leader(timeout)
        if int(s.snapshot_index) > 0 and int(s.applied_index) >= int(fed.status(leader).commit_index):
            marks["caught_up_s"] = now
            return True
        return False

    try:
        procs.wait_for(progressed, timeout, f"{victim} to catch up after --rejoin", 0.05)
    finally:
        client.close()
    with log_path.open("rb") as f:
        f.seek(offset)
        marks |= log_marks(f.read().decode(errors="replace"), victim, started_wall)
    return {name: round(value, 2) for name, value in marks.items()}


def same_digest(fed: ControlledFederation, victim: str, timeout: float = 30.0) -> dict[str, Any]:
    """Wait until victim and leader report the same state digest at the same applied index."""

    def equal() -> dict[str, Any] | None:
        leader = fed.leader()
        a = fed._client.status(fed.endpoints[leader], include_digest=True, timeout=10.0)
        b = fed._client.status(fed.endpoints[victim], include_digest=True, timeout=10.0)
        if a.applied_index == b.applied_index and a.state_digest == b.state_digest:
            return {"applied_index": int(a.applied_index), "state_digest": a.state_digest.hex()}
        return None

    return procs.wait_for(equal, timeout, f"{victim} and the leader to report the same state digest", 0.2)


def run(params: dict[str, Any], work: Path, log: Callable[[str], None]) -> dict[str, Any]:
    entries = params["recovery_entries"]
    interval = compaction_interval_s(entries)
    fed = ControlledFederation(work / "recovery", raft={"compaction_min_time_s": interval})
    result: dict[str, Any] = {"system": "recovery", "entries": entries, "batch": BATCH,
                              "raft": {"compaction_min_time_s": interval, "other": "defaults"}}
    try:
        fed.start()
        leader = fed.leader()
        result["fill"] = fill(fed, entries, params["value_size"])
        log(f"recovery: filled {result['fill']['writes']} writes up to index {result['fill']['last_index']} in "
            f"{result['fill']['seconds']} s")
        last = result["fill"]["last_index"]
        leader = fed.leader()
        procs.wait_for(lambda: int(fed.status(leader).snapshot_index) >= last, 3 * interval + 60,
                       f"a snapshot on {leader} covering index {last}", 0.2)
        status = fed.status(leader)
        snapshot = fed.data_dir(leader) / "snapshot.bin"
        result |= {"leader": leader, "snapshot_index": int(status.snapshot_index),
                   "snapshot_bytes": snapshot.stat().st_size, "leader_commit_index": int(status.commit_index),
                   "leader_db_used_bytes": int(status.db_used_bytes)}
        victim = next(n for n in fed.up() if n != leader)
        result["victim"] = victim
        result["catch_up"] = catch_up(fed, victim, timeout=max(120.0, entries / 200))
        seconds = result["catch_up"]["caught_up_s"]
        result["writes_per_s"] = round(entries / seconds, 1)
        result["snapshot_mb_per_s"] = round(result["snapshot_bytes"] / 1e6 / seconds, 2)
        after = fed.status(fed.leader())
        result["leader_snapshot_changed"] = int(after.snapshot_index) != result["snapshot_index"]
        result["digest"] = same_digest(fed, victim)
        log(f"recovery: {victim} caught up {entries} writes (snapshot {result['snapshot_bytes'] / 1e6:.1f} MB at "
            f"index {result['snapshot_index']}) in {seconds} s: {result['writes_per_s']} writes/s; "
            f"{result['catch_up']}")
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["log_tails"] = {node: fed.log_tail(node) for node in fed.up()}
        log(f"recovery: FAILED {result['error']}")
    finally:
        result["exit_codes"] = list(fed.stop().values())
        shutil.rmtree(fed.root, ignore_errors=True)
    return result
