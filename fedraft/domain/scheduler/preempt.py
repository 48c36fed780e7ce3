"""Preemption (SPEC §7): when nothing fits, the worker where evicting lower-priority work makes room.

Only workloads of strictly lower priority are ever evicted. On each worker of each eligible pool
(pools that passed every pool-level filter), victims are taken lowest priority first, then newest
(highest submitted index), then id, skipping any whose eviction would not reduce a shortfall,
until the workload fits. Across workers the plan whose highest evicted priority is lowest wins,
then the fewest evictions, then the higher pool score, the replicated tie-break, pool id, worker.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Set
from dataclasses import dataclass

from fedraft.domain.placement.model import Workload
from fedraft.domain.scheduler.feasible import Fit, Request
from fedraft.domain.scheduler.rank import Scorer
from fedraft.domain.scheduler.select import tie_key
from fedraft.domain.scheduler.view import FederationView, WorkerFree


@dataclass(frozen=True)
class Eviction:
    pool: str
    fit: Fit
    victims: tuple[str, ...]           # workload ids, in eviction order


def _victim_order(w: Workload) -> tuple[int, int, str]:
    return (w.spec.priority, -w.submitted_index, w.id)


def _plan(view: FederationView, req: Request, worker: WorkerFree,
          victims: list[Workload]) -> tuple[Fit, tuple[Workload, ...]] | None:
    spec = req.spec
    floor = spec.gpu_memory_mb
    free = list(worker.free)
    cpu, ram = worker.cpu, worker.ram

    def units() -> int:
        return len(free) - bisect_left(free, (floor, "")) if spec.gpus else 0

    evicted: list[Workload] = []
    for victim in sorted(victims, key=_victim_order):
        if units() >= spec.gpus and cpu >= spec.cpu_millis and ram >= spec.ram_mb:
            break
        assert victim.placement is not None
        gives = []
        for uuid in victim.placement.gpus:
            gpu = worker.gpus.get(uuid)
            if gpu is not None and gpu.healthy and view.gpu_owner(uuid) == victim.id:
                gives.append((gpu.memory_mb, uuid))
        helps = (
            (units() < spec.gpus and any(m >= floor for m, _ in gives))
            or (cpu < spec.cpu_millis and victim.spec.cpu_millis > 0)
            or (ram < spec.ram_mb and victim.spec.ram_mb > 0)
        )
        if not helps:
            continue
        evicted.append(victim)
        for unit in gives:
            insort(free, unit)
        cpu += victim.spec.cpu_millis
        ram += victim.spec.ram_mb
    if units() < spec.gpus or cpu < spec.cpu_millis or ram < spec.ram_mb:
        return None
    start = bisect_left(free, (floor, ""))
    gpus = tuple(sorted(uuid for _, uuid in free[start:start + spec.gpus])) if spec.gpus else ()
    return Fit(worker.name, gpus), tuple(evicted)


def find_eviction(view: FederationView, req: Request, eligible: Set[str], scorer: Scorer, *,
                  index: int, request_id: bytes) -> Eviction | None:
    """The best eviction plan on the eligible pools, or None.

    Searched level by level: victims of priority <= L for each booked priority L below the
    workload's, lowest first. The first level with any plan holds the best one (a plan possible
    with lower victims was found a level earlier), so higher levels are never scanned.
    """
    need = req.spec.gpus
    pools = eligible & view.ids_with_units(need) if need else eligible
    reachable: set[str] = set()
    for level in view.priorities():
        if level >= req.spec.priority:
            break
        reachable |= view.ids_at_priority(level)
        best: tuple[tuple[int, int, int, bytes, str, str], Eviction] | None = None
        for pool_id in sorted(pools & reachable):
            by_worker: dict[str, list[Workload]] = {}
            for w in view.running_on(pool_id):
                if w.spec.priority <= level and w.placement is not None:
                    by_worker.setdefault(w.placement.worker, []).append(w)
            for worker in view.worker_capacity(pool_id):
                plan = _plan(view, req, worker, by_worker.get(worker.name, []))
                if plan is None or not plan[1]:
                    continue
                fit, evicted = plan
                key = (max(v.spec.priority for v in evicted), len(evicted), -scorer.total(pool_id),
                       tie_key(index, request_id, pool_id), pool_id, worker.name)
                if best is None or key < best[0]:
                    best = (key, Eviction(pool_id, fit, tuple(v.id for v in evicted)))
        if best is not None:
            return best[1]
    return None
