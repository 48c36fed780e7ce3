"""Placement with real `fedraft node` processes and the sample static inventories (issue: placement).

hq has 2 workers x 2 L4 (24 GiB), gpu-dc 4 workers x 8 A100/H100 (80 GiB), cpu-branch 3 CPU-only workers.
"""

from __future__ import annotations

import pytest

from fedraft._proto.fedraft.v1 import api_pb2 as api
from fedraft.client import Client
from fedraft.domain.placement.model import Trust, WorkloadSpec
from tests.integration.cluster import Cluster, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.sample_inventory]

POOLS = ("cpu-branch", "gpu-dc", "hq")


def _admin(cluster: Cluster, pool: str) -> Client:
    c = Client.from_profile(cluster.layout.profiles[pool], timeout=30)
    cluster._clients.append(c)
    return c


def _pair_everyone(cluster: Cluster) -> None:
    for i, a in enumerate(POOLS):
        for b in POOLS[i + 1:]:
            _admin(cluster, a).pair_offer(b, Trust.HIGH)
            _admin(cluster, b).pair_accept(a)


def _inventories_in(client: Client) -> bool:
    pools = {p.id: p for p in client.list("pools")}
    return set(pools) == set(POOLS) and all(pools[p].workers for p in POOLS)


def _workloads(cluster: Cluster, node: str) -> list[tuple[str, str, str, str, tuple[str, ...]]]:
    client = cluster.client()
    endpoint = cluster.endpoint(node)
    request = api.ListRequest(collection="workloads", limit=1000, consistency=api.STALE).SerializeToString()
    response = api.ListResponse()
    response.ParseFromString(client.call(endpoint, "List", request))
    return [(w.id, w.phase, w.placement.pool, w.placement.worker, tuple(w.placement.gpus))
            for w in response.workloads]


def test_200_submissions_are_placed_identically_on_every_node(shared_cluster: Cluster) -> None:
    cluster = shared_cluster
    client = _admin(cluster, "hq")
    wait_for(lambda: _inventories_in(client), timeout=60, what="every pool reported its inventory")
    _pair_everyone(cluster)
    specs = [WorkloadSpec(gpus=1 + i % 2, gpu_memory_mb=16_000, cpu_millis=1000, ram_mb=4096, priority=i % 3)
             if i % 4 else WorkloadSpec(cpu_millis=2000, ram_mb=2048) for i in range(200)]
    results = [client.submit(f"job-{i:03d}", spec) for i, spec in enumerate(specs)]
    assert all(r.code == 0 for r in results)
    last = max(r.index for r in results)
    cluster.wait_applied(last)
    views = {n: _workloads(cluster, n) for n in cluster.node_ids}
    assert len(views["hq"]) == 200
    # higher-priority submissions preempt lower ones, so judge the final state, not the first answers
    holding = [w for w in views["hq"] if w[1] in ("placed", "running", "draining", "migrating")]
    booked = [g for w in holding for g in w[4]]
    assert len(booked) == len(set(booked)), "a GPU is booked twice"
    assert len(set(booked)) == 36, "every one of the 36 GPUs is in use: 150 GPU workloads compete for them"
    assert sum(1 for w in holding if not w[4]) == 50, "every CPU-only workload fits"
    assert views["hq"] == views["gpu-dc"] == views["cpu-branch"]
    digests = wait_for(lambda: (lambda d: d if len(set(d.values())) == 1 else None)(
        {n: (s.applied_index, s.state_digest) for n in cluster.node_ids
         for s in [cluster.status(n, digest=True)]}), what="equal digests")
    assert len(set(digests.values())) == 1


def test_killing_a_pools_node_fails_its_work_over(cluster: Cluster) -> None:
    cluster.start_all()
    cluster.leader()
    client = _admin(cluster, "hq")
    wait_for(lambda: _inventories_in(client), timeout=60, what="every pool reported its inventory")
    _pair_everyone(cluster)
    on_dc = []
    for i in range(3):
        r = client.submit(f"dc-{i}", WorkloadSpec(gpus=1, gpu_memory_mb=20_000, preferred_region="dc-east"))
        assert r.placement.pool == "gpu-dc", r
        on_dc.append(r.placement.workload_id)
    cluster.kill("gpu-dc")

    def moved() -> bool:
        ws = {w.id: w for w in client.list("workloads")}
        return all(ws[i].placement.pool == "hq" for i in on_dc)

    # 3 missed heartbeats (30 s) from the last one or from a new term, then one Tick.
    wait_for(moved, timeout=90, interval=0.5, what="work on gpu-dc failed over to hq")
    pools = {p.id: p for p in client.list("pools")}
    assert pools["gpu-dc"].health == "down"
    for w in client.list("workloads"):
        if w.id in on_dc:
            assert w.moves[-1].from_pool == "gpu-dc" and w.moves[-1].reason.startswith("failover"), w.moves
