"""MIG booking and GPU-fault invariants over random federations and event sequences (hypothesis, issue 9).

Cards are reported whole or carved into MIG instances, and flip between the two; units fail (a health
signal), vanish, recover; workers vanish and come back; work is submitted (some asking for a MIG
profile), cancelled, and moved off failed units by the same domain code the ReportInventory handler
runs (gpu_health.record_inventory, broken_reason, orchestration.plan_gpu_failover). After every step:

(a) no unit is booked twice; (b) a card and a MIG instance carved from it are never both booked;
(c) every booked unit is in its pool's current inventory, healthy, on the placement's worker;
(d) a new placement never uses a failed unit (one waiting out its hysteresis), and work that asked
    for a MIG profile holds instances of that profile of at least its memory floor;
(e) the kept view equals a fresh build of the same state.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedraft.domain.placement import gpu_health
from fedraft.domain.placement.model import Gpu, Inventory, Phase, Policy, Pool, Worker, Workload, WorkloadSpec
from fedraft.domain.placement.orchestration import plan_gpu_failover
from fedraft.domain.scheduler import FederationView, place

PROFILES = {"1g.10gb": 9_856, "2g.20gb": 19_968, "3g.40gb": 40_192}
POLICY = Policy()


@dataclass(frozen=True)
class Card:
    uuid: str
    slices: tuple[str, ...]   # profiles when carved


def _units(card: Card, carved: bool, sick: frozenset[str]) -> tuple[Gpu, ...]:
    if not carved:
        return (Gpu(card.uuid, "A100", 81_920, card.uuid not in sick, fault="xid 79" if card.uuid in sick else ""),)
    return tuple(Gpu(f"MIG-{card.uuid}-{i}", "A100 MIG", PROFILES[p], f"MIG-{card.uuid}-{i}" not in sick,
                     parent=card.uuid, profile=p, fault="fan failed" if f"MIG-{card.uuid}-{i}" in sick else "")
                 for i, p in enumerate(card.slices))


@dataclass
class World:
    cards: dict[str, dict[str, tuple[Card, ...]]]   # pool -> worker -> cards
    carved: set[str]                                # card uuids reported as MIG instances
    sick: set[str]                                  # units reported unhealthy
    gone: set[str]                                  # units not reported
    away: set[tuple[str, str]]                      # (pool, worker) not reported

    def inventory(self, pool_id: str) -> Inventory:
        workers = []
        for name, cards in sorted(self.cards[pool_id].items()):
            if (pool_id, name) in self.away:
                continue
            units = [u for card in cards for u in _units(card, card.uuid in self.carved, frozenset(self.sick))
                     if u.uuid not in self.gone]
            workers.append(Worker(name, 64_000, 256_000, tuple(sorted(units))))
        return Inventory(tuple(workers))

    def parent_of(self) -> dict[str, str]:
        return {f"MIG-{c.uuid}-{i}": c.uuid for ws in self.cards.values() for cs in ws.values() for c in cs
                for i in range(len(c.slices))}


@st.composite
def worlds(draw: st.DrawFn) -> World:
    cards: dict[str, dict[str, tuple[Card, ...]]] = {}
    carved = set()
    for p in range(draw(st.integers(1, 3))):
        cards[f"p{p}"] = {}
        for w in range(draw(st.integers(1, 2))):
            row = []
            for g in range(draw(st.integers(1, 3))):
                slices = tuple(draw(st.lists(st.sampled_from(sorted(PROFILES)), min_size=1, max_size=3)))
                card = Card(f"GPU-p{p}w{w}g{g}", slices)
                row.append(card)
                if draw(st.booleans()):
                    carved.add(card.uuid)
            cards[f"p{p}"][f"w{w}"] = tuple(row)
    return World(cards, carved, set(), set(), set())


steps = st.lists(st.tuples(st.sampled_from(("submit", "submit", "submit", "cancel", "flip", "fail", "heal",
                                            "vanish", "return", "worker")),
                           st.integers(0, 1_000)), min_size=1, max_size=30)
specs = st.builds(WorkloadSpec, gpus=st.sampled_from((1, 1, 2)),
                  gpu_memory_mb=st.sampled_from((0, 0, 9_000, 30_000)),
                  mig_profile=st.sampled_from(("", "", "1g.10gb", "3g.40gb")), priority=st.integers(0, 2),
                  cpu_millis=st.just(1_000))


def _check(view: FederationView, pools: dict[str, Pool], work: dict[str, Workload], parent_of: dict[str, str]) -> None:
    owners: dict[str, str] = {}
    for w in work.values():
        if not w.phase.holds_resources:
            continue
        assert w.placement is not None
        pool = pools[w.placement.pool]
        worker = next((x for x in pool.inventory.workers if x.name == w.placement.worker), None)
        assert worker is not None, (w.id, "worker gone")                                 # (c)
        units = {g.uuid: g for g in worker.gpus}
        for uuid in w.placement.gpus:
            assert uuid not in owners, (uuid, owners[uuid], w.id)                          # (a)
            owners[uuid] = w.id
            assert uuid in units and units[uuid].healthy, (w.id, uuid)                     # (c)
    for unit, card in parent_of.items():
        assert not (unit in owners and card in owners), (unit, card)                       # (b)
    fresh = FederationView.build(pools.values(), work.values(), [], [])
    assert view.differences(fresh) == ()                                                   # (e)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(), steps, st.data())
def test_mig_and_fault_invariants(world: World, plan: list[tuple[str, int]], data: st.DataObject) -> None:
    parent_of = world.parent_of()
    now, index = 1_000_000, 10
    pools = {p: Pool(p, tier="gpu", inventory=world.inventory(p)) for p in sorted(world.cards)}
    work: dict[str, Workload] = {}
    view = FederationView.build(pools.values(), (), [], [])
    every_unit = sorted({u for p in world.cards for w in world.cards[p].values() for c in w
                         for u in (c.uuid, *(f"MIG-{c.uuid}-{i}" for i in range(len(c.slices))))})
    for n, (action, pick) in enumerate(plan):
        now, index = now + 1_000, index + 1
        if action == "submit":
            spec = data.draw(specs)
            w = Workload(f"w{n:02d}", spec, "p0", submitted_index=index)
            decision = place(view, w, index=index, request_id=w.id.encode(), policy=POLICY)
            for victim in decision.preempted:
                view.release(victim)
                work[victim] = replace(work[victim], phase=Phase.PENDING, placement=None)
            if decision.placement is not None:
                pool = pools[decision.placement.pool]
                faulted = {f.uuid for f in pool.gpu_faults}
                worker = next(x for x in pool.inventory.workers if x.name == decision.placement.worker)
                units = {g.uuid: g for g in worker.gpus}
                for uuid in decision.placement.gpus:                                        # (d)
                    assert uuid not in faulted and units[uuid].healthy
                    assert units[uuid].memory_mb >= spec.gpu_memory_mb
                    assert not spec.mig_profile or units[uuid].profile == spec.mig_profile
                w = replace(w, phase=Phase.PLACED, placement=decision.placement)
                view.book(w)
            work[w.id] = w
        elif action == "cancel" and work:
            wid = sorted(work)[pick % len(work)]
            view.release(wid)
            work[wid] = replace(work[wid], phase=Phase.CANCELLED, placement=None)
        else:
            target = every_unit[pick % len(every_unit)]
            card = parent_of.get(target, target)
            pool_id = next(p for p in world.cards if any(c.uuid == card for cs in world.cards[p].values() for c in cs))
            if action == "flip":
                world.carved ^= {card}
            elif action == "fail":
                world.sick.add(target)
            elif action == "heal":
                world.sick.discard(target)
            elif action == "vanish":
                world.gone.add(target)
            elif action == "return":
                world.gone.discard(target)
                world.away.clear()
            else:
                worker_name = next(w for w, cs in world.cards[pool_id].items() if any(c.uuid == card for c in cs))
                world.away ^= {(pool_id, worker_name)}
            # what the ReportInventory handler does with the new inventory
            before = pools[pool_id]
            inventory = world.inventory(pool_id)
            faults = gpu_health.record_inventory(before, inventory, now)
            pools[pool_id] = replace(before, inventory=inventory, gpu_faults=faults)
            view.set_pool(pools[pool_id])
            broken = tuple((w, why) for w in view.running_on(pool_id)
                           if (why := gpu_health.broken_reason(w, pools[pool_id])) is not None)
            if broken:
                moved = plan_gpu_failover(view, broken, now, index, POLICY)
                work.update({w.id: w for w in moved.workloads})
        _check(view, pools, work, parent_of)
