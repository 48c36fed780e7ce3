"""docs/benchmarks.md from the newest result of each mode, the ratios, and the console summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import report_availability

MODES = ("full", "quick", "smoke")
REPO = Path(__file__).resolve().parent.parent
OTHER_LOAD_WARN = 0.25  # cores used by anything but the cluster and its clients during a window
KEEP_MARKER = "<!-- bench: hand-written notes below this line are kept when the report is regenerated -->"
BASELINES = ("pysyncobj", "pysyncobj-nobatch", "etcd")
COMMIT_SYSTEMS = ("fedraft", *BASELINES)
COMMIT_SECTION = (*COMMIT_SYSTEMS, "physical")  # what the per-mode commit section shows


def main_levels(result: dict[str, Any] | None) -> dict[int, dict[str, Any]]:
    if not result:
        return {}
    return {row["clients"]: row for row in result.get("levels", []) if not row.get("extra") and row.get("ops")}


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """fedraft / baseline for ops/s (above 1: fedraft is faster) and p50 (above 1: fedraft is slower)."""
    ours = main_levels(results.get("fedraft"))
    out: dict[str, Any] = {}
    for base in BASELINES:
        theirs = main_levels(results.get(base))
        per_level = {}
        for clients, row in ours.items():
            other = theirs.get(clients)
            if other and other.get("ops_per_s") and other.get("p50_ms"):
                per_level[str(clients)] = {"ops_per_s": round(row["ops_per_s"] / other["ops_per_s"], 3),
                                           "p50": round(row["p50_ms"] / other["p50_ms"], 3)}
        if per_level:
            out[f"fedraft/{base}"] = per_level
    return out


def latest(out_dir: Path, systems: tuple[str, ...] | None = None) -> dict[str, tuple[Path, dict[str, Any]]]:
    """The newest result file of each mode (with one of `systems` in its results, if given)."""
    found: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path in sorted(out_dir.glob("*.json")):  # names start with the UTC timestamp: later sorts last
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if (isinstance(doc, dict) and doc.get("mode") in MODES
                and (systems is None or any(s in doc.get("results", {}) for s in systems))):
            found[doc["mode"]] = (path, doc)
    return found


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _cores(row: dict[str, Any]) -> str:
    cpu = row.get("cpu", {})
    nodes = cpu.get("node_cores", {})
    if not nodes:
        return "-"
    leader = str(row.get("leader", ""))
    lead = nodes.get(leader, nodes.get(leader + "*"))
    other = cpu.get("other_cores")
    return (f"{cpu.get('total_cores', 0):.2f}" + (f" (leader {lead:.2f})" if lead is not None else "")
            + (f" ⚠ other processes {other:.2f}" if other is not None and other > OTHER_LOAD_WARN else ""))


def _commit_table(results: dict[str, Any]) -> list[str]:
    lines = ["| system | clients | ops | ops/s | p50 ms | p99 ms | max ms | errors | CPU cores used (leader) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name in COMMIT_SYSTEMS:
        r = results.get(name)
        if not r:
            continue
        if r.get("skipped"):
            lines.append(f"| {name} | - | - | - | - | - | - | - | skipped: {r['skipped']} |")
            continue
        if r.get("error") and not r.get("levels"):
            lines.append(f"| {name} | - | - | - | - | - | - | - | FAILED: {r['error'][:120]} |")
            continue
        for row in r.get("levels", []):
            if row.get("extra"):
                continue
            mark = " ⚠ term changed" if row.get("term_changed") else ""
            lines.append(f"| {name} | {row['clients']} | {_f(row['ops'])} | {_f(row.get('ops_per_s'), 1)} | "
                         f"{_f(row.get('p50_ms'))} | {_f(row.get('p99_ms'))} | {_f(row.get('max_ms'))} | "
                         f"{row['errors']}{mark} | {_cores(row)} |")
    return lines


def _ratio_table(doc: dict[str, Any]) -> list[str]:
    table = doc.get("ratios") or ratios(doc["results"])
    if not table:
        return ["No ratios: fedraft or every baseline is missing from this run."]
    bases = [b for b in BASELINES if f"fedraft/{b}" in table]
    clients = sorted({int(c) for per in table.values() for c in per})
    head = "| clients | " + " | ".join(f"ops/s vs {b} | p50 vs {b}" for b in bases) + " |"
    lines = [head, "|---:|" + "---:|---:|" * len(bases)]
    for c in clients:
        cells = []
        for b in bases:
            r = table[f"fedraft/{b}"].get(str(c))
            cells += [f"{r['ops_per_s']:.2f}x", f"{r['p50']:.2f}x"] if r else ["-", "-"]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return lines


def _fedraft_details(r: dict[str, Any] | None) -> list[str]:
    if not r or not r.get("levels"):
        return []
    lines = ["| clients | client layout | ops/s | p50 ms | p99 ms | envelopes per log entry | leader | "
             "CPU cores by node | client CPU cores |", "|---:|---|---:|---:|---:|---:|---|---|---:|"]
    for row in r["levels"]:
        nodes = ", ".join(f"{k} {v:.2f}" for k, v in row.get("cpu", {}).get("node_cores", {}).items())
        lines.append(f"| {row['clients']} | {row.get('layout', '')} | {_f(row.get('ops_per_s'), 1)} | "
                     f"{_f(row.get('p50_ms'))} | {_f(row.get('p99_ms'))} | {_f(row.get('envelopes_per_entry'))} | "
                     f"{row.get('leader', '')} | {nodes} | {_f(row.get('cpu', {}).get('loadgen_cores'))} |")
    return lines


def _physical(p: dict[str, Any] | None) -> list[str]:
    if not p:
        return ["Not run."]
    f, d, e = p["fsync_append"], p["fdatasync_overwrite"], p["ed25519"]
    return ["| measure | p50 | p99 | max | rate |", "|---|---:|---:|---:|---:|",
            f"| write 256 B (append) + fsync, n={f['n']} | {f['p50_ms']:.3f} ms | {f['p99_ms']:.3f} ms | "
            f"{f['max_ms']:.3f} ms | {f['per_s_sequential']:,.0f}/s sequential |",
            f"| write 256 B (in place) + fdatasync, n={d['n']} | {d['p50_ms']:.3f} ms | {d['p99_ms']:.3f} ms | "
            f"{d['max_ms']:.3f} ms | {d['per_s_sequential']:,.0f}/s sequential |",
            f"| Ed25519 sign, 256 B (PyNaCl, 1 thread) | {e['sign']['us_per_op']} µs/op | | | "
            f"{e['sign']['ops_per_s']:,.0f}/s |",
            f"| Ed25519 verify, 256 B (PyNaCl, 1 thread) | {e['verify']['us_per_op']} µs/op | | | "
            f"{e['verify']['ops_per_s']:,.0f}/s |"]


def _machine(m: dict[str, Any], src: dict[str, Any] | None) -> list[str]:
    v = m.get("versions", {})
    fs = m.get("data_filesystem", {})
    busy = m.get("busy_processes_at_start") or []
    lines = [f"- Machine: {m.get('cpu_model')}, {m.get('cores')} cores, {m.get('ram_gib')} GiB RAM, "
             f"kernel {m.get('kernel')}, {m.get('python_implementation')} {m.get('python')}",
             f"- Data directories on {fs.get('type')} ({fs.get('device')} mounted at {fs.get('mount')})",
             "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
             f"- fedraft benchmarked: {(src or {}).get('describe', 'unknown')}",
             f"- Load average at start: {', '.join(f'{x:.2f}' for x in m.get('loadavg_at_start', []))}"]
    if busy:
        lines.append("- Busy processes at start: " + "; ".join(f"{b['cmdline'][:80]} ({b['cpu_cores']} cores)"
                                                          for b in busy[:5]))
    return lines


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def _mode_section(path: Path, doc: dict[str, Any]) -> list[str]:
    res = doc["results"]
    out = [f"## {doc['mode']} — {doc['started_utc']}", "",
           f"`{doc['command']}` — {doc.get('duration_s')} s, result file `{_shown(path)}`", "",
           *_machine(doc.get("machine", {}), doc.get("fedraft_source")), "",
           "### Commit throughput and latency", "",
           "3 nodes on loopback, 256-byte values, closed-loop clients (one write in flight each), "
           "latency per acknowledged write.", "", *_commit_table(res), "",
           "### Ratios fedraft / baseline", "",
           "ops/s above 1x means fedraft commits more per second; p50 above 1x means fedraft's median "
           "write takes longer.", "", *_ratio_table(doc), ""]
    details = _fedraft_details(res.get("fedraft"))
    if details:
        out += ["### fedraft details", "",
                "Envelopes per log entry = measured writes / Raft entries committed in the window (the leader "
                "batches envelopes into signed entries). Rows with several client processes compare load-generator "
                "layouts.", "", *details, ""]
    out += ["### Physical limits", "", *_physical(res.get("physical")), ""]
    problems = []
    for name, r in res.items():
        if r.get("error"):
            problems.append(f"- {name} FAILED: {r['error'][:300]}")
        busy = [row["cpu"]["other_cores"] for row in r.get("levels", [])
                if row.get("cpu", {}).get("other_cores", 0) > OTHER_LOAD_WARN]
        if busy:
            problems.append(f"- {name}: other processes used {min(busy):.2f}-{max(busy):.2f} cores during "
                            f"{len(busy)} of its measured windows: background load, its numbers are pessimistic")
        for row in r.get("levels", []):
            if row.get("errors") or row.get("warmup_errors"):
                problems.append(f"- {name} at {row['clients']} clients: {row.get('errors')} errors, "
                                f"{row.get('warmup_errors')} in warm-up; first: {row.get('first_error')}")
            if row.get("term_changed"):
                problems.append(f"- {name} at {row['clients']} clients: leader term changed during the run "
                                f"{row['term_changed']}")
    phys_other = (res.get("physical") or {}).get("other_cores")
    if phys_other is not None and phys_other > OTHER_LOAD_WARN:
        problems.append(f"- physical: other processes used {phys_other:.2f} cores during the probes")
    if problems:
        out += ["### Problems in this run", "", *problems, ""]
    return out


NOTES = """\
## How to read these numbers

- **fedraft**: 3 `fedraft node` processes made by `fedraft init`, default Raft timing (election 1-2 s,
  heartbeat 100 ms, tick 20 ms). Each write is `Client.put("/settings/bench/...", 256 bytes)`: an
  Ed25519-signed envelope in an Ed25519-signed gRPC request over TLS, sent to the leader, batched into a
  leader-signed log entry, fsynced (LMDB journal) by a majority, applied to LMDB, then acknowledged.
  Clients are threads, each with its own `Client`, in a spawned load-generator process (not a node).
- **pysyncobj**: 3 processes running `pysyncobj.SyncObj` with its TCP transport, file journal and
  `fullDumpFile`, a `ReplDict`, the same Raft timing. The clients are threads *inside the leader's
  process* calling `d.set(key, value, sync=True)`: pysyncobj has no client protocol, so the baseline
  skips the client-to-leader RPC hop, TLS and all signing, which favours it. Its file journal writes
  into an mmap and never fsyncs while running (nothing calls `FileJournal.flush`; the meta file is
  written with flush + rename, no fsync): its writes survive kill -9, not a power cut.
  `pysyncobj` uses `appendEntriesUseBatch=True` (its default): new entries leave with the next
  heartbeat, so every write waits up to `appendEntriesPeriod` (100 ms) and throughput is about
  clients x 10/s. `pysyncobj-nobatch` (`appendEntriesUseBatch=False`, as fedraft configures its own
  engine) sends each entry at once and is the fairer latency baseline.
- **etcd**: 3 members of the Debian `etcd-server` package on loopback (plain HTTP, no auth,
  `--heartbeat-interval 100 --election-timeout 1000`), clients are threads with keep-alive HTTP
  connections to the leader doing `POST /v3/kv/put` through etcd's JSON gateway (which adds a hop
  inside etcd compared with a native gRPC client). etcd fsyncs its WAL before acknowledging.
- **CPU cores used**: CPU seconds used during the measured window by the 3 nodes and the load
  generator, divided by the window's wall time (in brackets: the leader alone; for pysyncobj it
  includes the client threads). The machine has 2 cores: a total near 2 means CPU-bound, and a
  single Python process rarely gets past ~1 core (GIL).
- Latency percentiles are nearest-rank over every acknowledged write of the window; warm-up writes
  (a few per client) are not counted. Numbers on a 2-core machine shared by 3 nodes and the clients
  are noisy: compare runs of the same mode, and rerun before concluding from a difference under ~15%.
"""


def render(out_dir: Path, previous: str = "") -> str:
    """The report; whatever `previous` (the old file) has after KEEP_MARKER is carried over."""
    found = latest(out_dir, COMMIT_SECTION)
    availability = {name: latest(out_dir, (name,)) for name in ("failover", "recovery")}
    lines = ["# Benchmarks", "",
             "Generated by `python -m bench` from the newest result of each mode in `bench/results/` (per "
             "benchmark: `--only` runs add to the report); do not edit by hand. How to run: `bench/README.md`.", ""]
    if not found and not any(availability.values()):
        lines.append("No results yet.")
    for mode in MODES:
        if mode in found:
            path, doc = found[mode]
            lines += _mode_section(path, doc | {"results": {k: v for k, v in doc["results"].items()
                                                            if k in COMMIT_SECTION}})
        extra = {name: per_mode[mode] for name, per_mode in availability.items() if mode in per_mode}
        if extra:
            if mode not in found:
                lines += [f"## {mode}", ""]
            lines += report_availability.sections(extra, _shown)
    lines.append(NOTES + report_availability.NOTES)
    kept = previous.split(KEEP_MARKER, 1)[1] if KEEP_MARKER in previous else "\n"
    return "\n".join(lines) + "\n" + KEEP_MARKER + kept


def summary(doc: dict[str, Any]) -> str:
    lines = ["", *_commit_table(doc["results"]), "", *_ratio_table(doc)]
    if "physical" in doc["results"]:
        lines += ["", *_physical(doc["results"]["physical"])]
    lines += report_availability.summary(doc["results"])
    return "\n".join(lines)
