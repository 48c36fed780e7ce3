"""HTTP probes and Prometheus metrics against a stand-in engine over a real state (no cluster)."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft._proto.fedraft.v1 import placement_pb2 as ppb
from fedraft.consensus.applier import AppliedEntry, EnvelopeSummary
from fedraft.domain.placement.model import Gpu, Inventory, Phase, Placement, Pool, Worker, Workload, WorkloadSpec
from fedraft.service.audit import RefusedRequest
from fedraft.service.metrics import (
    DEGRADED,
    DOWN,
    HEALTHY,
    UNHEALTHY,
    NodeMetrics,
    make_metrics,
    placement_outcome,
    pool_health_level,
)
from fedraft.service.probes import READY_MAX_LAG, ProbeServer
from fedraft.service.signals import NodeSignals
from fedraft.storage.placement_schema import put_pool, put_workload
from fedraft.storage.state import StateStore
from tests.helpers import make_federation

METRIC_NAMES = ("fedraft_raft_term", "fedraft_raft_leader_changes_total", "fedraft_commit_latency_seconds_bucket",
                "fedraft_apply_lag_entries", "fedraft_requests_rejected_total", "fedraft_placements_total",
                "fedraft_pools_total", "fedraft_pool_health", "fedraft_pool_gpus", "fedraft_pool_workloads",
                "fedraft_pending_critical", "fedraft_lockdown")


@dataclass
class FakeTuning:
    election_max_s: float = 2.0


@dataclass
class FakeTransport:
    contacts: dict[str, float] = field(default_factory=dict)

    def last_contact(self, node_id: str) -> float | None:
        return self.contacts.get(node_id)


@dataclass
class FakeSnapshots:
    snapshot_index: int | None = None


@dataclass
class FakeEngine:
    """What probes and metrics read of a RaftEngine."""

    store: StateStore
    is_leader: bool = True
    leader_id: str = "hq"
    term: int = 3
    commit_index: int = 40
    raft_last_applied: int = 40
    has_quorum: bool = True
    lockdown: bool = False
    halted: str | None = None
    peer_ids: list[str] = field(default_factory=lambda: ["cpu-branch", "gpu-dc"])
    cluster_id: bytes = b"\x01" * 32
    journal: list[int] = field(default_factory=lambda: [1, 2, 3])
    snapshots: FakeSnapshots = field(default_factory=FakeSnapshots)
    last_apply_monotonic: float = field(default_factory=time.monotonic)
    transport: FakeTransport = field(default_factory=FakeTransport)
    tuning: FakeTuning = field(default_factory=FakeTuning)

    def in_lockdown(self) -> bool:
        return self.lockdown


@pytest.fixture()
def engine(tmp_path: Path) -> Iterator[FakeEngine]:
    fed = make_federation()
    store = StateStore(tmp_path / "state", fed.genesis, map_size=64 << 20)
    st = store.writer()
    gpus = tuple(Gpu(f"GPU-{i}", "A100", 81920, healthy=i != 3) for i in range(4))
    put_pool(st, Pool("gpu-dc", region="dc-east", tier="gpu", voter=True,
                      inventory=Inventory((Worker("w1", 64000, 512000, gpus),))))
    put_workload(st, Workload("train", WorkloadSpec(gpus=2), "hq", Phase.RUNNING,
                              Placement("gpu-dc", "w1", ("GPU-0", "GPU-1"))))
    store.commit()
    now = time.monotonic()
    yield FakeEngine(store, transport=FakeTransport({"gpu-dc": now - 0.2}))
    store.close()


def _probes(engine: FakeEngine, metrics: Any = None) -> ProbeServer:
    server = ProbeServer("127.0.0.1:0", engine, "hq", pool="hq",  # type: ignore[arg-type]
                         peer_api={"gpu-dc": "127.0.0.1:7410"}, metrics=metrics)
    server.start()
    return server


def _get(server: ProbeServer, path: str, method: str = "GET", body: bytes | None = None) -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read().decode()
    finally:
        conn.close()


def test_health_ready_status_and_peers(engine: FakeEngine) -> None:
    server = _probes(engine)
    try:
        assert _get(server, "/health")[0] == 200
        code, kind, body = _get(server, "/ready")
        assert (code, kind, json.loads(body)["ready"]) == (200, "application/json", True)
        status = json.loads(_get(server, "/cluster/status")[2])
        assert status["node_id"] == "hq" and status["role"] == "leader" and status["term"] == 3
        assert status["voters"] == 3 and status["lockdown"] is False and status["db_map_bytes"] > 0
        peers = json.loads(_get(server, "/cluster/peers")[2])["peers"]
        assert [(p["node_id"], p["connected"]) for p in peers] == [("cpu-branch", False), ("gpu-dc", True)]
        assert peers[1]["api_address"] == "127.0.0.1:7410" and peers[0]["last_contact_ms"] is None
    finally:
        server.stop()


@pytest.mark.parametrize(("change", "reason"), [
    ({"lockdown": True}, "lockdown"),
    ({"lockdown": True}, "no quorum"),
    ({"leader_id": ""}, "no leader"),
    ({"raft_last_applied": 40 - READY_MAX_LAG - 1}, "catching up"),
    ({"halted": "apply failed at index 7"}, "halted"),
])
def test_ready_is_503_with_the_reason(engine: FakeEngine, change: dict[str, Any], reason: str) -> None:
    for key, value in change.items():
        setattr(engine, key, value)
    server = _probes(engine)
    try:
        code, _, body = _get(server, "/ready")
        assert code == 503
        doc = json.loads(body)
        assert doc["ready"] is False and reason in doc["reason"]
        assert _get(server, "/health")[0] == 200  # alive all the same
    finally:
        server.stop()


def test_unknown_paths_methods_bodies_and_long_paths_are_refused(engine: FakeEngine) -> None:
    server = _probes(engine)
    try:
        code, _, body = _get(server, "/admin")
        assert code == 404 and "/ready" in json.loads(body)["paths"]
        assert _get(server, "/health", "POST", b"x")[0] == 405
        assert _get(server, "/health", "GET", b"body")[0] == 413
        assert _get(server, "/" + "a" * 300)[0] == 414
        assert _get(server, "/health?verbose=1")[0] == 200
        assert _get(server, "/health", "HEAD")[0] == 200
    finally:
        server.stop()


def test_a_silent_client_does_not_hold_the_server(engine: FakeEngine) -> None:
    server = _probes(engine)
    try:
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(5)]
        assert _get(server, "/health")[0] == 200
        for s in idle:
            s.close()
    finally:
        server.stop()


def test_metrics_without_the_extra_are_404_with_a_hint(engine: FakeEngine) -> None:
    assert make_metrics(engine, "hq", available=lambda: False) is None  # type: ignore[arg-type]
    server = _probes(engine, metrics=None)
    try:
        code, kind, body = _get(server, "/metrics")
        assert code == 404 and kind.startswith("text/plain") and "fedraft[prometheus]" in body
    finally:
        server.stop()


def test_metrics_carry_the_spec_names_from_state_engine_and_listeners(engine: FakeEngine) -> None:
    pytest.importorskip("prometheus_client")
    metrics = make_metrics(engine, "hq", replication_lag=lambda: {"gpu-dc": 0.75})  # type: ignore[arg-type]
    assert isinstance(metrics, NodeMetrics)
    signals = NodeSignals(engine, [metrics])  # type: ignore[arg-type]
    placed = pb.Result(code=0, placement=ppb.PlacementResult(workload_id="w", pool="gpu-dc"))
    queued = pb.Result(code=0, placement=ppb.PlacementResult(workload_id="w2"))
    refused = pb.Result(code=7, message="no")
    summary = [EnvelopeSummary("submit", "a", "hq", "admin"), EnvelopeSummary("submit", "a", "hq", "admin"),
               EnvelopeSummary("put", "a", "hq", "admin")]
    signals.on_applied(AppliedEntry(9, [placed, queued, refused], [None, None, None], summary))
    signals.on_refused(RefusedRequest("Propose", "UNAUTHENTICATED", "bad signature"))
    signals.observe_commit(0.004)
    metrics.observe_fsync(0.0002)
    metrics.moved("gpu-dc", "hq", "failover")
    metrics.observe_migration(12.0)
    signals.sample_leader()
    engine.term, engine.leader_id = 4, "gpu-dc"
    signals.sample_leader()
    engine.commit_index = 45
    server = _probes(engine, metrics=metrics)
    try:
        code, kind, text = _get(server, "/metrics")
    finally:
        server.stop()
    assert code == 200 and kind.startswith("text/plain")
    for name in METRIC_NAMES:
        assert name in text, name
    lines = set(text.splitlines())
    assert "fedraft_raft_term 4.0" in lines
    assert "fedraft_raft_leader_changes_total 1.0" in lines
    assert 'fedraft_apply_lag_entries{node="hq"} 5.0' in lines
    assert 'fedraft_placements_total{result="placed"} 1.0' in lines
    assert 'fedraft_placements_total{result="pending"} 1.0' in lines
    assert 'fedraft_requests_rejected_total{reason="PERMISSION_DENIED"} 1.0' in lines
    assert 'fedraft_requests_rejected_total{reason="UNAUTHENTICATED"} 1.0' in lines
    assert "fedraft_commit_latency_seconds_count 1.0" in lines
    assert "fedraft_pools_total 3.0" in lines
    assert 'fedraft_pool_health{pool="gpu-dc",region="dc-east"} 2.0' in lines  # one GPU unhealthy: degraded
    assert 'fedraft_pool_gpus{pool="gpu-dc",state="booked"} 2.0' in lines
    assert 'fedraft_pool_gpus{pool="gpu-dc",state="free"} 1.0' in lines
    assert 'fedraft_pool_gpus{pool="gpu-dc",state="unhealthy"} 1.0' in lines
    assert 'fedraft_pool_workloads{pool="gpu-dc"} 1.0' in lines
    assert "fedraft_pending_critical 0.0" in lines and "fedraft_lockdown 0.0" in lines
    assert 'fedraft_replication_lag_seconds{node="gpu-dc"} 0.75' in lines
    assert 'fedraft_fsync_seconds_bucket{le="0.00025"} 1.0' in lines
    assert 'fedraft_migrations_total{destination="hq",reason="failover",source="gpu-dc"} 1.0' in lines
    assert 'fedraft_migration_duration_seconds_bucket{le="20.0"} 1.0' in lines


def test_pool_health_levels_and_placement_outcomes() -> None:
    gpu = ppb.GpuUnit(uuid="g", healthy=True)
    sick = ppb.GpuUnit(uuid="h", healthy=False)
    assert pool_health_level(ppb.PoolRecord(health="down")) == DOWN
    assert pool_health_level(ppb.PoolRecord(health="up", workers=[ppb.WorkerInfo(gpus=[sick])])) == UNHEALTHY
    assert pool_health_level(ppb.PoolRecord(health="up", workers=[ppb.WorkerInfo(gpus=[gpu, sick])])) == DEGRADED
    assert pool_health_level(ppb.PoolRecord(health="up", cordoned=True)) == DEGRADED
    assert pool_health_level(ppb.PoolRecord(health="up", workers=[ppb.WorkerInfo(gpus=[gpu])])) == HEALTHY
    assert pool_health_level(ppb.PoolRecord(health="up")) == HEALTHY  # a CPU pool
    # Reported healthy again but still waiting out its fault's hysteresis: it takes no work yet.
    recovering = ppb.PoolRecord(health="up", workers=[ppb.WorkerInfo(gpus=[gpu])],
                                gpu_faults=[ppb.GpuFaultRecord(uuid="g", healthy_since_ms=1)])
    assert pool_health_level(recovering) == UNHEALTHY
    assert placement_outcome("put", pb.Result()) is None
    assert placement_outcome("migrate", pb.Result(code=9)) == "rejected"
