"""Preemption (SPEC §7): when nothing fits, the worker where evicting lower-priority work makes room.

Only workloads of strictly lower priority are ever evicted. On each worker of each eligible pool
(pools that passed every pool-level filter), victims are taken lowest priority first, then newest
(highest submitted index), then id, skipping any whose eviction would not reduce a shortfall,
until the workload fits. Across workers the plan whose highest evicted priority is lowest wins,
then the fewest evictions, then the higher pool score, the replicated tie-break, pool id, worker.
"""

from __future__ import annotations

import sys
from bisect import bisect_left, insort
from collections.abc import Set
from dataclasses import dataclass

from fedraft.domain.placement.model import Workload
from fedraft.domain.scheduler.feasible import Fit, Request, fitting_units
from fedraft.domain.scheduler.rank import Scorer
from fedraft.domain.scheduler.select import tie_order
from fedraft.domain.scheduler.view import FederationView, Victim, WorkerFree


@dataclass(frozen=True)
class Eviction:
    pool: str
    fit: Fit
    victims: tuple[str, ...]           # workload ids, in eviction order


def _plan(view: FederationView, req: Request, worker: WorkerFree, victims: list[Victim],
          most: int) -> tuple[Fit, tuple[Workload, ...]] | None:
    """Evict from `victims` (eviction order) what reduces a shortfall until the workload fits on the
    worker; None if it never fits or would need more than `most` evictions."""
    spec = req.spec
    floor = spec.gpu_memory_mb
    free = list(worker.free)
    cpu, ram = worker.cpu, worker.ram
    want, want_cpu, want_ram = spec.gpus, spec.cpu_millis, spec.ram_mb
    units_of = worker.gpus
    owner = view.gpu_owner

    profile = spec.mig_profile

    def units() -> int:
        if not want:
            return 0
        if profile:
            return len(fitting_units(free, floor, profile, units_of))
        return len(free) - bisect_left(free, (floor, ""))

    have = units()  # changes only when an eviction gives units back
    evicted: list[Workload] = []
    for _, _, _, victim in victims:
        if have >= want and cpu >= want_cpu and ram >= want_ram:
            break
        assert victim.placement is not None
        victim_id, its = victim.id, victim.spec
        gives = []
        for uuid in victim.placement.gpus:
            gpu = units_of.get(uuid)
            if gpu is not None and gpu.healthy and owner(uuid) == victim_id:
                gives.append((gpu.memory_mb, uuid))
        helps = (
            (have < want and any(m >= floor and (not profile or units_of[u].profile == profile) for m, u in gives))
            or (cpu < want_cpu and its.cpu_millis > 0)
            or (ram < want_ram and its.ram_mb > 0)
        )
        if not helps:
            continue
        if len(evicted) >= most:
            return None
        evicted.append(victim)
        if gives:
            for unit in gives:
                insort(free, unit)
            have = units()
        cpu += its.cpu_millis
        ram += its.ram_mb
    if have < want or cpu < want_cpu or ram < want_ram:
        return None
    chosen = fitting_units(free, floor, profile, worker.gpus)[:spec.gpus] if spec.gpus else []
    gpus = tuple(sorted(uuid for _, uuid in chosen))
    return Fit(worker.name, gpus), tuple(evicted)


def find_eviction(view: FederationView, req: Request, eligible: Set[str], scorer: Scorer, *,
                  index: int, request_id: bytes) -> Eviction | None:
    """The best eviction plan on the eligible pools (pools of this view, as `narrow` gives them), or None.

    Searched level by level: victims of priority <= L for each booked priority L below the
    workload's, lowest first. The first level with any plan holds the best one (a plan possible
    with lower victims was found a level earlier, so every plan of that level evicts priority L),
    and higher levels are never scanned.

    Within a level only pools that can hold a plan are visited: pools running work of priority <= L
    and, for GPU work, either having a worker where the free units plus those given to work of
    priority <= L reach the count, or a worker with that many free units already (a worker short of
    units needs victims that give them). They are visited in the order of the rest of the plan key —
    score descending, tie-break hash, pool id, worker — so the first plan with one eviction is the
    best (nothing evicts fewer), and a later plan replaces the best only with strictly fewer
    evictions (a plan that cannot is abandoned as soon as it reaches that many).
    """
    need = req.spec.gpus
    levels = [level for level in view.priorities() if level < req.spec.priority]
    if not levels:  # nothing booked below the workload's priority: nothing may be evicted
        return None
    # Candidates at level L: eligible pools with a worker of `need` units, running work of priority <= L
    # and (GPU work) reclaiming `need` units at a level <= L (which implies running such work) or holding
    # them free on a worker. Gathered level by level with `&` (which walks the smaller side) rather than
    # by intersecting `eligible` with growing unions of whole priority sets: the same sets, cheaper.
    sized = view.ids_with_units(need)
    everywhere = len(eligible) == len(view.all_ids())  # eligible pools are the view's: all of them, `&` is moot
    roomy: Set[str] = set()
    if need:
        fitting = view.ids_with_free_units(need)
        roomy = (fitting if everywhere else eligible & fitting) & sized
    candidates: set[str] = set()
    for level in levels:
        if need:
            reclaiming = view.ids_reclaiming_at(need, level)
            candidates |= (reclaiming if everywhere else reclaiming & eligible) & sized
            if roomy:
                candidates |= roomy & view.ids_at_priority(level)
        else:
            candidates |= eligible & view.ids_at_priority(level)
        if candidates:
            found_plan = _best_at(view, req, candidates, scorer, level, index, request_id)
            if found_plan is not None:
                return found_plan
    return None


def _best_at(view: FederationView, req: Request, candidates: Set[str], scorer: Scorer, level: int,
             index: int, request_id: bytes) -> Eviction | None:
    """The plan with the fewest evictions of victims <= level, ties by score, hash, pool, worker.

    For GPU work, plans with one eviction are looked for first, on the pools where one eviction can
    free enough units at all (`ids_with_units_after_one_eviction`: a superset of the pools holding
    such a plan); the first found in key order is the answer. Otherwise every plan evicts two or more.
    """
    need = req.spec.gpus
    fewest = 1
    if need:
        near = candidates & view.ids_with_units_after_one_eviction(need)
        found = _walk(view, req, near, scorer, level, index, request_id, most=1, fewest=1) if near else None
        if found is not None:
            return found
        fewest = 2
    return _walk(view, req, candidates, scorer, level, index, request_id, most=sys.maxsize, fewest=fewest)


def _walk(view: FederationView, req: Request, candidates: Set[str], scorer: Scorer, level: int, index: int,
          request_id: bytes, *, most: int, fewest: int) -> Eviction | None:
    """Visit the candidates in key order (score descending, hash, pool, worker) for the plan with the
    fewest evictions, at most `most`; stop at one with `fewest` (none has fewer)."""
    best: Eviction | None = None
    for _, members in scorer.ranked(candidates):
        for pool_id in tie_order(index, request_id, members):
            for worker in view.worker_capacity(pool_id):
                victims = view.victims_on(pool_id, worker.name, level)
                if not victims:
                    continue
                plan = _plan(view, req, worker, victims, most)
                if plan is None or not plan[1]:
                    continue
                fit, evicted = plan
                best, most = Eviction(pool_id, fit, tuple(v.id for v in evicted)), len(evicted) - 1
                if len(evicted) <= fewest:
                    return best
    return best
