"""Scheduler micro-benchmark (not a test): placements/s of place()+book() on a steady-state federation.

Pools x 8 GPUs (two workers of 4), 4 regions, GPU and CPU tiers, 10 submitter pools paired with every
pool. Each submission is placed and booked; the oldest workloads are released while more than 70 % of
the GPUs are booked, so the federation stays busy but not full. Run: python bench/scheduler_micro.py
(--uniform: identical pools in one region, so most placements break a tie among many pools).
"""

from __future__ import annotations

import argparse
import random
import time
from collections import deque

from fedraft.domain.placement.model import (
    Gpu,
    Inventory,
    Phase,
    Policy,
    Pool,
    Trust,
    Worker,
    Workload,
    WorkloadSpec,
)
from fedraft.domain.scheduler import FederationView, place

REGIONS = ("eu-west", "eu-central", "us-east", "ap-south")


def federation(n: int, uniform: bool = False) -> tuple[list[Pool], list[tuple[str, str, Trust]]]:
    if uniform:  # worst case for the tie-break: every pool alike, one region, one tier
        pools = [Pool(f"pool-{i:05d}", region="eu-west", tier="gpu", inventory=Inventory((
            Worker("w0", 64_000, 512_000, tuple(Gpu(f"GPU-{i:05d}-{g}", "A100", 81_920) for g in range(8))),)))
            for i in range(n)]
        return pools, [("pool-00000", p.id, Trust.STANDARD) for p in pools[1:]]
    pools = []
    for i in range(n):
        workers = tuple(
            Worker(f"w{w}", 64_000, 512_000,
                   tuple(Gpu(f"GPU-{i:05d}-{w}-{g}", "A100", 81_920 if (i + g) % 3 else 40_960) for g in range(4)))
            for w in range(2)
        )
        pools.append(Pool(f"pool-{i:05d}", region=REGIONS[i % 4], tier="gpu" if i % 5 else "cpu",
                          labels=("nvlink",) if i % 2 else (), inventory=Inventory(workers)))
    submitters = [p.id for p in pools[:10]]
    pairings = [(s, p.id, Trust.HIGH if (i % 3) else Trust.STANDARD)
                for s in submitters for i, p in enumerate(pools) if p.id != s]
    return pools, pairings


def spec_for(rng: random.Random, uniform: bool) -> WorkloadSpec:
    if uniform:
        return WorkloadSpec(gpus=1, cpu_millis=1_000, ram_mb=4_096)
    kind = rng.randrange(10)
    if kind < 2:
        return WorkloadSpec(cpu_millis=2_000, ram_mb=8_192, priority=rng.randrange(3))
    gpus = (1, 1, 2, 2, 4, 8, 1, 2)[kind - 2]
    return WorkloadSpec(gpus=gpus, gpu_memory_mb=40_960 if kind % 2 else 0, cpu_millis=4_000 * gpus,
                        ram_mb=16_384 * gpus, priority=rng.randrange(3),
                        preferred_region=REGIONS[kind % 4] if kind > 6 else "",
                        labels=("nvlink",) if kind == 9 else ())


def run(n_pools: int, submissions: int, seed: int = 7, uniform: bool = False) -> tuple[float, float, int]:
    """(placements/s by wall clock, by process CPU time, how many were placed)."""
    rng = random.Random(seed)
    pools, pairings = federation(n_pools, uniform)
    view = FederationView.build(pools, (), pairings, [("llama", p.id) for p in pools[::7]])
    policy = Policy()
    capacity = n_pools * 8
    live: deque[Workload] = deque()
    booked_units = placed = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    for i in range(submissions):
        spec = spec_for(rng, uniform)
        submitter = 0 if uniform else rng.randrange(min(10, n_pools))
        w = Workload(f"wl-{i:06d}", spec, submitter_pool=f"pool-{submitter:05d}",
                     submitted_index=i + 1)
        decision = place(view, w, index=i + 1, request_id=i.to_bytes(16, "big"), policy=policy)
        if decision.placement is not None:
            for victim in decision.preempted:
                booked_units -= len(view.booked(victim).placement.gpus)  # type: ignore[union-attr]
                view.release(victim)
            w = Workload(w.id, spec, w.submitter_pool, Phase.PLACED, decision.placement, submitted_index=i + 1)
            view.book(w)
            live.append(w)
            placed += 1
            booked_units += spec.gpus
        while live and booked_units * 100 > capacity * 70:
            old = live.popleft()
            if view.booked(old.id) is not None:
                view.release(old.id)
                booked_units -= old.spec.gpus
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return submissions / elapsed, submissions / cpu, placed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--submissions", type=int, default=10_000)
    parser.add_argument("--pools", type=int, nargs="*", default=[10, 100, 1000])
    parser.add_argument("--uniform", action="store_true",
                        help="identical pools, 1-GPU jobs from one submitter: the tie-break's worst case")
    args = parser.parse_args()
    print(f"{'pools':>6} {'GPUs':>6} {'submissions':>11} {'placed':>7} {'placements/s':>13} {'per CPU s':>10}")
    for n in args.pools:
        rate, cpu_rate, placed = run(n, args.submissions, uniform=args.uniform)
        print(f"{n:>6} {n * 8:>6} {args.submissions:>11} {placed:>7} {rate:>13,.0f} {cpu_rate:>10,.0f}")


if __name__ == "__main__":
    main()
