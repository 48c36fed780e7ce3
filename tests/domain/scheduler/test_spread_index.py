"""The view's (submitter, GPU shape, spread count) and (submitter, CPU shape, spread count) indexes kept by
book/release/set_pool equal ones built from scratch after random sequences of bookings, releases and pool
changes (hypothesis), and hold exactly the pools a plain reading of the view gives."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
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
    Workload,
    WorkloadSpec,
)
from fedraft.domain.scheduler import FederationView
from tests.domain.scheduler.test_preempt import SUBMITTERS, federations

steps = st.lists(st.tuples(st.sampled_from(("book", "book", "release", "down", "up", "sick", "grow", "region")),
                           st.integers(0, 1_000), st.sampled_from(SUBMITTERS)), max_size=40)


def _changed(pool: Pool, change: str, n: int) -> Pool:
    if change in ("down", "up"):
        return replace(pool, status=PoolHealth(health=Health.DOWN if change == "down" else Health.UP))
    if change == "region":
        return replace(pool, region="us" if pool.region == "eu" else "eu")
    workers = list(pool.inventory.workers)
    if not workers:
        return pool
    w = workers[n % len(workers)]
    if change == "sick":  # a unit turns unhealthy (booked or not)
        gpus = tuple(replace(g, healthy=False) if i == n % max(1, len(w.gpus)) else g for i, g in enumerate(w.gpus))
    else:  # a unit appears
        gpus = (*w.gpus, Gpu(f"{pool.id}-{w.name}-new{n}", "X", 16_000))
    workers[n % len(workers)] = replace(w, gpus=gpus)
    return replace(pool, inventory=Inventory(tuple(workers)))


def _plain(view: FederationView, submitter: str, gpu_work: bool = True,
           ) -> dict[tuple[tuple[str, str, int, int], int], set[str]]:
    out: dict[tuple[tuple[str, str, int, int], int], set[str]] = {}
    for pool_id in view.pool_ids():
        n = view.submitter_count(submitter, pool_id)
        if n:
            cap = view.capacity(pool_id)
            key = cap.gpu_key if gpu_work else cap.cpu_key
            assert key is not None
            out.setdefault((key, n), set()).add(pool_id)
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(federations(), steps)
def test_kept_spread_index_equals_a_fresh_build(
        fed: tuple[list[Pool], list[Workload], list[tuple[str, str, Trust]], Policy],
        script: list[tuple[str, int, str]]) -> None:
    pools_list, booked, pairings, _ = fed
    pools = {p.id: p for p in pools_list}
    work: dict[str, Workload] = {}
    claimed: set[str] = set()
    for w in sorted(booked, key=lambda w: w.id):  # state never holds a unit twice (the strategy now and then does)
        units = set(w.placement.gpus) if w.placement else set()
        if not units & claimed:
            work[w.id] = w
            claimed |= units
    view = FederationView.build(pools.values(), work.values(), pairings, [])
    for n, (kind, arg, submitter) in enumerate(script):
        pool = pools_list[arg % len(pools_list)]
        if kind == "book":
            worker = pool.inventory.workers[arg % len(pool.inventory.workers)] if pool.inventory.workers else None
            free = [g.uuid for g in worker.gpus if view.gpu_owner(g.uuid) is None] if worker else []
            w = Workload(f"x{n:02d}", WorkloadSpec(gpus=min(1, len(free)), cpu_millis=500), submitter,
                         phase=Phase.RUNNING, submitted_index=n + 10,
                         placement=Placement(pool.id, worker.name if worker else "w0", tuple(free[:1])))
            view.book(w)
            work[w.id] = w
        elif kind == "release":
            if work:
                gone = sorted(work)[arg % len(work)]
                view.release(gone)
                del work[gone]
        else:
            pools[pool.id] = _changed(pools[pool.id], kind, arg)
            pools_list = [pools[p.id] for p in pools_list]
            view.set_pool(pools[pool.id])
        fresh = FederationView.build(pools.values(), work.values(), pairings, [])
        assert view.differences(fresh) == ()
        for s in SUBMITTERS:
            for gpu_work in (True, False):
                kept = {(shape, count): set(at) for shape, by in view.submitter_spread(s, gpu_work).items()
                        for count, at in by.items()}
                assert kept == _plain(view, s, gpu_work)


def test_a_pool_booked_before_its_record_is_bucketed_when_it_arrives() -> None:
    pool = Pool("p", region="eu", tier="gpu")
    w = Workload("a", WorkloadSpec(cpu_millis=1), "s", phase=Phase.RUNNING, placement=Placement("p", "w0", ()),
                 submitted_index=1)
    view = FederationView()
    view.book(w)
    assert view.submitter_spread("s") == {}
    view.set_pool(pool)
    assert view.submitter_spread("s") == {("eu", "gpu", 0, 0): {1: {"p"}}}
    assert view.submitter_spread("s", gpu_work=False) == {("eu", "gpu", 0, 100): {1: {"p"}}}
    view.release("a")
    assert view.submitter_spread("s") == {}
    assert view.submitter_spread("s", gpu_work=False) == {}
