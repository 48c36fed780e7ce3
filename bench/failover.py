"""Failover benchmark: kill -9 the leader of 3 `fedraft node` processes (default Raft timing), time the
first acknowledged signed write on the new leader.

One trial: a probe client (`fedraft.client.Client` with its default retry policy, all three endpoints)
writes once to the leader, so it is connected to it as a client in steady use would be; the leader gets
SIGKILL at t0 and the probe's next `put` starts at once. Its acknowledgement time minus t0 is the
failover time. Meanwhile a watcher polls the survivors' Status every POLL_S seconds: the first higher
term seen on a survivor ends "detection" (its election timer fired: it became a candidate), the first
survivor reporting itself leader with a quorum ends "election", the acknowledgement ends "first commit"
(which includes the client's retry back-off). The phase boundaries are observations, late by up to one
poll. Then the killed node restarts on its data directory and the next trial waits until it has caught up.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import stats
from bench.node_control import ControlledFederation

POLL_S = 0.02
TARGETS_MS = {"p50": 1500, "max": 3000}  # issue 7: failover to first commit with default timeouts
PHASES = ("total", "detection", "election", "first_commit")


class Watcher(threading.Thread):
    """Polls the survivors' Status after the kill: when a higher term and a new leader were first seen."""

    def __init__(self, fed: ControlledFederation, nodes: list[str], old_term: int, t0: float) -> None:
        super().__init__(daemon=True)
        self.fed, self.nodes, self.old_term, self.t0 = fed, nodes, old_term, t0
        self.candidate_s: float | None = None
        self.leader_s: float | None = None
        self.leader: str | None = None
        self.leader_term = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and self.leader_s is None:
            for node in self.nodes:
                try:
                    s = self.fed.status(node)
                except Exception:
                    continue
                now = time.monotonic() - self.t0
                if self.candidate_s is None and int(s.term) > self.old_term:
                    self.candidate_s = now
                if s.role == "leader" and int(s.term) > self.old_term and s.has_quorum:
                    self.leader_s, self.leader, self.leader_term = now, node, int(s.term)
                    if self.candidate_s is None:
                        self.candidate_s = now
                    break
            self.stop.wait(POLL_S)


def trial(fed: ControlledFederation, probe: Any, number: int, value: bytes) -> dict[str, Any]:
    old = fed.leader()
    old_term = int(fed.status(old).term)
    probe.put(f"/settings/bench/failover/warm{number}", value)  # the probe is connected to the leader
    survivors = [n for n in fed.up() if n != old]
    t0 = fed.kill(old)
    watcher = Watcher(fed, survivors, old_term, t0)
    watcher.start()
    row: dict[str, Any] = {"trial": number, "killed": old, "old_term": old_term}
    try:
        result = probe.put(f"/settings/bench/failover/after{number}", value)
        row["total_ms"] = round((time.monotonic() - t0) * 1000, 1)
        row["index"] = int(result.index)
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"
    watcher.join(10.0)
    watcher.stop.set()
    row["new_leader"], row["new_term"] = watcher.leader, watcher.leader_term
    if watcher.candidate_s is not None:
        row["detection_ms"] = round(watcher.candidate_s * 1000, 1)
    if watcher.leader_s is not None and watcher.candidate_s is not None:
        row["election_ms"] = round((watcher.leader_s - watcher.candidate_s) * 1000, 1)
        if "total_ms" in row:
            row["first_commit_ms"] = round(max(0.0, row["total_ms"] - watcher.leader_s * 1000), 1)
    t_restart = fed.restart(old)
    fed.wait_caught_up(old, timeout=90)
    row["restart_catch_up_s"] = round(time.monotonic() - t_restart, 2)
    return row


def summarize(trials: list[dict[str, Any]], p99: bool) -> dict[str, Any]:
    """Nearest-rank p50/p90 (and p99) and max per phase, over the trials that measured it."""
    out: dict[str, Any] = {}
    for phase in PHASES:
        values = sorted(int(t[f"{phase}_ms"] * 1000) for t in trials if f"{phase}_ms" in t)  # µs
        if not values:
            continue
        row = {"n": len(values), "p50_ms": values_ms(values, 50), "p90_ms": values_ms(values, 90),
               "max_ms": round(values[-1] / 1000, 1), "mean_ms": round(sum(values) / len(values) / 1000, 1)}
        if p99:
            row["p99_ms"] = values_ms(values, 99)
        out[phase] = row
    return out


def values_ms(sorted_us: list[int], p: float) -> float:
    return round(stats.percentile(sorted_us, p) / 1000, 1)


def verdict(summary: dict[str, Any]) -> dict[str, Any]:
    """Each target of issue 7 against the measured total: met, or missed by how many ms."""
    total = summary.get("total", {})
    out = {}
    for name, target in TARGETS_MS.items():
        got = total.get(f"{name}_ms")
        out[name] = {"target_ms": target, "measured_ms": got,
                     "met": got is not None and got <= target,
                     "missed_by_ms": round(got - target, 1) if got is not None and got > target else 0.0}
    return out


def run(params: dict[str, Any], work: Path, log: Callable[[str], None]) -> dict[str, Any]:
    from fedraft.client import Client

    fed = ControlledFederation(work / "failover")
    n = params["failover_trials"]
    result: dict[str, Any] = {"system": "failover", "trials": [], "raft": "defaults (fedraft.config.RaftTuning)",
                              "poll_s": POLL_S}
    probe: Any = None
    try:
        t0 = time.monotonic()
        fed.start()
        fed.leader()
        result["startup_s"] = round(time.monotonic() - t0, 2)
        probe = Client.from_profile(fed.profile, timeout=30.0)
        value = b"v" * params["value_size"]
        for number in range(1, n + 1):
            row = trial(fed, probe, number, value)
            result["trials"].append(row)
            log(f"failover {number}/{n}: killed {row['killed']} -> {row.get('new_leader')} "
                f"(term {row['old_term']} -> {row.get('new_term')}): {row.get('total_ms', '-')} ms "
                f"(detect {row.get('detection_ms', '-')}, elect {row.get('election_ms', '-')}, "
                f"commit {row.get('first_commit_ms', '-')}){' ' + row['error'] if 'error' in row else ''}")
        result["summary"] = summarize(result["trials"], p99=n >= 100)
        result["targets"] = verdict(result["summary"])
        failed = [t for t in result["trials"] if "error" in t]
        if failed:
            result["error"] = f"{len(failed)} of {n} trials got no acknowledged write: {failed[0]['error']}"
        total = result["summary"].get("total", {})
        log(f"failover: p50 {total.get('p50_ms')} ms, p90 {total.get('p90_ms')} ms, max {total.get('max_ms')} ms "
            f"over {total.get('n')} trials")
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["log_tails"] = {node: fed.log_tail(node) for node in fed.up()}
        log(f"failover: FAILED {result['error']}")
    finally:
        if probe is not None:
            probe.close()
        result["exit_codes"] = list(fed.stop().values())
        shutil.rmtree(fed.root, ignore_errors=True)
    return result
