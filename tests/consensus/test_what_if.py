"""What-if agrees with apply (issue 9): the answer of `simulate` on the state at index A equals what the
real applier does when the failure then happens as entry A + 1 (pool down, GPU failure) — and the
simulation itself changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedraft.consensus.what_if import Change, Scenario, UnknownTarget, simulate
from fedraft.domain import commands as c
from fedraft.domain.outcome import Code
from fedraft.domain.placement import commands as pc
from fedraft.domain.placement.model import Gpu, Inventory, Placement, Trust, Worker, Workload, WorkloadSpec
from fedraft.storage import placement_schema as schema
from fedraft.storage.state import StateStore
from tests.consensus.test_placement_apply import Log
from tests.helpers import Fed, make_federation

Row = tuple[str, str, Placement | None, str, Placement | None, str]


def _inventory(pool: str, workers: int, gpus: int) -> Inventory:
    return Inventory(tuple(Worker(f"{pool}-{w}", 64_000, 262_144,
                                  tuple(Gpu(f"GPU-{pool}-{w}-{g}", "A100", 81_920) for g in range(gpus)))
                           for w in range(workers)))


# Different sizes, so no two targets tie on score (a tie is broken by a hash of the index).
SIZES = {"hq": (1, 4), "gpu-dc": (2, 8), "cpu-branch": (1, 6)}


@pytest.fixture()
def log(tmp_path: Path) -> Log:
    fed: Fed = make_federation()
    log = Log(fed, [StateStore(tmp_path / "a", fed.genesis, map_size=64 << 20)])
    for pool, (workers, gpus) in SIZES.items():
        r = log.one(fed.nodes[pool], pc.ReportInventory(pool, _inventory(pool, workers, gpus), tier="gpu"))
        assert r.code == Code.OK
    log.pair("hq", "gpu-dc", Trust.HIGH)
    log.pair("hq", "cpu-branch", Trust.HIGH)
    for i in range(14):
        spec = WorkloadSpec(gpus=1 + i % 3, cpu_millis=1000, priority=i % 3)
        assert log.one(fed.admins["hq"], pc.Submit(f"w{i:02d}", spec)).code == Code.OK
    return log


def _workloads(log: Log) -> dict[str, Workload]:
    with log.stores[0].read() as st:
        return {w.id: w for w in schema.workloads(st)}


def _real_changes(before: dict[str, Workload], after: dict[str, Workload]) -> list[Row]:
    rows = []
    for wid in sorted(after):
        a, b = after[wid], before.get(wid)
        if a == b:
            continue
        moved = a.moves[-1].reason if b is None or a.moves != b.moves else ""
        rows.append((wid, b.phase.value if b else "", b.placement if b else None, a.phase.value, a.placement, moved))
    return rows


def _rows(changes: tuple[Change, ...]) -> list[Row]:
    return [(x.workload_id, x.phase_before, x.before, x.phase, x.after, x.reason) for x in changes]


def _simulate(log: Log, kind: str, target: str) -> list[Row]:
    store = log.stores[0]
    digest = store.digest()
    with store.read() as st:
        answer = simulate(st, store.genesis, Scenario(kind, target))
        assert answer.at_index == st.applied_index + 1 == log.index + 1
    assert store.digest() == digest  # a what-if writes nothing
    return _rows(answer.changes)


def test_a_gpu_failure_does_what_simulate_said(log: Log) -> None:
    busy = sorted(g for w in _workloads(log).values() if w.placement for g in w.placement.gpus
                  if g.startswith("GPU-gpu-dc"))
    uuid = busy[0]
    predicted = _simulate(log, "gpu", uuid)
    assert predicted and all(row[5] == "gpu-fault" for row in predicted)
    before = _workloads(log)
    with log.stores[0].read() as st:
        pool = schema.get_pool(st, "gpu-dc")
    assert pool is not None
    workers = tuple(Worker(w.name, w.cpu_millis, w.ram_mb,
                           tuple(Gpu(g.uuid, g.model, g.memory_mb, False, fault="critical XID 79") if g.uuid == uuid
                                 else g for g in w.gpus)) for w in pool.inventory.workers)
    r = log.one(log.fed.nodes["gpu-dc"], pc.ReportInventory("gpu-dc", Inventory(workers), tier="gpu"))
    assert r.code == Code.OK
    assert _real_changes(before, _workloads(log)) == predicted


def test_a_pool_going_down_does_what_simulate_said(log: Log) -> None:
    # gpu-dc falls silent; the others keep beating until the Tick that finds it DOWN
    fed = log.fed
    log.now += 20_000
    for pool in ("hq", "cpu-branch"):
        assert log.one(fed.nodes[pool], pc.PoolHeartbeat(pool)).code == Code.OK
    predicted = _simulate(log, "pool", "gpu-dc")
    assert predicted and {row[5] for row in predicted} <= {"failover", "preempted", ""}
    before = _workloads(log)
    log.now += 10_000
    log.one(fed.nodes["hq"], c.Tick(log.now))
    with log.stores[0].read() as st:
        assert schema.get_pool(st, "gpu-dc").status.health.value == "down"  # type: ignore[union-attr]
    assert _real_changes(before, _workloads(log)) == predicted


def test_a_drain_does_what_simulate_said(log: Log) -> None:
    fed = log.fed
    predicted = _simulate(log, "drain", "cpu-branch")
    # A retry is a real outcome too: which workload is pending (and whether a drained GPU frees room
    # for it) depends on the federation's random keys through the hash tie-break.
    assert predicted and {row[5] for row in predicted} <= {"drain", "preempted", "retry", ""}
    before = _workloads(log)
    assert log.one(fed.admins["cpu-branch"], pc.PoolControl("cpu-branch", "drain")).code == Code.OK
    for _ in range(7):  # 60 s of drain, everyone beating
        log.now += 10_000
        for pool in ("hq", "gpu-dc", "cpu-branch"):
            log.one(fed.nodes[pool], pc.PoolHeartbeat(pool))
    log.one(fed.nodes["hq"], c.Tick(log.now))
    moved = [p for p in predicted if p[5]]  # work that only retried in vain is due at other times later
    assert any(p[5] == "drain" for p in moved)
    real = [(r[0], r[3], r[4], r[5]) for r in _real_changes(before, _workloads(log)) if r[5]]
    assert real == [(p[0], p[3], p[4], p[5]) for p in moved]


def test_unknown_targets_are_refused(log: Log) -> None:
    with log.stores[0].read() as st, pytest.raises(UnknownTarget, match="no pool reports a GPU GPU-nope"):
        simulate(st, log.stores[0].genesis, Scenario("gpu", "GPU-nope"))
    with log.stores[0].read() as st, pytest.raises(UnknownTarget, match="pool nowhere is not registered"):
        simulate(st, log.stores[0].genesis, Scenario("pool", "nowhere"))
