"""The catalog area through the real Applier on LMDB: publish, versions by the master only, satellite
replicas, PromoteMaster's refusals and hand-over, and data locality in placement."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.domain.catalog.commands import PromoteMaster, PublishModel, ReportReplica
from fedraft.domain.catalog.model import CatalogEntry, Replica
from fedraft.domain.outcome import Code
from fedraft.domain.placement import commands as pc
from fedraft.domain.placement.model import Gpu, Inventory, Worker, WorkloadSpec
from fedraft.domain.scheduler.explain import decode_explanation
from fedraft.domain.scheduler.rank import PARTS
from fedraft.storage import catalog_schema as catalog
from fedraft.storage import placement_schema
from fedraft.storage.state import REPLICATED_DBS, StateStore
from tests.consensus.test_placement_apply import T0, Log
from tests.helpers import make_federation

D1, D2, D3 = b"\x11" * 32, b"\x22" * 32, b"\x33" * 32


@pytest.fixture()
def log(tmp_path: Path) -> Log:
    fed = make_federation()
    return Log(fed, [StateStore(tmp_path / "a", fed.genesis, map_size=64 << 20),
                     StateStore(tmp_path / "b", fed.genesis, map_size=64 << 20)])


def stored(log: Log, name: str) -> CatalogEntry | None:
    with log.stores[0].read() as st:
        return catalog.get_entry(st, name)


def ok(result: pb.Result) -> pb.Result:
    assert result.code == Code.OK, result
    return result


def refused(result: pb.Result, code: Code, fragment: str) -> None:
    assert (result.code, fragment in result.message) == (code, True), result


def test_catalog_is_replicated_state() -> None:
    assert catalog.CATALOG in REPLICATED_DBS  # part of the state digest (SPEC D18)


def test_first_publish_makes_the_authors_pool_master(log: Log) -> None:
    fed = log.fed
    r = ok(log.one(fed.admins["hq"], PublishModel("llama-7b", 1, D1, 13_000_000_000, 16_000)))
    assert r.message == "published llama-7b version 1; new model, master hq"
    e = stored(log, "llama-7b")
    assert e is not None and e.master == "hq" and e.master_since_ms == T0 and e.replicas == ()
    v = e.latest
    assert (v.version, v.sha256, v.size_bytes, v.gpu_memory_mb, v.published_by, v.published_index) == \
        (1, D1, 13_000_000_000, 16_000, "hq", log.index)
    # a node is not an admin or operator; a bad digest never reaches the state
    refused(log.one(fed.nodes["hq"], PublishModel("other", 1, D1, 1)), Code.PERMISSION_DENIED,
            "may not issue publish_model")
    refused(log.one(fed.admins["hq"], PublishModel("other", 1, b"short", 1)), Code.INVALID_ARGUMENT, "32 bytes")
    assert stored(log, "other") is None


def test_later_versions_come_from_the_master_only_and_increase(log: Log) -> None:
    fed = log.fed
    assert ok(log.one(fed.admins["hq"], PublishModel("llama-7b", 2, D1, 100))).message == \
        "published llama-7b version 2; new model, master hq"
    refused(log.one(fed.admins["gpu-dc"], PublishModel("llama-7b", 3, D2, 100)), Code.PERMISSION_DENIED,
            "only the master pool hq publishes llama-7b")
    refused(log.one(fed.admins["hq"], PublishModel("llama-7b", 2, D2, 100)), Code.ALREADY_EXISTS, "version 2")
    refused(log.one(fed.admins["hq"], PublishModel("llama-7b", 1, D2, 100)), Code.FAILED_PRECONDITION,
            "versions only increase")
    assert ok(log.one(fed.admins["hq"], PublishModel("llama-7b", 5, D2, 200))).message == \
        "published llama-7b version 5 from master hq"
    e = stored(log, "llama-7b")
    assert e is not None and [v.version for v in e.versions] == [2, 5] and e.latest.sha256 == D2
    # another model, another master
    ok(log.one(fed.admins["gpu-dc"], PublishModel("mistral", 1, D3, 100)))
    assert (m := stored(log, "mistral")) is not None and m.master == "gpu-dc"


def test_satellite_replicas(log: Log) -> None:
    fed = log.fed
    ok(log.one(fed.admins["hq"], PublishModel("llama-7b", 1, D1, 100)))
    refused(log.one(fed.nodes["gpu-dc"], ReportReplica("llama-7b", 2, "gpu-dc")), Code.NOT_FOUND,
            "version 2 is not published")
    refused(log.one(fed.nodes["gpu-dc"], ReportReplica("nope", 1, "gpu-dc")), Code.NOT_FOUND, "not in the catalog")
    refused(log.one(fed.nodes["gpu-dc"], ReportReplica("llama-7b", 1, "cpu-branch")), Code.PERMISSION_DENIED,
            "cannot report a replica held by cpu-branch")
    r = ok(log.one(fed.nodes["gpu-dc"], ReportReplica("llama-7b", 1, "gpu-dc")))
    assert r.message == "gpu-dc holds llama-7b version 1"
    reported_at = log.now
    log.now += 1000
    ok(log.one(fed.admins["cpu-branch"], ReportReplica("llama-7b", 1)))  # an admin, for its own pool
    r = ok(log.one(fed.nodes["hq"], ReportReplica("llama-7b", 1, "hq")))
    assert "is the master" in r.message
    e = stored(log, "llama-7b")
    assert e is not None
    assert e.replicas == (Replica("cpu-branch", 1, log.now), Replica("gpu-dc", 1, reported_at))
    assert e.holders() == ("cpu-branch", "gpu-dc", "hq")
    ok(log.one(fed.admins["hq"], PublishModel("llama-7b", 2, D2, 100)))
    assert (e := stored(log, "llama-7b")) is not None and e.holders() == ("hq",)  # satellites are behind now


def promote(log: Log, proposer: str, name: str, pool: str) -> tuple[int, str]:
    """PromoteMaster by `proposer`'s admin, then, when it waits as a pending critical operation (SPEC §6),
    an approval from every other voter pool: the (code, message) of its execution."""
    r = log.one(log.fed.admins[proposer], PromoteMaster(name, pool))
    if r.WhichOneof("detail") != "governance" or r.governance.state != "pending":
        return r.code, r.message
    from fedraft.domain.governance.commands import Approve  # the critical-operations framework

    for voter in sorted(set(log.fed.admins) - {proposer}):
        vote = ok(log.one(log.fed.admins[voter], Approve(r.governance.pending_id, r.governance.command_digest)))
    return vote.governance.result_code, vote.governance.result_message


def refused_promote(log: Log, proposer: str, name: str, pool: str, code: Code, fragment: str) -> None:
    got, message = promote(log, proposer, name, pool)
    assert (got, fragment in message) == (code, True), (got, message)


def _published_with_replica(log: Log) -> None:
    fed = log.fed
    ok(log.one(fed.admins["hq"], PublishModel("llama-7b", 1, D1, 100)))
    ok(log.one(fed.nodes["gpu-dc"], ReportReplica("llama-7b", 1, "gpu-dc")))
    ok(log.one(fed.admins["hq"], PublishModel("llama-7b", 2, D2, 100)))


def test_promote_is_refused_when_the_target_lacks_the_latest_version(log: Log) -> None:
    fed = log.fed
    _published_with_replica(log)
    refused_promote(log, "hq", "llama-7b", "gpu-dc", Code.FAILED_PRECONDITION,
                    "gpu-dc holds version 1 of llama-7b; a new master must hold the latest version, 2")
    refused_promote(log, "hq", "llama-7b", "cpu-branch", Code.FAILED_PRECONDITION, "cpu-branch holds no replica")
    refused_promote(log, "hq", "nope", "gpu-dc", Code.NOT_FOUND, "not in the catalog")
    refused(log.one(fed.nodes["hq"], PromoteMaster("llama-7b", "gpu-dc")), Code.PERMISSION_DENIED,
            "may not issue promote_master")
    assert (e := stored(log, "llama-7b")) is not None and e.master == "hq"


def test_a_satellite_never_promotes_itself(log: Log) -> None:
    fed = log.fed
    _published_with_replica(log)
    ok(log.one(fed.nodes["gpu-dc"], ReportReplica("llama-7b", 2, "gpu-dc")))
    refused_promote(log, "gpu-dc", "llama-7b", "gpu-dc", Code.PERMISSION_DENIED, "a satellite never promotes itself")
    refused_promote(log, "hq", "llama-7b", "hq", Code.PERMISSION_DENIED, "never promotes itself")
    refused_promote(log, "cpu-branch", "llama-7b", "hq", Code.ALREADY_EXISTS, "already the master")
    assert (e := stored(log, "llama-7b")) is not None and e.master == "hq"


@pytest.mark.parametrize("proposer", ["hq", "cpu-branch"])
def test_promote_hands_the_master_over(log: Log, proposer: str) -> None:
    fed = log.fed
    _published_with_replica(log)
    ok(log.one(fed.nodes["gpu-dc"], ReportReplica("llama-7b", 2, "gpu-dc")))
    log.now += 5000
    assert promote(log, proposer, "llama-7b", "gpu-dc") == \
        (Code.OK, "gpu-dc is the master of llama-7b; hq is a satellite")
    e = stored(log, "llama-7b")
    assert e is not None and (e.master, e.master_since_ms) == ("gpu-dc", log.now)
    assert e.replicas == (Replica("hq", 2, log.now),)  # the old master is a satellite holding the latest
    refused(log.one(fed.admins["hq"], PublishModel("llama-7b", 3, D3, 100)), Code.PERMISSION_DENIED,
            "only the master pool gpu-dc")
    ok(log.one(fed.admins["gpu-dc"], PublishModel("llama-7b", 3, D3, 100)))
    assert (e := stored(log, "llama-7b")) is not None and e.latest.published_by == "gpu-dc"


# --- data locality --------------------------------------------------------------------------------

def _twin_gpu_pools(log: Log) -> None:
    """hq and gpu-dc report identical GPU inventories (same tier, no region): their capacities tie."""
    fed = log.fed
    for pool in ("hq", "gpu-dc"):
        inv = Inventory((Worker("w0", 32_000, 131_072, tuple(Gpu(f"GPU-{pool}-{g}", "test", 81_920)
                                                            for g in range(4))),))
        ok(log.one(fed.nodes[pool], pc.ReportInventory(pool, inv, tier="gpu")))
    ok(log.one(fed.nodes["cpu-branch"], pc.ReportInventory("cpu-branch", Inventory(), tier="cpu")))
    log.pair("hq", "gpu-dc")


def _locality(log: Log, workload_id: str) -> dict[str, int]:
    with log.stores[0].read() as st:
        w = placement_schema.get_workload(st, workload_id)
    assert w is not None
    return {s.pool: s.parts[PARTS.index("locality")] for s in decode_explanation(w.explanation).scored}


@pytest.mark.parametrize("holder", ["hq", "gpu-dc"])
def test_a_workload_with_a_model_lands_where_a_replica_is(log: Log, holder: str) -> None:
    fed = log.fed
    _twin_gpu_pools(log)
    # the master, cpu-branch, has no GPU: only the satellite's copy can matter
    ok(log.one(fed.admins["cpu-branch"], PublishModel("llama-7b", 1, D1, 100)))
    ok(log.one(fed.nodes[holder], ReportReplica("llama-7b", 1, holder)))
    r = ok(log.one(fed.admins["hq"], pc.Submit("infer", WorkloadSpec(gpus=1, model="llama-7b"))))
    assert r.placement.pool == holder
    assert _locality(log, "infer") == {"hq": 100 if holder == "hq" else 0,
                                       "gpu-dc": 100 if holder == "gpu-dc" else 0}


def test_a_replica_reported_earlier_in_the_same_entry_counts(log: Log) -> None:
    fed = log.fed
    _twin_gpu_pools(log)
    ok(log.one(fed.admins["cpu-branch"], PublishModel("llama-7b", 1, D1, 100)))
    spec = WorkloadSpec(gpus=1, model="llama-7b")
    results = log.apply(log.env(fed.admins["hq"], pc.Submit("before", spec)),  # builds the entry's view
                        log.env(fed.nodes["gpu-dc"], ReportReplica("llama-7b", 1, "gpu-dc")),
                        log.env(fed.admins["hq"], pc.Submit("after", spec)))
    assert [r.code for r in results] == [Code.OK] * 3
    assert _locality(log, "before") == {"hq": 0, "gpu-dc": 0}
    assert _locality(log, "after")["gpu-dc"] == 100
    assert results[2].placement.pool == "gpu-dc"


def test_two_stores_end_with_the_same_digest(log: Log) -> None:
    fed = log.fed
    _published_with_replica(log)
    ok(log.one(fed.nodes["gpu-dc"], ReportReplica("llama-7b", 2, "gpu-dc")))
    assert promote(log, "cpu-branch", "llama-7b", "gpu-dc")[0] == Code.OK
    a, b = (s.digest() for s in log.stores)
    assert a == b
