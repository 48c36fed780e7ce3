"""`python -m bench`: commit benchmarks of fedraft against pysyncobj and etcd, beside the physical limits.

Modes: --smoke (under a minute, no thresholds, for CI), --quick (a few minutes), full (the default).
Each run writes bench/results/<UTC timestamp>-<mode>.json and regenerates docs/benchmarks.md from
the newest result of each mode. See bench/README.md.
"""

from __future__ import annotations

import argparse
import io
import json
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import machine, procs, report

HERE = Path(__file__).resolve().parent
SYSTEMS = ("fedraft", "pysyncobj", "etcd", "physical", "failover", "recovery")

MODES: dict[str, dict[str, Any]] = {
    "smoke": {"levels": [{"clients": 1, "ops": 100}, {"clients": 8, "ops": 400}], "warmup": 5,
              "max_seconds": 5.0, "fsync_n": 200, "crypto_seconds": 0.3, "skip": ["etcd"], "extra_fedraft": [],
              "failover_trials": 3, "recovery_entries": 2_000},
    "quick": {"levels": [{"clients": 1, "ops": 300}, {"clients": 8, "ops": 1000}, {"clients": 32, "ops": 2000}],
              "warmup": 10, "max_seconds": 20.0, "fsync_n": 2000, "crypto_seconds": 1.0, "skip": [],
              "extra_fedraft": [{"clients": 32, "ops": 2000, "client_procs": 4}],
              "failover_trials": 30, "recovery_entries": 20_000},
    "full": {"levels": [{"clients": 1, "ops": 1500}, {"clients": 8, "ops": 6000}, {"clients": 32, "ops": 15000}],
             "warmup": 20, "max_seconds": 60.0, "fsync_n": 10000, "crypto_seconds": 3.0, "skip": [],
             "extra_fedraft": [{"clients": 32, "ops": 15000, "client_procs": 4}],
             "failover_trials": 100, "recovery_entries": 100_000},
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_const", dest="mode", const="smoke",
                      help="1 and 8 clients, a few hundred operations, no etcd: under 60 s (CI)")
    mode.add_argument("--quick", action="store_const", dest="mode", const="quick",
                      help="1, 8 and 32 clients, ~2000 operations at 32: a few minutes")
    ap.set_defaults(mode="full")
    ap.add_argument("--out", type=Path, default=HERE / "results", help="results directory (default bench/results)")
    ap.add_argument("--only", default="", metavar="NAME[,NAME]",
                    help=f"run only these benchmarks, from: {', '.join(SYSTEMS)}")
    ap.add_argument("--docs", type=Path, default=HERE.parent / "docs" / "benchmarks.md",
                    help="report regenerated from the newest result of each mode in --out (default docs/benchmarks.md)")
    ap.add_argument("--no-docs", action="store_true", help="do not regenerate the report")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="parent of the temporary data directories (default: the system temp dir)")
    ap.add_argument("--fedraft-rev", default=None, metavar="REV",
                    help="benchmark fedraft as of this git revision (exported to the temp dir) instead of the "
                         "working tree")
    ap.add_argument("--client-procs", type=int, default=1, metavar="N",
                    help="load-generator processes for fedraft and etcd clients (default 1; see bench/README.md)")
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SYSTEMS))
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")
    args.systems = [s for s in SYSTEMS if not only or s in only]
    return args


def export_fedraft(rev: str, dest: Path) -> dict[str, str]:
    """`git archive REV fedraft` into dest; children and this process then import fedraft from there."""
    repo = HERE.parent
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=repo, capture_output=True,
                            text=True, check=True).stdout.strip()
    tar = subprocess.run(["git", "archive", "--format=tar", commit, "fedraft"], cwd=repo, capture_output=True,
                         check=True).stdout
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(dest, filter="data")
    procs.PYTHON_PATH.insert(0, str(dest))
    sys.path.insert(0, str(dest))
    return {"rev": rev, "commit": commit}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    mode = MODES[args.mode]
    started = datetime.now(UTC)
    work = Path(tempfile.mkdtemp(prefix="fedraft-bench-", dir=args.workdir))
    params = {"value_size": 256, "levels": mode["levels"], "warmup": mode["warmup"],
              "max_seconds": mode["max_seconds"], "fsync_n": mode["fsync_n"],
              "crypto_seconds": mode["crypto_seconds"], "client_procs": args.client_procs,
              "failover_trials": mode["failover_trials"], "recovery_entries": mode["recovery_entries"]}
    doc: dict[str, Any] = {
        "schema": 1,
        "mode": args.mode,
        "started_utc": started.isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, "-m", "bench", *argv]),
        "argv": [sys.executable, "-m", "bench", *argv],
        "cwd": str(Path.cwd()),
        "params": params | {"extra_fedraft": mode["extra_fedraft"]},
        "results": {},
    }
    log(f"bench {args.mode}: {', '.join(args.systems)}; data in {work}")
    try:
        exported = export_fedraft(args.fedraft_rev, work / "fedraft-src") if args.fedraft_rev else None
        doc["machine"] = machine.describe(work)
        doc["fedraft_source"] = machine.fedraft_source(exported)
        log(f"fedraft from {doc['fedraft_source']['path']} ({doc['fedraft_source']['describe']})")
        busy = doc["machine"]["busy_processes_at_start"]
        if busy:
            log(f"note: busy processes at start: {busy}")
        results: dict[str, Any] = doc["results"]
        for system in args.systems:
            if system in mode["skip"]:
                results[system] = {"system": system, "skipped": f"not run in {args.mode} mode", "levels": []}
                continue
            if system == "fedraft":
                from bench import commit_fedraft

                p = params | {"levels": mode["levels"] + [lv | {"extra": True} for lv in mode["extra_fedraft"]]}
                results["fedraft"] = commit_fedraft.run(p, work, log)
            elif system == "pysyncobj":
                from bench import commit_pysyncobj

                for r in commit_pysyncobj.run(params, work, log):
                    results[r["system"]] = r
            elif system == "etcd":
                from bench import commit_etcd

                results["etcd"] = commit_etcd.run(params, work, log)
            elif system == "physical":
                from bench import physical

                results["physical"] = physical.run(params, work / "physical", log)
            elif system == "failover":
                from bench import failover

                results["failover"] = failover.run(params, work, log)
            elif system == "recovery":
                from bench import recovery

                results["recovery"] = recovery.run(params, work, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    finished = datetime.now(UTC)
    doc["finished_utc"] = finished.isoformat(timespec="seconds")
    doc["duration_s"] = round((finished - started).total_seconds(), 1)
    doc["ratios"] = report.ratios(doc["results"])
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{started.strftime('%Y%m%dT%H%M%SZ')}-{args.mode}.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    log(f"wrote {path} ({doc['duration_s']} s)")
    print(report.summary(doc))
    if not args.no_docs:
        args.docs.parent.mkdir(parents=True, exist_ok=True)
        previous = args.docs.read_text() if args.docs.exists() else ""
        args.docs.write_text(report.render(args.out, previous))
        log(f"regenerated {args.docs}")
    failed = [name for name, r in doc["results"].items() if r.get("error")]
    if failed:
        log(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
