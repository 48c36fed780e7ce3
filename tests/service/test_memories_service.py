"""fedraft.v1.Memories on one node's replicated state (decision 0009): Recipients names the pools a class is
sealed to for the caller's pool; Read gives a principal only its own pool's box, and a node opens its own
pool's box only for an authenticated principal of that pool."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fedraft._proto.fedraft.v1 import memory_pb2 as mpb
from fedraft.crypto.request_auth import sign_request
from fedraft.crypto.sealing import open_box, seal_all
from fedraft.crypto.signing import Identity, Signer
from fedraft.domain.governance.memories import PutMemory
from fedraft.domain.outcome import Code
from fedraft.domain.placement.model import Trust
from fedraft.service.fanout import Refusal
from fedraft.service.memories import MemoriesService, method_name
from fedraft.storage.state import StateStore
from tests.consensus.test_governance_apply import ok
from tests.consensus.test_placement_apply import Log
from tests.helpers import make_federation
from tests.service.test_fanout import FakeContext

STALE = mpb.MEMORY_STALE  # a linearizable read would import the engine (it patches pysyncobj's pickle)


@pytest.fixture()
def log(tmp_path: Path) -> Log:
    fed = make_federation()
    log = Log(fed, [StateStore(tmp_path / "state", fed.genesis, map_size=64 << 20)])
    log.pair("hq", "gpu-dc", Trust.HIGH)
    log.pair("hq", "cpu-branch", Trust.STANDARD)
    keys = fed.nodes
    sealed = seal_all([(p, keys[p].key_id, keys[p].public_key) for p in ("gpu-dc", "hq")], "plan", "hq", b"v1")
    ok(log.one(fed.admins["hq"], PutMemory("plan", "internal", sealed)))
    return log


def service(log: Log, node: str) -> MemoriesService:
    barrier: Future[int] = Future()
    barrier.set_result(log.index)
    engine = SimpleNamespace(store=log.stores[0], genesis=log.fed.genesis, cluster_id=log.fed.cluster_id,
                             halted="", is_leader=True, leader_id=node, in_lockdown=lambda: False,
                             read_barrier=lambda: barrier)
    return MemoriesService(engine, node, log.fed.nodes[node])  # type: ignore[arg-type]


def call(svc: MemoriesService, log: Log, method: str, who: Identity, request: Any) -> Any:
    body = request.SerializeToString()
    header = sign_request(Signer(who), log.fed.cluster_id, method_name(method), body)
    fn = svc.recipients if method == "Recipients" else svc.read
    response = mpb.RecipientsResponse() if method == "Recipients" else mpb.MemoryReadResponse()
    response.ParseFromString(fn(body, FakeContext(header)))  # type: ignore[arg-type]
    return response


def refusal(*args: Any) -> tuple[Code, str]:
    with pytest.raises(Refusal) as info:
        call(*args)
    return info.value.code, info.value.message


def test_recipients_are_for_the_callers_pool(log: Log) -> None:
    fed = log.fed
    r = call(service(log, "hq"), log, "Recipients", fed.admins["hq"],
             mpb.RecipientsRequest(data_class="internal", consistency=STALE))
    assert (r.pool, r.level, [(x.pool, x.trust) for x in r.recipients]) == \
        ("hq", "high", [("gpu-dc", "high"), ("hq", "self")])
    assert list(r.excluded) == ["cpu-branch: trusted at standard, below high"]
    assert bytes(r.recipients[0].public_key) == fed.nodes["gpu-dc"].public_key
    r = call(service(log, "hq"), log, "Recipients", fed.admins["cpu-branch"],
             mpb.RecipientsRequest(data_class="public", consistency=STALE))
    assert [x.pool for x in r.recipients] == ["cpu-branch", "hq"]  # cpu-branch's view: paired with hq only
    assert refusal(service(log, "hq"), log, "Recipients", fed.admins["gpu-dc"],
                   mpb.RecipientsRequest(data_class="internal", key="plan", consistency=STALE))[0] \
        == Code.PERMISSION_DENIED
    assert refusal(service(log, "hq"), log, "Recipients", fed.admins["hq"],
                   mpb.RecipientsRequest(data_class="nope", consistency=STALE))[0] == Code.NOT_FOUND


def test_read_gives_only_the_callers_pools_box(log: Log) -> None:
    fed = log.fed
    svc = service(log, "hq")
    r = call(svc, log, "Read", fed.admins["gpu-dc"], mpb.MemoryReadRequest(key="plan"))
    assert r.found and r.sealed.pool == "gpu-dc" and list(r.record.pools) == ["gpu-dc", "hq"] and not r.value
    assert open_box(fed.nodes["gpu-dc"], bytes(r.sealed.box), "plan", "hq") == b"v1"
    r = call(svc, log, "Read", fed.admins["cpu-branch"], mpb.MemoryReadRequest(key="plan"))
    assert r.found and not r.HasField("sealed")  # metadata only: cpu-branch holds nothing
    assert not call(svc, log, "Read", fed.admins["hq"], mpb.MemoryReadRequest(key="nope")).found


def test_a_node_opens_its_own_pools_box_for_its_own_pool_only(log: Log) -> None:
    fed = log.fed
    r = call(service(log, "gpu-dc"), log, "Read", fed.admins["gpu-dc"], mpb.MemoryReadRequest(key="plan", open=True))
    assert (r.opened, r.value, r.served_pool) == (True, b"v1", "gpu-dc")
    code, message = refusal(service(log, "gpu-dc"), log, "Read", fed.admins["hq"],
                            mpb.MemoryReadRequest(key="plan", open=True))
    assert code == Code.FAILED_PRECONDITION and "opens pool gpu-dc's values only" in message
    code, message = refusal(service(log, "cpu-branch"), log, "Read", fed.admins["cpu-branch"],
                            mpb.MemoryReadRequest(key="plan", open=True))
    assert code == Code.PERMISSION_DENIED and "pool cpu-branch holds no sealed value of plan" in message
    assert refusal(service(log, "hq"), log, "Read", fed.admins["hq"],
                   mpb.MemoryReadRequest(key="nope", open=True))[0] == Code.NOT_FOUND
    # a request signed for another method does not pass
    body = mpb.MemoryReadRequest(key="plan").SerializeToString()
    header = sign_request(Signer(fed.admins["hq"]), fed.cluster_id, method_name("Recipients"), body)
    with pytest.raises(Refusal, match="another method"):
        service(log, "hq").read(body, FakeContext(header))  # type: ignore[arg-type]
