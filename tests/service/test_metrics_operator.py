"""The gauges decision 0020 added for operators: the oldest pending critical operation, database space,
apply halted, build info and peers connected, on /metrics and as OpenTelemetry instruments.

Real LMDB throughout (the state, the Raft journal, the pool-local store); the engine is a fake holding
only what the gauges read.
"""

from __future__ import annotations

import importlib.metadata
import platform
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fedraft._proto.fedraft.v1 import governance_pb2 as gpb
from fedraft.consensus.journal import LmdbJournal
from fedraft.service.metrics import NodeSources, make_metrics
from fedraft.storage.governance_schema import PENDING
from fedraft.storage.local import LocalStore
from fedraft.storage.state import M_EFFECTIVE, StateStore
from tests.helpers import make_federation

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families

MAP = 64 << 20


@dataclass
class FakeEngine:
    store: StateStore
    halted: str | None = None
    is_leader: bool = True
    term: int = 2
    commit_index: int = 7
    raft_last_applied: int = 7
    peer_ids: list[str] = field(default_factory=lambda: ["cpu-branch", "gpu-dc"])

    def in_lockdown(self) -> bool:
        return False


@dataclass
class Node:
    engine: FakeEngine
    journal: LmdbJournal
    local: LocalStore
    connected: set[str] = field(default_factory=set)

    def sources(self) -> NodeSources:
        return NodeSources(
            peers_connected=lambda: sum(p in self.connected for p in self.engine.peer_ids),
            databases={"state": self.engine.store.usage, "journal": self.journal.usage, "local": self.local.usage})


@pytest.fixture()
def node(tmp_path: Path) -> Iterator[Node]:
    store = StateStore(tmp_path / "state", make_federation().genesis, map_size=MAP)
    journal = LmdbJournal(tmp_path / "journal", map_size=MAP)
    local = LocalStore(tmp_path / "local", map_size=MAP)
    yield Node(FakeEngine(store), journal, local)
    local.close()
    journal.close()
    store.close()


def _pending(pending_id: bytes, state: str, proposed_ms: int) -> bytes:
    rec = gpb.PendingRecord(pending_id=pending_id, command="set_policy", state=state, proposed_ms=proposed_ms,
                            expires_ms=proposed_ms + 3_600_000)
    return rec.SerializeToString(deterministic=True)


def _write_pending(store: StateStore, records: list[tuple[bytes, str, int]], effective_ms: int) -> None:
    st = store.writer()
    for pending_id, state, proposed_ms in records:
        st.put(PENDING, pending_id.hex().encode(), _pending(pending_id, state, proposed_ms))
    st.set_meta_int(M_EFFECTIVE, effective_ms)
    store.commit()


def _scrape(node: Node) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    metrics = make_metrics(node.engine, "hq", sources=node.sources())  # type: ignore[arg-type]
    assert metrics is not None
    text = metrics.render()[0].decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _one(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_oldest_pending_is_the_effective_time_age_of_the_oldest_operation_still_waiting(node: Node) -> None:
    assert _one(_scrape(node), "fedraft_pending_critical_oldest_seconds") == 0.0  # none waits
    _write_pending(node.engine.store, [(b"\x01" * 32, "executed", 100_000),  # closed: older, not counted
                                       (b"\x02" * 32, "pending", 1_000_000),
                                       (b"\x03" * 32, "pending", 1_500_000),
                                       (b"\x04" * 32, "vetoed", 200_000)], effective_ms=2_800_000)
    samples = _scrape(node)
    assert _one(samples, "fedraft_pending_critical") == 2
    assert _one(samples, "fedraft_pending_critical_oldest_seconds") == 1800.0
    # the oldest one executes: the next oldest's age shows
    _write_pending(node.engine.store, [(b"\x02" * 32, "executed", 1_000_000)], effective_ms=2_900_000)
    assert _one(_scrape(node), "fedraft_pending_critical_oldest_seconds") == 1400.0


def test_database_space_follows_what_each_environment_holds(node: Node) -> None:
    before = _scrape(node)
    for db in ("state", "journal", "local"):
        assert _one(before, "fedraft_db_map_size_bytes", db=db) == MAP
        assert 0 < _one(before, "fedraft_db_used_bytes", db=db) < MAP
    assert _one(before, "fedraft_db_used_bytes", db="state") == node.engine.store.usage()[0]  # = Status' value
    for idx in range(1, 65):  # 2 MiB of Raft entries
        node.journal.add(bytes([idx]) * 32768, idx, 1)
    node.journal.flush()
    after = _scrape(node)
    grown = _one(after, "fedraft_db_used_bytes", db="journal") - _one(before, "fedraft_db_used_bytes", db="journal")
    assert 2 << 20 <= grown < 3 << 20
    assert _one(after, "fedraft_db_used_bytes", db="local") == _one(before, "fedraft_db_used_bytes", db="local")


def test_a_database_that_cannot_be_read_is_left_out_and_the_rest_still_goes_out(node: Node) -> None:
    node.journal.close()
    samples = _scrape(node)
    assert {dict(labels)["db"] for name, labels in samples if name == "fedraft_db_used_bytes"} == {"state", "local"}
    assert _one(samples, "fedraft_raft_term") == 2


def test_apply_halted_build_info_and_peers_connected(node: Node) -> None:
    samples = _scrape(node)
    assert _one(samples, "fedraft_apply_halted") == 0
    assert _one(samples, "fedraft_peers_connected") == 0
    versions = {"version": importlib.metadata.version("fedraft"), "pysyncobj": importlib.metadata.version("pysyncobj"),
                "grpcio": importlib.metadata.version("grpcio"), "python": platform.python_version()}
    assert _one(samples, "fedraft_build_info", **versions) == 1
    node.engine.halted = "apply failed at index 8: boom"
    node.connected = {"gpu-dc", "not-a-voter"}
    samples = _scrape(node)
    assert _one(samples, "fedraft_apply_halted") == 1
    assert _one(samples, "fedraft_peers_connected") == 1
    node.connected = {"gpu-dc", "cpu-branch"}
    assert _one(_scrape(node), "fedraft_peers_connected") == 2


def test_without_a_peer_source_there_is_no_peers_sample(node: Node) -> None:
    metrics = make_metrics(node.engine, "hq")  # type: ignore[arg-type]
    assert metrics is not None
    text = metrics.render()[0].decode()
    assert "fedraft_peers_connected" not in text and "fedraft_apply_halted 0.0" in text
    assert "fedraft_db_used_bytes{" not in text


def test_the_opentelemetry_twins_read_the_same_values(node: Node) -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from fedraft.service.otel_metrics import OtelMetrics

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    _write_pending(node.engine.store, [(b"\x02" * 32, "pending", 1_000_000)], effective_ms=1_090_500)
    node.engine.halted = "apply failed at index 8: boom"
    node.connected = {"gpu-dc"}
    OtelMetrics(provider.get_meter("test"), node.engine, "hq", sources=node.sources())  # type: ignore[arg-type]
    points: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                points.setdefault(m.name, []).extend(m.data.data_points)
    provider.shutdown()
    prom = _scrape(node)

    def value(name: str, **labels: str) -> float:
        (point,) = [p for p in points[name] if dict(p.attributes) == labels]
        return float(point.value)

    assert value("fedraft_pending_critical_oldest_seconds") == 90.5
    assert value("fedraft_apply_halted") == 1 and value("fedraft_peers_connected") == 1
    (build,) = points["fedraft_build_info"]
    assert build.value == 1 and dict(build.attributes)["pysyncobj"] == importlib.metadata.version("pysyncobj")
    for db in ("state", "journal", "local"):
        assert value("fedraft_db_map_size_bytes", db=db) == MAP
        assert value("fedraft_db_used_bytes", db=db) == _one(prom, "fedraft_db_used_bytes", db=db)
