"""The placement and pairing areas through the real Applier on LMDB: who may report what, where work
lands, zero default trust, Ticks and failover, and determinism across two stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.consensus.applier import Applier
from fedraft.crypto.envelopes import build_envelope
from fedraft.crypto.signing import Identity, Signer
from fedraft.domain import commands as c
from fedraft.domain.governance.commands import PairAccept, PairOffer
from fedraft.domain.outcome import Code
from fedraft.domain.placement import commands as pc
from fedraft.domain.placement.model import Gpu, Inventory, Trust, Worker, WorkloadSpec
from fedraft.storage import placement_schema as schema
from fedraft.storage.state import StateStore
from tests.helpers import Fed, make_federation, sign_entry

T0 = 1_800_000_000_000


def _inventory(pool: str, workers: int, gpus: int, mem: int) -> Inventory:
    return Inventory(tuple(
        Worker(f"{pool}-{w}", 32_000, 131_072,
               tuple(Gpu(f"GPU-{pool}-{w}-{g}", "test", mem) for g in range(gpus)))
        for w in range(workers)))


INVENTORY = {"hq": _inventory("hq", 1, 2, 24_576), "gpu-dc": _inventory("gpu-dc", 2, 8, 81_920),
             "cpu-branch": _inventory("cpu-branch", 2, 0, 0)}
TIERS = {"hq": "hq", "gpu-dc": "gpu", "cpu-branch": "cpu"}


class Log:
    """Signs entries as the hq leader and applies them to one or more stores in lockstep."""

    def __init__(self, fed: Fed, stores: list[StateStore]) -> None:
        self.fed, self.stores = fed, stores
        self.index, self.now = 1, T0

    def env(self, who: Identity, command: c.Command) -> pb.Signed:
        return build_envelope(Signer(who), self.fed.cluster_id, command, now_ms=self.now)

    def apply(self, *envelopes: pb.Signed) -> list[pb.Result]:
        self.index += 1
        data = sign_entry(self.fed, "hq", 1, list(envelopes), self.now)
        outs = []
        for store in self.stores:
            applied = Applier(store).apply(self.index, 1, data)
            store.commit()
            assert applied is not None
            outs.append(applied.results)
        assert all(o == outs[0] for o in outs)
        return outs[0]

    def one(self, who: Identity, command: c.Command) -> pb.Result:
        return self.apply(self.env(who, command))[0]

    def report_all(self) -> None:
        for pool, inv in INVENTORY.items():
            r = self.one(self.fed.nodes[pool], pc.ReportInventory(pool, inv, tier=TIERS[pool]))
            assert r.code == Code.OK, r

    def pair(self, a: str, b: str, trust: Trust = Trust.HIGH) -> None:
        assert self.one(self.fed.admins[a], PairOffer(b, trust)).code == Code.OK
        r = self.one(self.fed.admins[b], PairAccept(a))
        assert r.code == Code.OK and r.governance.state == "active", r


@pytest.fixture()
def fed() -> Fed:
    return make_federation()


@pytest.fixture()
def log(tmp_path: Path, fed: Fed) -> Log:
    return Log(fed, [StateStore(tmp_path / "a", fed.genesis, map_size=64 << 20)])


def test_genesis_pools_exist_and_nodes_report_only_for_their_own_pool(log: Log) -> None:
    fed = log.fed
    with log.stores[0].read() as st:
        assert sorted(p.id for p in schema.pools(st)) == ["cpu-branch", "gpu-dc", "hq"]
    r = log.one(fed.nodes["gpu-dc"], pc.ReportInventory("hq", INVENTORY["hq"]))
    assert r.code == Code.PERMISSION_DENIED and "cannot report for hq" in r.message
    r = log.one(fed.admins["hq"], pc.PoolHeartbeat("hq"))
    assert r.code == Code.PERMISSION_DENIED  # an admin is not the pool's node or agent
    r = log.one(fed.nodes["hq"], pc.PoolHeartbeat("nowhere"))
    assert r.code == Code.PERMISSION_DENIED
    log.report_all()
    with log.stores[0].read() as st:
        hq = schema.get_pool(st, "hq")
    assert hq is not None and hq.inventory == INVENTORY["hq"] and hq.status.last_heartbeat_ms == T0


def test_zero_default_trust_then_pairing_opens_other_pools(log: Log) -> None:
    fed = log.fed
    log.report_all()
    big = WorkloadSpec(gpus=8, gpu_memory_mb=80_000)
    r = log.one(fed.admins["hq"], pc.Submit("big-1", big))
    assert r.code == Code.OK and r.placement.phase == "pending" and not r.placement.pool
    small = log.one(fed.admins["hq"], pc.Submit("small-1", WorkloadSpec(gpus=1, gpu_memory_mb=20_000)))
    assert small.placement.pool == "hq"  # a pool always trusts itself
    assert log.one(fed.admins["hq"], PairAccept("gpu-dc")).code == Code.FAILED_PRECONDITION  # no offer yet
    assert log.one(fed.admins["hq"], PairOffer("hq", Trust.HIGH)).code == Code.INVALID_ARGUMENT
    log.pair("hq", "gpu-dc")
    r = log.one(fed.admins["hq"], pc.Submit("big-2", big))
    assert r.placement.pool == "gpu-dc" and len(r.placement.gpus) == 8 and r.placement.phase == "placed"


def test_submit_validation_and_ownership(log: Log) -> None:
    fed = log.fed
    log.report_all()
    assert log.one(fed.admins["hq"], pc.Submit("Bad Id", WorkloadSpec(gpus=1))).code == Code.INVALID_ARGUMENT
    assert log.one(fed.admins["hq"], pc.Submit("x", WorkloadSpec())).code == Code.INVALID_ARGUMENT
    assert log.one(fed.admins["hq"], pc.Submit("w", WorkloadSpec(cpu_millis=1000))).code == Code.OK
    assert log.one(fed.admins["hq"], pc.Submit("w", WorkloadSpec(cpu_millis=1000))).code == Code.ALREADY_EXISTS
    assert log.one(fed.nodes["hq"], pc.Submit("n", WorkloadSpec(cpu_millis=1))).code == Code.PERMISSION_DENIED
    # gpu-dc's admin is an admin: may cancel; a report from a pool the work is not on is refused
    r = log.one(fed.nodes["gpu-dc"], pc.ReportStatus("w", pc.Phase.RUNNING))
    assert r.code == Code.FAILED_PRECONDITION and "not on gpu-dc" in r.message
    assert log.one(fed.nodes["hq"], pc.ReportStatus("w", pc.Phase.RUNNING)).placement.phase == "running"
    assert log.one(fed.admins["hq"], pc.Cancel("w")).placement.phase == "cancelled"
    assert log.one(fed.admins["hq"], pc.Cancel("w")).code == Code.FAILED_PRECONDITION
    assert log.one(fed.admins["hq"], pc.Cancel("nope")).code == Code.NOT_FOUND


def test_a_gpu_is_never_booked_twice_within_one_entry(log: Log) -> None:
    fed = log.fed
    log.report_all()
    log.pair("hq", "gpu-dc")
    envs = [log.env(fed.admins["hq"], pc.Submit(f"j{i}", WorkloadSpec(gpus=1, gpu_memory_mb=1000)))
            for i in range(25)]
    results = log.apply(*envs)
    gpus = [g for r in results for g in r.placement.gpus]
    assert len(gpus) == 18 == len(set(gpus))  # 2 on hq + 16 on gpu-dc
    assert sum(1 for r in results if r.placement.phase == "pending") == 7


def test_missed_heartbeats_then_a_tick_fail_work_over(log: Log) -> None:
    fed = log.fed
    log.report_all()
    log.pair("hq", "gpu-dc")
    r = log.one(fed.admins["hq"], pc.Submit("dc-job", WorkloadSpec(gpus=1, gpu_memory_mb=20_000,
                                                                       preferred_region="")))
    assert r.placement.pool in ("hq", "gpu-dc")
    on = r.placement.pool
    other = "hq" if on == "gpu-dc" else "gpu-dc"
    for step in range(1, 5):  # the other pools keep beating; `on` falls silent
        log.now = T0 + step * 10_000
        for pool in ("cpu-branch", other):
            assert log.one(fed.nodes[pool], pc.PoolHeartbeat(pool)).code == Code.OK
        log.one(fed.nodes["hq"] if other == "hq" else fed.nodes["gpu-dc"], c.Tick(log.now))
    with log.stores[0].read() as st:
        assert schema.get_pool(st, on).status.health.value == "down"  # type: ignore[union-attr]
        w = schema.get_workload(st, "dc-job")
    assert w is not None and w.placement is not None and w.placement.pool == other
    assert w.moves[-1].from_pool == on and w.moves[-1].to_pool == other


def test_two_stores_reach_identical_state(tmp_path: Path, fed: Fed) -> None:
    stores = [StateStore(tmp_path / n, fed.genesis, map_size=64 << 20) for n in ("a", "b")]
    log = Log(fed, stores)
    log.report_all()
    log.pair("hq", "gpu-dc")
    log.pair("gpu-dc", "cpu-branch")
    for i in range(30):
        spec = WorkloadSpec(gpus=i % 3, gpu_memory_mb=1000 * (i % 3), cpu_millis=500 + i)
        log.one(fed.admins["hq" if i % 2 else "gpu-dc"], pc.Submit(f"w{i}", spec))
    log.now += 45_000
    log.one(fed.nodes["hq"], c.Tick(log.now))
    assert stores[0].digest() == stores[1].digest()
