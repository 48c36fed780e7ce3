"""The incident view's RPCs (decision 0015) against a real replicated state and a real pool-local journal:
valid, malformed, unauthenticated and unauthorized input to AskIncidents and Incidents."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft._proto.fedraft.v1 import fanout_pb2 as fpb
from fedraft.crypto import fanout as fcrypto
from fedraft.crypto.request_auth import sign_request
from fedraft.crypto.signing import Identity, Signer
from fedraft.domain.outcome import Code
from fedraft.service.fanout import FanoutService, Refusal, method_name
from fedraft.service.incidents import IncidentsService
from fedraft.storage.local import INCIDENTS, LocalStore, Pending
from fedraft.storage.state import StateStore
from tests.consensus.test_placement_apply import Log
from tests.helpers import Fed, make_federation
from tests.service.test_fanout import FakeContext


@pytest.fixture()
def log(tmp_path: Path) -> Log:
    fed = make_federation()
    return Log(fed, [StateStore(tmp_path / "state", fed.genesis, map_size=64 << 20)])


@pytest.fixture()
def incidents(tmp_path: Path, log: Log) -> IncidentsService:
    local = LocalStore(tmp_path / "local", map_size=16 << 20)
    local.append(INCIDENTS, [Pending({"kind": "lockdown_entered", "level": "critical", "at_ms": 1000 + i,
                                      "detail": {"node": "gpu-dc", "round": i}}) for i in range(3)])
    fanout = FanoutService(log.stores[0], log.fed.genesis, "gpu-dc", log.fed.nodes["gpu-dc"], handler=None,
                           peer_api={}, ca_pem=b"")
    return IncidentsService(fanout, local)


def now() -> int:
    return int(time.time() * 1000)


def query(fed: Fed, who: Identity, origin: str = "hq", *, at: int | None = None, limit: int = 0) -> pb.Signed:
    return fcrypto.build_incidents_query(Signer(who), fed.cluster_id, origin_pool=origin, author="x",
                                         now_ms=now() if at is None else at, limit=limit)


def ask(svc: IncidentsService, fed: Fed, caller: Identity, body: bytes) -> pb.Signed:
    header = sign_request(Signer(caller), fed.cluster_id, method_name("AskIncidents"), body)
    out = pb.Signed()
    out.ParseFromString(svc.ask(body, FakeContext(header)))  # type: ignore[arg-type]
    return out


def refused(fn: object, *args: object) -> tuple[Code, str]:
    with pytest.raises(Refusal) as info:
        fn(*args)  # type: ignore[operator]
    return info.value.code, info.value.message


def test_a_voter_node_gets_the_pools_incidents_signed_by_its_node(log: Log, incidents: IncidentsService) -> None:
    fed = log.fed
    q = query(fed, fed.admins["hq"], limit=2)
    signed = ask(incidents, fed, fed.nodes["hq"], q.SerializeToString(deterministic=True))
    assert bytes(signed.key_id) == fed.nodes["gpu-dc"].key_id
    fcrypto.verify_message(fed.nodes["gpu-dc"].public_key, fed.cluster_id, signed)
    answer = fcrypto.parse(signed, "incidents_answer", fcrypto.MAX_ANSWER_BYTES).incidents_answer
    assert (answer.pool, answer.total, bytes(answer.query_sha256)) == ("gpu-dc", 3, fcrypto.query_digest(q))
    assert [(r.seq, r.kind) for r in answer.incidents] == [(2, "lockdown_entered"), (3, "lockdown_entered")]
    assert answer.incidents[-1].detail_json == '{"node":"gpu-dc","round":2}' and len(answer.incidents[-1].hash) == 64


def test_malformed_input_is_refused(log: Log, incidents: IncidentsService) -> None:
    fed = log.fed
    assert refused(ask, incidents, fed, fed.nodes["hq"], b"\xff\xff not protobuf")[0] == Code.INVALID_ARGUMENT
    search = fcrypto.build_query(Signer(fed.admins["hq"]), fed.cluster_id, origin_pool="hq", author="x",
                                 text="t", level="standard", now_ms=now())
    code, message = refused(ask, incidents, fed, fed.nodes["hq"], search.SerializeToString())
    assert code == Code.INVALID_ARGUMENT and "not a fan-out incidents_query" in message
    too_many = query(fed, fed.admins["hq"], limit=501)
    assert refused(ask, incidents, fed, fed.nodes["hq"], too_many.SerializeToString())[0] == Code.INVALID_ARGUMENT


def test_unauthenticated_input_is_refused(log: Log, incidents: IncidentsService) -> None:
    fed = log.fed
    body = query(fed, fed.admins["hq"]).SerializeToString()
    with pytest.raises(Refusal) as info:
        incidents.ask(body, FakeContext(b"garbage"))  # type: ignore[arg-type]
    assert info.value.status == grpc.StatusCode.UNAUTHENTICATED
    q = query(fed, fed.admins["hq"])
    forged = pb.Signed(body=q.body, key_id=q.key_id,
                       sig=Identity.generate().sign(b"fedraft/v1/fanout", fed.cluster_id, bytes(q.body)))
    assert refused(ask, incidents, fed, fed.nodes["hq"], forged.SerializeToString())[0] == Code.UNAUTHENTICATED
    stranger = query(fed, Identity.generate())
    assert refused(ask, incidents, fed, fed.nodes["hq"], stranger.SerializeToString())[0] == Code.UNAUTHENTICATED
    ask(incidents, fed, fed.nodes["hq"], q.SerializeToString())
    code, message = refused(ask, incidents, fed, fed.nodes["hq"], q.SerializeToString())
    assert code == Code.UNAUTHENTICATED and "replayed" in message


def test_unauthorized_input_is_refused(log: Log, incidents: IncidentsService) -> None:
    fed = log.fed
    body = query(fed, fed.admins["hq"]).SerializeToString()
    code, message = refused(ask, incidents, fed, fed.admins["hq"], body)  # a person may not forward
    assert code == Code.PERMISSION_DENIED and "only a voter node forwards" in message
    by_node = query(fed, fed.nodes["hq"]).SerializeToString()  # nodes are not administrators
    code, message = refused(ask, incidents, fed, fed.nodes["hq"], by_node)
    assert code == Code.PERMISSION_DENIED and "only administrators" in message
    other_pool = query(fed, fed.admins["hq"], origin="cpu-branch").SerializeToString()
    assert refused(ask, incidents, fed, fed.nodes["hq"], other_pool)[0] == Code.PERMISSION_DENIED
    expired = query(fed, fed.admins["hq"], at=now() - 200_000).SerializeToString()
    assert refused(ask, incidents, fed, fed.nodes["hq"], expired)[0] == Code.DEADLINE_EXCEEDED


def test_gather_answers_for_its_own_pool_and_lists_the_ones_it_cannot_reach(log: Log,
                                                                           incidents: IncidentsService) -> None:
    fed = log.fed
    q = query(fed, fed.admins["cpu-branch"], origin="cpu-branch")
    request = fpb.IncidentsRequest(query=q).SerializeToString()
    header = sign_request(Signer(fed.admins["cpu-branch"]), fed.cluster_id, method_name("Incidents"), request)
    response = fpb.IncidentsResponse()
    response.ParseFromString(incidents.gather(request, FakeContext(header)))  # type: ignore[arg-type]
    by_pool = {a.pool: a for a in response.answers}
    assert set(by_pool) == set(fed.genesis.node_ids) and response.served_by == "gpu-dc"
    assert by_pool["gpu-dc"].code == 0 and by_pool["gpu-dc"].HasField("answer")
    for pool in ("hq", "cpu-branch"):
        assert by_pool[pool].code == Code.UNAVAILABLE and "unreachable" in by_pool[pool].message
    # the request's signer must be the query's
    fresh = fpb.IncidentsRequest(query=query(fed, fed.admins["cpu-branch"], origin="cpu-branch")).SerializeToString()
    other = sign_request(Signer(fed.admins["hq"]), fed.cluster_id, method_name("Incidents"), fresh)
    with pytest.raises(Refusal) as info:
        incidents.gather(fresh, FakeContext(other))  # type: ignore[arg-type]
    assert info.value.code == Code.PERMISSION_DENIED
