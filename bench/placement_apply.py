"""Placements per second through apply (not a test): signed Submit envelopes, batched into leader-signed
entries, applied by the real Applier into LMDB — signature checks, de-dup, the scheduler, explanation and
record writes included; only Raft and the network are left out.

The federation: POOLS pools x WORKERS workers x 8 GPUs, all paired with the submitting pool (seeded
directly into the state before timing, as RegisterPool and pairing entries would leave it). Submissions
ask for 0-8 GPUs (2.1 on average) at priorities 0-2, so the federation fills and later submissions
preempt lower-priority work or find nothing.

Run: python -m bench.placement_apply [--pools 100 --workers 10 --submissions 10000 --batch 500]
     python -m bench.placement_apply --sweep      # 10, 100, 1000 pools x 8 GPUs and 100 x 10 x 8: a table
     python -m bench.placement_apply --sweep --json   # the same rows as JSON lines

Columns: `room/s` counts submissions per second over the entries applied while every submission of the
entry was placed without preemption (the federation still had room); `full/s` over the remaining
entries; `us/sub` is wall microseconds per submission overall. `growth` compares a row's `us/sub` with
the previous row of the same workers per pool: the ratio of the per-submission cost against the ratio
of pool counts (O(1) per submission: 1.0; O(n): the pool ratio).
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from pathlib import Path

from fedraft.consensus.applier import Applier
from fedraft.crypto.envelopes import build_envelope
from fedraft.crypto.signing import Signer
from fedraft.domain.governance.pairing import Pairing
from fedraft.domain.placement import commands as pc
from fedraft.domain.placement.model import Gpu, Inventory, Pool, Trust, Worker, WorkloadSpec
from fedraft.storage import governance_schema, placement_schema
from fedraft.storage.state import StateStore
from tests.helpers import make_federation, sign_entry

T0 = 1_800_000_000_000
SWEEP: tuple[tuple[int, int], ...] = ((10, 1), (100, 1), (1_000, 1), (100, 10))  # (pools, workers of 8 GPUs)


def _pools(n: int, workers: int) -> list[Pool]:
    return [Pool(f"pool-{i:04d}", region=f"r{i % 4}", tier="gpu" if i % 5 else "cpu", inventory=Inventory(tuple(
        Worker(f"w{w:02d}", 64_000, 512_000,
               tuple(Gpu(f"GPU-{i:04d}-{w:02d}-{g}", "A100", 81_920 if (i + g) % 3 else 40_960) for g in range(8)))
        for w in range(workers)))) for i in range(n)]


def _spec(i: int) -> WorkloadSpec:
    kind = i % 10
    if kind < 2:
        return WorkloadSpec(cpu_millis=2_000, ram_mb=8_192, priority=i % 3)
    gpus = (1, 1, 2, 2, 4, 8, 1, 2)[kind - 2]
    return WorkloadSpec(gpus=gpus, gpu_memory_mb=40_960 if kind % 2 else 0, cpu_millis=1_000 * gpus,
                        ram_mb=4_096 * gpus, priority=i % 3)


def run(pools: int, workers: int, submissions: int, batch: int) -> dict[str, float]:
    fed = make_federation()
    with tempfile.TemporaryDirectory(prefix="fedraft-bench-") as tmp:
        store = StateStore(Path(tmp) / "state", fed.genesis, map_size=8 << 30)
        st = store.writer()
        for pool in _pools(pools, workers):
            placement_schema.put_pool(st, pool)
            a, b = sorted(("hq", pool.id))
            governance_schema.put_pairing(st, Pairing(a, b, Trust.HIGH, "hq", active=True))
        store.commit()
        signer = Signer(fed.admins["hq"])
        entries = []
        for start in range(0, submissions, batch):
            envs = [build_envelope(signer, fed.cluster_id, pc.Submit(f"w{i:06d}", _spec(i)), now_ms=T0)
                    for i in range(start, min(submissions, start + batch))]
            entries.append(sign_entry(fed, "hq", 1, envs, T0 + start))
        applier = Applier(store)
        placed = preempting = evicted = 0
        room_s = full_s = 0.0
        room_n = full_n = 0
        full = False
        gc.collect()
        started = time.perf_counter()
        cpu_started = time.process_time()
        for n, data in enumerate(entries):
            t = time.perf_counter()
            applied = applier.apply(2 + n, 1, data)
            store.commit()
            took = time.perf_counter() - t
            assert applied is not None
            here = sum(1 for r in applied.results if r.placement.pool)
            pre = [len(r.placement.preempted) for r in applied.results if r.placement.preempted]
            placed += here
            preempting += len(pre)
            evicted += sum(pre)
            full = full or here < len(applied.results) or bool(pre)
            if full:
                full_s, full_n = full_s + took, full_n + len(applied.results)
            else:
                room_s, room_n = room_s + took, room_n + len(applied.results)
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        store.close()
    return {"pools": pools, "workers": workers, "gpus": pools * workers * 8, "submissions": submissions,
            "batch": batch, "placed": placed, "preempting": preempting, "evicted": evicted,
            "seconds": round(wall, 3),
            "submissions_per_s": round(submissions / wall, 1), "placements_per_s": round(placed / wall, 1),
            "submissions_per_cpu_s": round(submissions / cpu, 1),
            "room_submissions_per_s": round(room_n / room_s, 1) if room_s else 0.0,
            "full_submissions_per_s": round(full_n / full_s, 1) if full_s else 0.0,
            "us_per_submission": round(wall * 1e6 / submissions, 1)}


def table(rows: list[dict[str, float]]) -> str:
    """The sweep as a Markdown table, with the per-submission cost's growth against the pool count."""
    head = ("pools", "workers", "GPUs", "subs", "placed", "preempting", "s", "subs/s", "placed/s", "room/s",
            "full/s", "us/sub", "growth")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    previous: dict[float, dict[str, float]] = {}
    for r in rows:
        before = previous.get(r["workers"])
        growth = ""
        if before is not None:
            growth = (f"x{r['us_per_submission'] / before['us_per_submission']:.2f} for "
                      f"x{r['pools'] / before['pools']:.0f} pools")
        previous[r["workers"]] = r
        cells = (r["pools"], r["workers"], r["gpus"], r["submissions"], r["placed"], r["preempting"], r["seconds"],
                 r["submissions_per_s"], r["placements_per_s"], r["room_submissions_per_s"],
                 r["full_submissions_per_s"], r["us_per_submission"], growth)
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def sweep(configs: tuple[tuple[int, int], ...], submissions: int, batch: int, as_json: bool) -> list[dict[str, float]]:
    rows = []
    for pools, workers in configs:
        row = run(pools, workers, submissions, batch)
        rows.append(row)
        if as_json:
            print(json.dumps(row), flush=True)
    if not as_json:
        print(table(rows))
    return rows


def _configs(text: str) -> tuple[tuple[int, int], ...]:
    """"10x1,100x10" -> ((10, 1), (100, 10))."""
    out = []
    for part in text.split(","):
        pools, _, workers = part.partition("x")
        out.append((int(pools), int(workers or 1)))
    return tuple(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pools", type=int, default=100)
    p.add_argument("--workers", type=int, default=10)
    p.add_argument("--submissions", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=500, help="envelopes per entry")
    p.add_argument("--sweep", action="store_true", help="run every configuration of --configs and print a table")
    p.add_argument("--configs", type=_configs, default=SWEEP,
                   help="for --sweep: POOLSxWORKERS,... (default 10x1,100x1,1000x1,100x10)")
    p.add_argument("--json", action="store_true", help="for --sweep: one JSON object per row instead of a table")
    args = p.parse_args()
    if args.sweep:
        sweep(args.configs, args.submissions, args.batch, args.json)
        return
    print(json.dumps(run(args.pools, args.workers, args.submissions, args.batch), indent=2))


if __name__ == "__main__":
    main()
