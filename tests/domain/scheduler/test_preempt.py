"""The indexed preemption search picks exactly what the plain search picks (hypothesis).

`reference_find_eviction` below is the straightforward reading of the rule in decision 0005 (and the
implementation before the view kept victims per worker): every pool that passed the pool filters,
every worker, victims sorted on the spot, the best key over everything. The indexed search must
return the same pool, worker, GPUs and victims, in the same order, on busy federations that change
between calls (placements with their evictions, releases, pool changes).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Set
from dataclasses import replace

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fedraft.domain.placement.model import (
    Gpu,
    Health,
    Inventory,
    Phase,
    Placement,
    Policy,
    Pool,
    PoolHealth,
    Trust,
    Weights,
    Worker,
    Workload,
    WorkloadSpec,
)
from fedraft.domain.scheduler import FederationView, place, rank
from fedraft.domain.scheduler.feasible import Fit, Request, narrow
from fedraft.domain.scheduler.preempt import Eviction, find_eviction
from fedraft.domain.scheduler.rank import Scorer
from fedraft.domain.scheduler.select import tie_key
from fedraft.domain.scheduler.view import WorkerFree

# -- the reference --------------------------------------------------------------------------------


def _victim_order(w: Workload) -> tuple[int, int, str]:
    return (w.spec.priority, -w.submitted_index, w.id)


def _reference_plan(view: FederationView, req: Request, worker: WorkerFree,
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


def reference_find_eviction(view: FederationView, req: Request, eligible: Set[str], scorer: Scorer, *,
                            index: int, request_id: bytes) -> Eviction | None:
    """Every level below the workload's priority, lowest first; at each, every plan on every worker of
    every eligible pool; the minimum of (highest evicted priority, evictions, -score, hash, pool, worker)."""
    need = req.spec.gpus
    pools = eligible & view.ids_with_units(need) if need else eligible
    for level in view.priorities():
        if level >= req.spec.priority:
            break
        best: tuple[tuple[int, int, int, bytes, str, str], Eviction] | None = None
        for pool_id in sorted(pools):
            by_worker: dict[str, list[Workload]] = {}
            for w in view.running_on(pool_id):
                if w.spec.priority <= level and w.placement is not None:
                    by_worker.setdefault(w.placement.worker, []).append(w)
            for worker in view.worker_capacity(pool_id):
                plan = _reference_plan(view, req, worker, by_worker.get(worker.name, []))
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


# -- busy federations -------------------------------------------------------------------------------

MEMORY = (16_000, 40_000, 80_000)
SUBMITTERS = ("p0", "p1", "ghost")


@st.composite
def federations(draw: st.DrawFn) -> tuple[list[Pool], list[Workload], list[tuple[str, str, Trust]], Policy]:
    pools: list[Pool] = []
    booked: list[Workload] = []
    n = 0
    for i in range(draw(st.integers(1, 6))):
        workers = []
        for w in range(draw(st.integers(0, 3))):
            units = [Gpu(f"p{i}-w{w}-g{g}", "X", draw(st.sampled_from(MEMORY)), draw(st.integers(0, 7)) > 0)
                     for g in range(draw(st.integers(0, 5)))]
            workers.append(Worker(f"w{w}", draw(st.sampled_from((4_000, 16_000, 16_000))),
                                  draw(st.sampled_from((16_000, 64_000, 64_000))), tuple(units)))
            # fill the worker with running work of mixed priority; now and then claim a unit twice
            left = [u.uuid for u in units]
            for _ in range(draw(st.integers(0, 4))):
                take = draw(st.integers(0, min(2, len(left))))
                mine, left = left[:take], left[take:]
                if draw(st.integers(0, 15)) == 0 and units:
                    mine = [*mine, units[0].uuid]
                n += 1
                spec = WorkloadSpec(gpus=len(mine), cpu_millis=draw(st.sampled_from((0, 1_000, 4_000))),
                                    ram_mb=draw(st.sampled_from((0, 8_000, 30_000))), priority=draw(st.integers(0, 3)))
                booked.append(Workload(f"b{n:02d}", spec, draw(st.sampled_from(SUBMITTERS)), phase=Phase.RUNNING,
                                       placement=Placement(f"p{i}", f"w{w}", tuple(sorted(set(mine)))),
                                       submitted_index=draw(st.integers(1, 9))))
        if draw(st.integers(0, 9)) == 0:  # work on a worker the pool no longer reports
            n += 1
            booked.append(Workload(f"b{n:02d}", WorkloadSpec(cpu_millis=1_000, priority=0), "p0",
                                   phase=Phase.RUNNING, placement=Placement(f"p{i}", "gone", ()), submitted_index=1))
        pools.append(Pool(f"p{i}", region=draw(st.sampled_from(("eu", "us"))),
                          tier=draw(st.sampled_from(("gpu", "cpu"))),
                          status=PoolHealth(health=Health.DOWN if draw(st.integers(0, 9)) == 0 else Health.UP),
                          inventory=Inventory(tuple(workers))))
    ids = [p.id for p in pools]
    pairings = [(a, b, draw(st.sampled_from((Trust.STANDARD, Trust.HIGH)))) for i, a in enumerate(ids)
                for b in ids[i + 1:] if draw(st.integers(0, 4))]
    weights = Weights(*draw(st.tuples(*[st.integers(0, 3)] * 6)))
    return pools, booked, pairings, Policy(preemption=True, weights=weights)


requests = st.builds(
    WorkloadSpec,
    gpus=st.sampled_from((0, 1, 1, 2, 3, 4)), gpu_memory_mb=st.sampled_from((0, 0, 30_000, 60_000)),
    cpu_millis=st.sampled_from((0, 1_000, 4_000, 12_000)), ram_mb=st.sampled_from((0, 8_000, 40_000)),
    priority=st.integers(0, 4),
)


def _both(view: FederationView, w: Workload, policy: Policy, index: int,
          request_id: bytes) -> tuple[Eviction | None, Eviction | None]:
    req = Request.of(view, w, policy, frozenset())
    eligible, _ = narrow(view, req)
    scorer = Scorer(view, req, policy.weights)
    for pool_id in sorted(eligible):  # the inlined parts are the table's functions
        pool = view.pool(pool_id)
        assert pool is not None
        assert scorer.parts(pool_id) == (
            rank.free_capacity(view, req, pool_id), rank.preferred_region(req, pool.region),
            rank.data_locality(view, req, pool_id), rank.latency(req, pool.region), rank.specialty(req, pool.tier),
            rank.spread(view, req, pool_id))
    fast = find_eviction(view, req, eligible, scorer, index=index, request_id=request_id)
    plain = reference_find_eviction(view, req, eligible, scorer, index=index, request_id=request_id)
    return fast, plain


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(federations(), st.lists(st.tuples(st.integers(0, 9), requests, st.sampled_from(SUBMITTERS)), min_size=1,
                               max_size=25))
def test_indexed_search_picks_what_the_plain_search_picks(fed: tuple[list[Pool], list[Workload],
                                                                      list[tuple[str, str, Trust]], Policy],
                                                          steps: list[tuple[int, WorkloadSpec, str]]) -> None:
    pools, booked, pairings, policy = fed
    view = FederationView.build(pools, booked, pairings, ())
    alive = sorted(w.id for w in booked)
    for n, (roll, spec, submitter) in enumerate(steps):
        if roll == 0 and alive:                     # something completes
            view.release(alive.pop(n % len(alive)))
            continue
        if roll == 1:                               # a pool changes (health, one unit sick)
            p = pools[n % len(pools)]
            workers = tuple(replace(wk, gpus=tuple(replace(g, healthy=not g.healthy) if i == 0 else g
                                                   for i, g in enumerate(wk.gpus))) for wk in p.inventory.workers)
            pools[n % len(pools)] = replace(p, inventory=Inventory(workers), status=PoolHealth(
                health=Health.UP if p.status.health is Health.DOWN else Health.DOWN if n % 3 == 0 else Health.UP))
            view.set_pool(pools[n % len(pools)])
            continue
        w = Workload(f"x{n:02d}", spec, submitter, submitted_index=10 + n)
        fast, plain = _both(view, w, policy, 100 + n, n.to_bytes(2, "big"))
        assert fast == plain
        event("eviction" if fast else "none")
        if fast is not None:
            event(f"victims: {min(len(fast.victims), 3)}")
        decision = place(view, w, index=100 + n, request_id=n.to_bytes(2, "big"), policy=policy)
        if decision.placement is not None:
            for victim in decision.preempted:
                view.release(victim)
                alive.remove(victim)
            view.book(replace(w, phase=Phase.PLACED, placement=decision.placement))
            alive.append(w.id)
            alive.sort()


def test_victims_on_keeps_eviction_order_through_book_and_release() -> None:
    p = Pool("p", inventory=Inventory((Worker("w0", 8_000, 8_000, tuple(Gpu(f"g{i}", "X", 1) for i in range(4))),)))
    work = [Workload(f"v{i}", WorkloadSpec(gpus=1, priority=i % 2), "p", phase=Phase.RUNNING,
                     placement=Placement("p", "w0", (f"g{i}",)), submitted_index=i) for i in range(4)]
    view = FederationView.build([p], work, (), ())
    assert [v[2] for v in view.victims_on("p", "w0", 0)] == ["v2", "v0"]
    assert [v[2] for v in view.victims_on("p", "w0", 1)] == ["v2", "v0", "v3", "v1"]
    view.release("v2")
    view.book(replace(work[2], submitted_index=0))
    assert [v[2] for v in view.victims_on("p", "w0", 5)] == ["v0", "v2", "v3", "v1"]
    assert view.ids_reclaiming_at(1, 0) == {"p"} and view.ids_reclaiming_at(2, 0) == {"p"}
    assert view.ids_reclaiming_at(3, 1) == {"p"} and view.victims_on("p", "w1", 5) == []
    for w in work:
        view.release(w.id)
    assert view.ids_reclaiming_at(1, 0) == set() and view.victims_on("p", "w0", 5) == []
