"""The aggregated incident view (decision 0015): an incident of one pool, seen from another pool's node."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from fedraft.cli.main import main as fedraft
from fedraft.client import Client
from fedraft.config import load_profile
from fedraft.crypto.keyfile import load_private_key
from fedraft.domain.outcome import Code
from fedraft.incidents_view import gather_incidents
from fedraft.storage.local import INCIDENTS, LocalStore, local_path
from tests.integration.cluster import Cluster, wait_for


def _kinds(cluster: Cluster, node: str) -> list[str]:
    path = local_path(cluster.layout.node(node).data_dir)
    if not (path / "data.mdb").exists():
        return []
    with LocalStore(path, readonly=True) as store:
        return [str(r.get("kind")) for r in store.records(INCIDENTS)]


def _client_of(cluster: Cluster, pool: str, endpoint_of: str) -> Client:
    """An administrator of `pool` connected to one node only (`endpoint_of`)."""
    profile = load_profile(cluster.layout.profiles[pool])
    with open(profile.ca_cert, "rb") as f:
        ca = f.read()
    return Client([cluster.endpoint(endpoint_of)], load_private_key(profile.key_path), ca, profile.cluster_id)


def test_incident_of_one_pool_is_seen_from_another_and_silent_pools_are_listed(cluster: Cluster,
                                                                                 capsys: pytest.CaptureFixture[str]
                                                                                 ) -> None:
    cluster.start_all()
    cluster.leader()
    # hq alone (the two others frozen) loses the majority: lockdown, an incident only hq's journal holds.
    cluster.pause("gpu-dc")
    cluster.pause("cpu-branch")
    wait_for(lambda: "lockdown_entered" in _kinds(cluster, "hq"), 60, 0.5, "hq raised lockdown_entered")
    cluster.resume("gpu-dc")
    cluster.resume("cpu-branch")
    cluster.leader()
    assert "lockdown_entered" not in _kinds(cluster, "cpu-branch")

    with _client_of(cluster, "cpu-branch", "cpu-branch") as client:
        view = wait_for(lambda: gather_incidents(client, limit=50), 30, 0.5, "the incident view")
        assert view.served_by == "cpu-branch"
        by_pool = {p.pool: p for p in view.pools}
        assert set(by_pool) == {"hq", "gpu-dc", "cpu-branch"}
        assert all(p.answered for p in view.pools), [(p.pool, p.message) for p in view.pools]
        hq = by_pool["hq"]
        assert hq.signer and hq.node_id == "hq"
        assert "lockdown_entered" in [r["kind"] for r in hq.incidents]
        assert hq.total >= len(hq.incidents) >= 1

        # A node that does not answer is listed as unreachable, not hidden; the others still answer.
        cluster.kill("gpu-dc")
        view = gather_incidents(client, limit=50, timeout_ms=2000)
        by_pool = {p.pool: p for p in view.pools}
        assert not by_pool["gpu-dc"].answered and by_pool["gpu-dc"].code in (Code.UNAVAILABLE,
                                                                              Code.DEADLINE_EXCEEDED)
        assert "unreachable" in by_pool["gpu-dc"].message
        assert by_pool["hq"].answered and by_pool["cpu-branch"].answered

    # The CLI: every pool's incidents in one table, the silent pool named, exit 1.
    capsys.readouterr()
    code = fedraft(["incidents", "--all-pools", "--profile", str(cluster.layout.profiles["cpu-branch"]),
                    "--timeout", "2", "-o", "json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    pools = {p["pool"]: p for p in out["pools"]}
    assert not pools["gpu-dc"]["answered"] and "unreachable" in pools["gpu-dc"]["message"]
    assert "lockdown_entered" in [r["kind"] for r in pools["hq"]["incidents"]]

    # Only administrators: a node key is refused.
    node_key = load_private_key(cluster.layout.node("hq").key)
    profile = load_profile(cluster.layout.profiles["hq"])
    with Client([cluster.endpoint("hq")], node_key, Path(profile.ca_cert).read_bytes(), profile.cluster_id) as c:
        with pytest.raises(grpc.RpcError) as refused:
            gather_incidents(c)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
