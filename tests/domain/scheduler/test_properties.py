"""Properties of the scheduler over random federations and submission sequences (hypothesis).

(a) two independently built views, fed the same sequence, give identical decisions and explanation bytes;
(b) no GPU UUID is ever booked twice; (c) every placement passes every filter, checked by the plain
reference below (not the scheduler's filter code); (d) the explanation agrees with the decision;
(e) preemption only evicts strictly lower priority.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fedraft.domain.placement.model import (
    Gpu,
    Health,
    Inventory,
    Latency,
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
from fedraft.domain.scheduler import FederationView, decode_explanation, encode_explanation, place
from fedraft.domain.scheduler.feasible import Request, narrow
from fedraft.domain.scheduler.rank import Scorer
from fedraft.domain.scheduler.select import tie_key

REGIONS = ("eu", "us", "ap")
MEMORY = (16_000, 40_000, 80_000)


@st.composite
def pools(draw: st.DrawFn) -> list[Pool]:
    out = []
    for i in range(draw(st.integers(1, 7))):
        workers = []
        for w in range(draw(st.sampled_from((0, 1, 1, 2, 3)))):
            units = tuple(Gpu(f"p{i}-w{w}-g{g}", "X", draw(st.sampled_from(MEMORY)), draw(st.booleans()) or g == 0)
                          for g in range(draw(st.integers(0, 4))))
            workers.append(Worker(f"w{w}", draw(st.sampled_from((0, 4_000, 16_000, 16_000))),
                                  draw(st.sampled_from((0, 16_000, 64_000, 64_000))), units))
        out.append(Pool(
            f"p{i}", region=draw(st.sampled_from(REGIONS)), tier=draw(st.sampled_from(("gpu", "cpu", ""))),
            labels=tuple(sorted(draw(st.sets(st.sampled_from(("a", "b")))))),
            status=PoolHealth(health=Health.DOWN if draw(st.integers(0, 9)) == 0 else Health.UP),
            inventory=Inventory(tuple(workers)), cordoned=draw(st.integers(0, 11)) == 0,
            drain_started_ms=1 if draw(st.integers(0, 11)) == 0 else None))
    return out


specs = st.builds(
    WorkloadSpec,
    gpus=st.sampled_from((0, 1, 1, 2, 3)), gpu_memory_mb=st.sampled_from((0, 0, 0, 30_000, 60_000)),
    cpu_millis=st.sampled_from((0, 1_000, 1_000, 8_000)), ram_mb=st.sampled_from((0, 8_000, 8_000, 40_000)),
    priority=st.integers(0, 3), min_trust=st.sampled_from((Trust.NONE, Trust.STANDARD, Trust.STANDARD, Trust.HIGH)),
    labels=st.sampled_from(((), (), (), ("a",), ("b",))),
    exclude_pools=st.sampled_from(((), (), (), ("p0",), ("p1",))),
    preferred_region=st.sampled_from(("", "eu", "us")), model=st.sampled_from(("", "m")),
    max_latency_ms=st.sampled_from((0, 0, 0, 20, 100)),
)


@dataclass
class Scenario:
    pools: list[Pool]
    pairings: list[tuple[str, str, Trust]]
    replicas: list[tuple[str, str]]
    policy: Policy
    steps: list[tuple[str, object]] = field(default_factory=list)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    ps = draw(pools())
    ids = [p.id for p in ps]
    levels = (Trust.NONE, Trust.STANDARD, Trust.STANDARD, Trust.HIGH, Trust.MAX)
    pairings = [(a, b, draw(st.sampled_from(levels))) for i, a in enumerate(ids) for b in ids[i + 1:]
                if draw(st.integers(0, 3))]
    replicas = [("m", p) for p in ids if draw(st.integers(0, 2)) == 0]
    lat = [Latency(a, b, draw(st.sampled_from((10, 50, 200)))) for a, b in (("eu", "us"), ("us", "ap"))
           if draw(st.booleans())]
    weights = Weights(*draw(st.tuples(*[st.integers(0, 4)] * 6)))
    policy = Policy(preemption=draw(st.booleans()), weights=weights, latencies=tuple(lat))
    steps: list[tuple[str, object]] = []
    for _ in range(draw(st.integers(1, 30))):
        roll = draw(st.integers(0, 9))
        if steps and roll == 0:
            steps.append(("release", draw(st.integers(0, len(steps)))))
        elif roll == 1:
            steps.append(("pool", (draw(st.integers(0, len(ps) - 1)), draw(st.sampled_from(CHANGES)))))
        else:
            submitter = draw(st.sampled_from([*ids, *ids, "ghost"]))
            avoid = frozenset(draw(st.sampled_from(((), (), (), (ids[-1],)))))
            steps.append(("submit", (draw(specs), submitter, avoid)))
    return Scenario(ps, pairings, replicas, policy, steps)


# -- the reference: each filter written plainly, independent of feasible.py ----------------------


def reference_refuses(name: str, sc: Scenario, booked: dict[str, Workload], w: Workload, pool: Pool,
                      avoid: frozenset[str]) -> bool:
    spec = w.spec
    if name == "health":
        return pool.status.health is not Health.UP
    if name == "state":
        return pool.cordoned or pool.drain_started_ms is not None
    if name == "excluded":
        return pool.id in spec.exclude_pools or pool.id in avoid
    if name == "trust":
        if pool.id == w.submitter_pool:
            return False
        levels = [lvl for a, b, lvl in sc.pairings if {a, b} == {w.submitter_pool, pool.id}]
        level = levels[0] if levels else Trust.NONE
        return level < Trust.STANDARD or level < spec.min_trust
    if name == "labels":
        return not set(spec.labels) <= set(pool.labels)
    if name == "latency":
        if not spec.max_latency_ms:
            return False
        ms = latency(sc, w.submitter_pool, pool)
        return ms is None or ms > spec.max_latency_ms
    if name in ("gpus", "cpu", "ram"):
        return not any(worker_fits(booked, w, pool.id, x, upto=name) for x in pool.inventory.workers)
    raise AssertionError(name)


def latency(sc: Scenario, submitter: str, pool: Pool) -> int | None:
    origin = next((p.region for p in sc.pools if p.id == submitter), None)
    if origin is None:
        return None
    if origin == pool.region:
        return 0
    found = [lat.ms for lat in sc.policy.latencies if {lat.region_a, lat.region_b} == {origin, pool.region}]
    return found[0] if found else None


def worker_fits(booked: dict[str, Workload], w: Workload, pool_id: str, worker: Worker, upto: str = "ram") -> bool:
    here = [b for b in booked.values()
            if b.placement and (b.placement.pool, b.placement.worker) == (pool_id, worker.name)]
    taken = {u for b in booked.values() if b.placement for u in b.placement.gpus}
    free = [g for g in worker.gpus if g.healthy and g.uuid not in taken and g.memory_mb >= w.spec.gpu_memory_mb]
    if len(free) < w.spec.gpus:
        return False
    if upto != "gpus" and worker.cpu_millis - sum(b.spec.cpu_millis for b in here) < w.spec.cpu_millis:
        return False
    return upto != "ram" or worker.ram_mb - sum(b.spec.ram_mb for b in here) >= w.spec.ram_mb


POOL_FILTERS = ("health", "state", "excluded", "trust", "labels", "latency")


def reference_feasible(sc: Scenario, booked: dict[str, Workload], w: Workload, pool: Pool,
                       avoid: frozenset[str]) -> bool:
    return not any(reference_refuses(n, sc, booked, w, pool, avoid) for n in POOL_FILTERS) and \
        not reference_refuses("ram", sc, booked, w, pool, avoid)


def check_placement(sc: Scenario, booked: dict[str, Workload], w: Workload, p: Placement,
                    avoid: frozenset[str]) -> None:
    pool = next(x for x in sc.pools if x.id == p.pool)
    for name in POOL_FILTERS:
        assert not reference_refuses(name, sc, booked, w, pool, avoid), name
    worker = next(x for x in pool.inventory.workers if x.name == p.worker)
    assert len(p.gpus) == len(set(p.gpus)) == w.spec.gpus and p.gpus == tuple(sorted(p.gpus))
    units = {g.uuid: g for g in worker.gpus}
    taken = {u for b in booked.values() if b.placement for u in b.placement.gpus}
    for uuid in p.gpus:
        assert uuid in units and units[uuid].healthy and units[uuid].memory_mb >= w.spec.gpu_memory_mb
        assert uuid not in taken
    assert worker_fits(booked, w, p.pool, worker)


# -- running a scenario ----------------------------------------------------------------------------


def build(sc: Scenario, shuffle: random.Random | None) -> FederationView:
    ps, pairs, reps = list(sc.pools), list(sc.pairings), list(sc.replicas)
    if shuffle is not None:
        shuffle.shuffle(ps)
        shuffle.shuffle(reps)
        pairs = [(b, a, lvl) for a, b, lvl in pairs]
        shuffle.shuffle(pairs)
    return FederationView.build(ps, (), pairs, reps)


CHANGES = ("down", "up", "cordon", "uncordon", "sick", "region")


def changed(pool: Pool, change: str) -> Pool:
    """A pool after a health, cordon, inventory or region change (what set_pool is for)."""
    if change in ("down", "up"):
        return replace(pool, status=PoolHealth(health=Health.DOWN if change == "down" else Health.UP))
    if change in ("cordon", "uncordon"):
        return replace(pool, cordoned=change == "cordon")
    if change == "region":
        return replace(pool, region=REGIONS[(REGIONS.index(pool.region) + 1) % len(REGIONS)])
    workers = tuple(replace(w, gpus=tuple(replace(g, healthy=False) if i == 0 else g for i, g in enumerate(w.gpus)))
                    for w in pool.inventory.workers)
    return replace(pool, inventory=Inventory(workers))


def run(sc: Scenario, view: FederationView, *, check: bool) -> list[bytes]:
    sc = replace(sc, pools=list(sc.pools))
    booked: dict[str, Workload] = {}
    out: list[bytes] = []
    submitted: list[Workload] = []
    for n, (kind, arg) in enumerate(sc.steps):
        if kind == "release":
            assert isinstance(arg, int)
            if arg < len(submitted):
                view.release(submitted[arg].id)
                booked.pop(submitted[arg].id, None)
            continue
        if kind == "pool":
            at, change = arg  # type: ignore[misc]
            sc.pools[at] = changed(sc.pools[at], change)
            view.set_pool(sc.pools[at])
            continue
        spec, submitter, avoid = arg  # type: ignore[misc]
        w = Workload(f"w{n:02d}", spec, submitter, submitted_index=n + 1)
        submitted.append(w)
        request_id = n.to_bytes(4, "big")
        decision = place(view, w, index=100 + n, request_id=request_id, policy=sc.policy, avoid=avoid)
        data = encode_explanation(decision.explanation)
        out.append(repr((decision.placement, decision.preempted)).encode() + data)
        if check:
            check_decision(sc, view, booked, w, decision, avoid, 100 + n, request_id, data)
        if decision.placement is not None:
            for victim in decision.preempted:
                view.release(victim)
                booked.pop(victim)
            placed = replace(w, phase=Phase.PLACED, placement=decision.placement)
            view.book(placed)
            booked[w.id] = placed
            units = [u for b in booked.values() if b.placement for u in b.placement.gpus]
            assert len(units) == len(set(units))                                       # (b)
            assert view.booked_gpus() == frozenset(units)
    return out


def check_decision(sc: Scenario, view: FederationView, booked: dict[str, Workload], w: Workload, decision: object,
                   avoid: frozenset[str], index: int, request_id: bytes, data: bytes) -> None:
    from fedraft.domain.scheduler.stack import Decision
    assert isinstance(decision, Decision)
    e = decision.explanation
    assert decode_explanation(data) == e and len(data) < 6_000
    req = Request.of(view, w, sc.policy, avoid)
    scorer = Scorer(view, req, sc.policy.weights)
    eligible, _ = narrow(view, req)                                                   # indexes == plain filters
    assert eligible == {p.id for p in view.pools()
                        if not any(reference_refuses(n, sc, booked, w, p, avoid) for n in POOL_FILTERS)}
    for s in e.scored:                                                                # (d) totals are the parts
        assert s.total == sum(a * b for a, b in zip(e.weights, s.parts, strict=True)) == scorer.total(s.pool)
    for r in e.refused:                                                               # (d) refusals are real
        for pool_id, _ in r.examples:
            pool = view.pool(pool_id)
            assert pool is not None and reference_refuses(r.filter, sc, booked, w, pool, avoid), (r, pool_id)
    feasible = [p.id for p in view.pools() if reference_feasible(sc, booked, w, p, avoid)]
    event("preempted" if decision.preempted else "placed" if decision.placement else "not placed")
    event(f"feasible pools: {min(len(feasible), 3)}{'+' if len(feasible) >= 3 else ''}")
    if decision.placement is None:
        assert not feasible and not e.chosen and not decision.preempted
        return
    p = decision.placement
    assert (e.chosen, e.worker, e.gpus) == (p.pool, p.worker, p.gpus) and e.scored[0].pool == p.pool
    if not decision.preempted:
        check_placement(sc, booked, w, p, avoid)                                     # (c)
        assert e.scored[0].total == max(s.total for s in e.scored)                    # (d) chosen is the top
        best = max(scorer.total(f) for f in feasible)
        tied = sorted(f for f in feasible if scorer.total(f) == best)
        assert p.pool in tied and e.scored[0].total == best
        assert p.pool == min(tied, key=lambda f: (tie_key(index, request_id, f), f))
        return
    assert sc.policy.preemption and not feasible
    victims = [booked[v] for v in decision.preempted]
    for v in victims:                                                                 # (e)
        assert v.spec.priority < w.spec.priority
        assert v.placement is not None and (v.placement.pool, v.placement.worker) == (p.pool, p.worker)
    remaining = {k: b for k, b in booked.items() if k not in decision.preempted}
    check_placement(sc, remaining, w, p, avoid)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.integers(0, 2**32))
def test_decisions_are_deterministic_and_correct(sc: Scenario, seed: int) -> None:
    first = run(sc, build(sc, None), check=True)
    second = run(sc, build(sc, random.Random(seed)), check=False)
    assert first == second                                                            # (a)
