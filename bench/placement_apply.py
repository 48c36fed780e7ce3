"""Placements per second through apply (not a test): signed Submit envelopes, batched into leader-signed
entries, applied by the real Applier into LMDB — signature checks, de-dup, the scheduler, explanation and
record writes included; only Raft and the network are left out.

The federation: POOLS pools x WORKERS workers x 8 GPUs, all paired with the submitting pool (seeded
directly into the state before timing, as RegisterPool and pairing entries would leave it).
Run: python -m bench.placement_apply [--pools 100 --workers 10 --submissions 10000 --batch 500]
"""

from __future__ import annotations

import argparse
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
            governance_schema.put_pairing(st, Pairing(*sorted(("hq", pool.id)), Trust.HIGH, "hq", active=True))
        store.commit()
        signer = Signer(fed.admins["hq"])
        entries = []
        for start in range(0, submissions, batch):
            envs = [build_envelope(signer, fed.cluster_id, pc.Submit(f"w{i:06d}", _spec(i)), now_ms=T0)
                    for i in range(start, min(submissions, start + batch))]
            entries.append(sign_entry(fed, "hq", 1, envs, T0 + start))
        applier = Applier(store)
        placed = 0
        started = time.perf_counter()
        cpu_started = time.process_time()
        for n, data in enumerate(entries):
            applied = applier.apply(2 + n, 1, data)
            store.commit()
            assert applied is not None
            placed += sum(1 for r in applied.results if r.placement.pool)
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        store.close()
    return {"pools": pools, "workers": workers, "gpus": pools * workers * 8, "submissions": submissions,
            "batch": batch, "placed": placed, "seconds": round(wall, 3),
            "submissions_per_s": round(submissions / wall, 1), "placements_per_s": round(placed / wall, 1),
            "submissions_per_cpu_s": round(submissions / cpu, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pools", type=int, default=100)
    p.add_argument("--workers", type=int, default=10)
    p.add_argument("--submissions", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=500, help="envelopes per entry")
    args = p.parse_args()
    print(json.dumps(run(args.pools, args.workers, args.submissions, args.batch), indent=2))


if __name__ == "__main__":
    main()
