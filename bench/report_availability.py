"""The failover and recovery sections of docs/benchmarks.md and of the console summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PHASE_NAMES = {
    "total": "**total**: kill -9 → write acknowledged",
    "detection": "detection: kill → a survivor in a higher term",
    "election": "election: → a survivor leads with a quorum",
    "first_commit": "first commit: → the probe's write acknowledged (with client back-off)",
}
TARGET_NAMES = {"p50": "p50", "max": "max"}


def _f(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"


def _run_line(path: str, doc: dict[str, Any]) -> list[str]:
    m = doc.get("machine", {})
    load = ", ".join(f"{x:.2f}" for x in m.get("loadavg_at_start", []))
    busy = m.get("busy_processes_at_start") or []
    line = (f"`{doc['command']}` — {doc['started_utc']}, {doc.get('duration_s')} s, result file `{path}`, "
            f"fedraft {(doc.get('fedraft_source') or {}).get('describe', 'unknown')}; load average at start {load}")
    if busy:
        line += ("; ⚠ busy processes at start (other engineers' tests on this 2-core machine): "
                 + "; ".join(f"{b['cmdline'][:70]} ({b['cpu_cores']} cores)" for b in busy[:4]))
    return [line, ""]


def failover_lines(r: dict[str, Any]) -> list[str]:
    if r.get("skipped"):
        return [f"Skipped: {r['skipped']}."]
    summary = r.get("summary") or {}
    if not summary:
        return [f"FAILED: {r.get('error', 'no trial finished')[:300]}"]
    lines = ["| phase | trials | p50 ms | p90 ms | p99 ms | max ms | mean ms |", "|---|---:|---:|---:|---:|---:|---:|"]
    for phase, name in PHASE_NAMES.items():
        s = summary.get(phase)
        if s:
            lines.append(f"| {name} | {s['n']} | {_f(s['p50_ms'])} | {_f(s['p90_ms'])} | {_f(s.get('p99_ms'))} | "
                         f"{_f(s['max_ms'])} | {_f(s['mean_ms'])} |")
    lines += ["", "| target (issue 7) | measured | measured / target | verdict |", "|---|---:|---:|---|"]
    for name, t in (r.get("targets") or {}).items():
        got = t.get("measured_ms")
        ratio = f"{got / t['target_ms']:.2f}x" if got is not None else "-"
        verdict = "met" if t.get("met") else f"missed by {t.get('missed_by_ms')} ms"
        lines.append(f"| {TARGET_NAMES.get(name, name)} ≤ {t['target_ms']:,} ms | {_f(got)} ms | {ratio} | {verdict} |")
    trials = r.get("trials", [])
    extra = [t for t in trials if t.get("new_term", 0) - t.get("old_term", 0) > 1]
    notes = [f"{len(trials)} trials; the killed node restarted and caught up before each next trial."]
    if extra:
        notes.append(f"{len(extra)} trial(s) needed more than one election (term rose by more than 1).")
    errors = [t for t in trials if "error" in t]
    if errors:
        notes.append(f"{len(errors)} trial(s) without an acknowledged write; first: {errors[0]['error'][:200]}")
    if r.get("error"):
        notes.append(f"FAILED: {r['error'][:300]}")
    return [*lines, "", " ".join(notes)]


def recovery_lines(r: dict[str, Any]) -> list[str]:
    if r.get("skipped"):
        return [f"Skipped: {r['skipped']}."]
    c = r.get("catch_up")
    if not c:
        return [f"FAILED: {r.get('error', 'did not finish')[:300]}"]
    fill = r.get("fill", {})
    lines = ["| writes in the state | log index at snapshot | snapshot size | fill (writes/s) | start → node up | "
             "→ snapshot installed | → caught up | writes/s caught up | snapshot MB/s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
             f"| {r['entries']:,} | {r.get('snapshot_index', 0):,} | {r.get('snapshot_bytes', 0) / 1e6:.1f} MB | "
             f"{fill.get('seconds')} s ({_f(fill.get('writes_per_s'))}) | {c.get('node_up_s', '-')} s | "
             f"{c.get('snapshot_installed_s', '-')} s | **{c.get('caught_up_s')} s** | {_f(r.get('writes_per_s'))} | "
             f"{_f(r.get('snapshot_mb_per_s'))} |"]
    notes = []
    digest = r.get("digest")
    if digest:
        notes.append(f"Same state digest as the leader at applied index {digest['applied_index']:,}.")
    if r.get("leader_snapshot_changed"):
        notes.append("⚠ The leader took a new snapshot during the catch-up (the transfer restarted).")
    if r.get("error"):
        notes.append(f"FAILED: {r['error'][:300]}")
    return [*lines, "", " ".join(notes)] if notes else lines


def sections(found: dict[str, tuple[Path, dict[str, Any]]], shown: Any) -> list[str]:
    """`found`: system name → (result file, result doc) of the newest run with that system, one mode."""
    out: list[str] = []
    if "failover" in found:
        path, doc = found["failover"]
        out += ["### Failover: kill -9 of the leader to the first acknowledged write", "",
                *_run_line(shown(path), doc), *failover_lines(doc["results"]["failover"]), ""]
    if "recovery" in found:
        path, doc = found["recovery"]
        out += ["### Recovery: a wiped node rejoins from the leader's snapshot", "",
                *_run_line(shown(path), doc), *recovery_lines(doc["results"]["recovery"]), ""]
    return out


def summary(results: dict[str, Any]) -> list[str]:
    out: list[str] = []
    if "failover" in results:
        out += ["", *failover_lines(results["failover"])]
    if "recovery" in results:
        out += ["", *recovery_lines(results["recovery"])]
    return out


NOTES = """\
- **failover**: the same 3 `fedraft node` processes with default Raft timing (election timeout drawn
  from 1-2 s, heartbeat 100 ms). A probe `Client` (default retry policy, all three endpoints) writes
  once to the leader, the leader gets SIGKILL, and the probe's next `put` is timed from the kill to
  its acknowledgement. Phases come from polling the survivors' Status every 20 ms (late by up to one
  poll): detection ends when a survivor is seen in a higher term (its election timer fired),
  election when one reports itself leader with a quorum, first commit when the probe's write is
  acknowledged (this includes the client's retry back-off). The killed node restarts on its data
  directory and catches up before the next trial. p99 only in full mode (100 trials).
- **recovery**: the federation is filled with signed registry writes (256-byte values, one new key
  each) sent 500 envelopes per Propose, so the state (and the snapshot) holds all of them in few log
  entries. The nodes snapshot every `compaction_min_time_s` seconds (the only non-default setting);
  once the leader's snapshot covers the fill, a follower is killed, its data directory deleted and it
  starts with `--rejoin`. Times run from that process start: "node up" (imports, LMDB opened, API
  and peer links started) and "snapshot installed" from the node's own log, caught up (snapshot in,
  applied index at the leader's commit index) from polling Status every 50 ms; then the state digests
  are compared at equal applied index. Snapshot MB/s and writes/s are over the whole time to caught up.
"""
