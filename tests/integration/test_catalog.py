"""The model catalog with real `fedraft node` processes: publish from hq, a satellite copy reported by
gpu-dc's node through the CLI (`--config NODE.toml`), data locality in a placement, a refused and an
accepted PromoteMaster, and the same catalog on every node."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedraft._proto.fedraft.v1 import api_pb2 as api
from fedraft.client import Client
from fedraft.domain.outcome import Code
from fedraft.domain.placement.model import Trust, WorkloadSpec
from fedraft.domain.scheduler.explain import decode_explanation
from fedraft.domain.scheduler.rank import PARTS
from tests.integration.cluster import Cluster, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.sample_inventory]

REPO = Path(__file__).resolve().parents[2]
DIGEST_1 = hashlib.sha256(b"llama-7b v1").digest()
DIGEST_2 = hashlib.sha256(b"llama-7b v2").digest()


def _admin(cluster: Cluster, pool: str) -> Client:
    c = Client.from_profile(cluster.layout.profiles[pool], timeout=30)
    cluster._clients.append(c)
    return c


def _fedraft(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FEDRAFT_PROFILE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "fedraft", *args], env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def _promote(cluster: Cluster, proposer: str, name: str, pool: str) -> tuple[int, str, int]:
    """PromoteMaster by `proposer`'s admin, approved by the other voter pools' admins when it waits as a
    pending critical operation (SPEC §6): the (code, message, index) of its execution."""
    r = _admin(cluster, proposer).promote_master(name, pool, check=False)
    if r.WhichOneof("detail") != "governance" or r.governance.state != "pending":
        return r.code, r.message, r.index
    from fedraft.domain.governance.commands import Approve  # the critical-operations framework

    for voter in sorted(set(cluster.layout.profiles) - {proposer}):
        vote, = _admin(cluster, voter).propose([Approve(r.governance.pending_id, r.governance.command_digest)])
        assert vote.code == Code.OK, vote
    return vote.governance.result_code, vote.governance.result_message, vote.index


def _catalog_on(cluster: Cluster, client: Client, node: str) -> list[bytes]:
    request = api.ListRequest(collection="catalog", limit=1000, consistency=api.STALE).SerializeToString()
    response = api.ListResponse()
    response.ParseFromString(client.call(cluster.endpoint(node), "List", request))
    return [m.SerializeToString(deterministic=True) for m in response.catalog]


def test_publish_replicate_place_promote(shared_cluster: Cluster) -> None:
    cluster = shared_cluster
    hq, dc = _admin(cluster, "hq"), _admin(cluster, "gpu-dc")
    assert "master hq" in hq.publish_model("llama-7b", 1, DIGEST_1, 13_476_839_424, 16_000).message

    # gpu-dc's node reports its verified copy, through the CLI on its own host
    run = _fedraft("catalog", "replica", "llama-7b", "--version", "1", "--config", str(cluster.config("gpu-dc")),
                   "-o", "json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["message"] == "gpu-dc holds llama-7b version 1"

    # a workload naming the model scores data locality on the pools holding it
    wait_for(lambda: all(p.workers for p in hq.list("pools") if p.id in ("hq", "gpu-dc")), timeout=60,
             what="hq and gpu-dc reported their inventory")
    hq.pair_offer("gpu-dc", Trust.HIGH)
    dc.pair_accept("hq")
    placed = hq.submit("infer-llama", WorkloadSpec(gpus=1, gpu_memory_mb=20_000, model="llama-7b"))
    assert placed.placement.pool in ("hq", "gpu-dc")
    record = next(w for w in hq.list("workloads") if w.id == "infer-llama")
    scored = {s.pool: s.parts[PARTS.index("locality")] for s in decode_explanation(record.explanation).scored}
    assert scored and all(part == 100 for pool, part in scored.items() if pool in ("hq", "gpu-dc")), scored

    # a newer version makes gpu-dc's copy stale: it cannot become master until it holds version 2
    hq.publish_model("llama-7b", 2, DIGEST_2, 13_500_000_000, 16_000)
    code, message, _ = _promote(cluster, "hq", "llama-7b", "gpu-dc")
    assert code == Code.FAILED_PRECONDITION and "latest version, 2" in message
    refused = dc.publish_model("llama-7b", 3, DIGEST_2, 1, check=False)
    assert refused.code == Code.PERMISSION_DENIED
    dc.report_replica("llama-7b", 2, "gpu-dc")
    code, message, _ = _promote(cluster, "gpu-dc", "llama-7b", "gpu-dc")
    assert code == Code.PERMISSION_DENIED and "a satellite never promotes itself" in message
    code, message, index = _promote(cluster, "hq", "llama-7b", "gpu-dc")
    assert (code, message) == (Code.OK, "gpu-dc is the master of llama-7b; hq is a satellite")

    model, = hq.list("catalog")
    assert model.master == "gpu-dc" and [v.version for v in model.versions] == [1, 2]
    assert [(r.pool, r.version) for r in model.replicas] == [("hq", 2)]
    cluster.wait_applied(index)  # names a node that lags behind the promotion
    views = {n: _catalog_on(cluster, hq, n) for n in cluster.node_ids}
    assert all(view == [model.SerializeToString(deterministic=True)] for view in views.values()), views
