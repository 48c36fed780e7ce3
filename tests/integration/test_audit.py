"""Pool-local audit and incident journals on three real `fedraft node` processes (SPEC §5, D14).

Every node journals the same applied records; each journals the requests its own API refused; every
chain verifies with `fedraft audit --verify`; and when a pool's node dies, the survivors raise a
pool_down incident once its heartbeats are missed (D7: about 30 s).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest

from fedraft._proto.fedraft.v1 import api_pb2 as api
from fedraft.config import load_node_config
from fedraft.domain.outcome import Code
from fedraft.storage.local import AUDIT, INCIDENTS, LocalStore, local_path
from tests.integration.cluster import Cluster, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _records(cluster: Cluster, node: str, chain: str = AUDIT) -> list[dict[str, Any]]:
    """Read the node's journal as `fedraft audit` does: read-only, beside the running node."""
    path = local_path(load_node_config(cluster.config(node)).data_dir)
    if not (path / "data.mdb").exists():
        return []
    with LocalStore(path, readonly=True) as store:
        return store.records(chain)


def _applied(records: list[dict[str, Any]], upto: int) -> list[tuple[int, int, str, int]]:
    return sorted((r["index"], r["ordinal"], r["command"], r["code"]) for r in records
                  if r["kind"] == "applied" and r["index"] <= upto)


def _audit_cli(cluster: Cluster, node: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "fedraft", "audit", "--config", str(cluster.config(node)), *args],
                          capture_output=True, text=True, timeout=60, env=env, cwd=REPO)


def test_every_node_journals_the_same_applied_records_and_its_own_refusals(cluster: Cluster) -> None:
    cluster.start_all()
    leader = cluster.leader()
    client = cluster.client(timeout=30)
    results = [client.put("/routes/api", b"10.0.0.7:8080"), client.put("/settings/mode", b"blue"),
               client.delete("/routes/api")]
    assert all(r.code == Code.OK for r in results)
    refused = client.put("/secrets/token", b"x", check=False)  # outside /routes/ and /settings/: refused at the API
    assert refused.code == Code.INVALID_ARGUMENT
    for node in cluster.node_ids:  # an unsigned request: refused by every node's own API
        with pytest.raises(grpc.RpcError) as info:
            client.call(cluster.endpoint(node), "Get", api.GetRequest(key="/routes/api").SerializeToString(),
                        signed=False)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    last = max(r.index for r in results)
    cluster.wait_applied(last)

    def journaled() -> dict[str, list[dict[str, Any]]] | None:
        views = {n: _records(cluster, n) for n in cluster.node_ids}
        ok = all(any(r["kind"] == "applied" and r["index"] >= last for r in v) and
                 any(r["kind"] == "refused" and r["method"] == "Get" for r in v) for v in views.values())
        return views if ok else None

    views = wait_for(journaled, timeout=30, interval=0.2, what="every node journaled the writes")
    # Heartbeats and ticks keep coming: compare up to what every node has surely journaled.
    upto = min(max(r["index"] for r in v if r["kind"] == "applied") for v in views.values())
    applied = {n: _applied(v, upto) for n, v in views.items()}
    assert applied["hq"] == applied["gpu-dc"] == applied["cpu-branch"]
    puts = [(i, o, cmd, code) for i, o, cmd, code in applied["hq"] if cmd in ("put", "delete")]
    assert [(cmd, code) for _, _, cmd, code in puts] == [("put", 0), ("put", 0), ("delete", 0)]
    assert puts[0][0] == results[0].index and puts[2][0] == results[2].index
    by_hq = [r for r in views["hq"] if r["kind"] == "applied" and r["index"] == results[0].index]
    assert by_hq[0]["author"] == {"name": "hq-admin", "pool": "hq", "role": "admin"}
    assert all(r["command"] and r["author"] for r in views["hq"] if r["kind"] == "applied" and r["code"] == 0)

    # refusals are the refusing node's own; the put went to the leader, which alone refused it
    proposals = []
    for node, view in views.items():
        mine = [r for r in view if r["kind"] == "refused"]
        assert {r["node"] for r in mine} == {node}
        assert any(r["method"] == "Get" and r["code_name"] == "UNAUTHENTICATED" for r in mine), mine
        proposals += [r for r in mine if r["method"] == "Propose"]
    [r] = proposals
    assert r["code_name"] == "INVALID_ARGUMENT" and r["author"]["name"] == "hq-admin", r
    assert r["node"] == leader or cluster.leader() != leader  # (unless the leadership moved meanwhile)

    for node in cluster.node_ids:
        done = _audit_cli(cluster, node, "--verify")
        assert done.returncode == 0, (node, done.stdout, done.stderr)
        assert "audit:" in done.stdout and "chain intact" in done.stdout
        done = _audit_cli(cluster, node, "--since", str(results[0].index), "--kind", "applied", "-o", "json")
        assert done.returncode == 0, done.stderr

    # A pool's node dies: the survivors see its pool go DOWN (3 missed heartbeats, then a Tick) and say so.
    cluster.kill("gpu-dc")

    def down_everywhere() -> bool:
        return all(any(i["kind"] == "pool_down" and i["detail"]["pool"] == "gpu-dc"
                       for i in _records(cluster, n, INCIDENTS)) for n in ("hq", "cpu-branch"))

    wait_for(down_everywhere, timeout=120, interval=1.0, what="a pool_down incident for gpu-dc on the survivors")
    for node in ("hq", "cpu-branch"):
        incidents = [i for i in _records(cluster, node, INCIDENTS) if i["kind"] == "pool_down"]
        assert len(incidents) == 1 and incidents[0]["level"] == "critical" and incidents[0]["node"] == node
        assert _audit_cli(cluster, node, "--verify").returncode == 0
