"""Prometheus metrics of one node (SPEC §8 names and decision 0020's additions), served on the probe
port's /metrics.

Needs the `[prometheus]` extra (prometheus_client); without it `make_metrics` returns None and
/metrics answers 404 with a hint. Gauges are read from the engine and the replicated state at scrape
time (a custom collector: nothing to keep in step). Counters and histograms are fed from outside apply
(D14) by fedraft.service.signals.NodeSignals: the engine's apply listener (after the tick's commit), the
API's refusal hook and its propose path, and its sampler (leader changes, fsyncs, moves, replication lag).
What the engine does not hold (live peer streams, the LMDB environments' space) comes from NodeSources.
"""

from __future__ import annotations

import importlib.metadata
import logging
import platform
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fedraft._proto.fedraft.v1 import governance_pb2 as gpb
from fedraft._proto.fedraft.v1 import placement_pb2 as ppb
from fedraft.consensus.applier import AppliedEntry
from fedraft.domain.outcome import Code
from fedraft.service.audit import RefusedRequest
from fedraft.storage.governance_schema import PENDING
from fedraft.storage.placement_schema import POOLS, WORKLOADS
from fedraft.storage.state import StateTxn
from fedraft.wire.placement import gpu_units

if TYPE_CHECKING:  # importing the engine patches pysyncobj: only a node process should
    from fedraft.consensus.engine import RaftEngine

log = logging.getLogger(__name__)

EXTRA_HINT = "install the [prometheus] extra: pip install 'fedraft[prometheus]'"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
MIGRATION_BUCKETS = (1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
HOLDS_RESOURCES = frozenset({"placed", "running", "draining", "migrating"})
PLACEMENT_COMMANDS = frozenset({"submit", "migrate"})
# fedraft_pool_health values (SPEC §8)
DOWN, UNHEALTHY, DEGRADED, HEALTHY = 0, 1, 2, 3


@dataclass(frozen=True)
class NodeSources:
    """What the node gauges read besides the engine: how many voter peers have a live, authenticated
    stream (fedraft.transport.links.PeerLinks), and each LMDB environment's (bytes used, map size)
    by name (state, journal, local). An empty source exports no sample."""

    peers_connected: Callable[[], int] | None = None
    databases: Mapping[str, Callable[[], tuple[int, int]]] = field(default_factory=dict)


NO_SOURCES = NodeSources()


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_info() -> dict[str, str]:
    """fedraft_build_info's labels: this process's fedraft, pysyncobj, grpcio and Python versions."""
    return {"version": _version("fedraft"), "pysyncobj": _version("pysyncobj"), "grpcio": _version("grpcio"),
            "python": platform.python_version()}


def pending_critical(st: StateTxn) -> tuple[int, float]:
    """(critical operations waiting for approvals, the oldest one's age in seconds). The age is in
    effective time (D6): the state's effective time minus the operation's proposed_ms, 0 when none
    waits, so every node reports the same value at the same applied index."""
    waiting = 0
    oldest: int | None = None
    for _, raw in st.items(PENDING):
        p = gpb.PendingRecord()
        p.ParseFromString(raw)
        if p.state == "pending":
            waiting += 1
            oldest = p.proposed_ms if oldest is None else min(oldest, p.proposed_ms)
    return waiting, 0.0 if oldest is None else max(0, st.effective_ms - oldest) / 1000


def database_space(databases: Mapping[str, Callable[[], tuple[int, int]]]) -> dict[str, tuple[int, int]]:
    """(used, map size) per database; one that cannot be read right now (closing, a snapshot install
    swapping the state) is left out of this scrape."""
    out = {}
    for name, usage in sorted(databases.items()):
        try:
            out[name] = usage()
        except Exception:
            log.debug("database %s: space unavailable", name, exc_info=True)
    return out


def prometheus_available() -> bool:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


def pool_health_level(pool: ppb.PoolRecord) -> int:
    """0 down; 1 unhealthy (up, but every GPU it has is unhealthy); 2 degraded (some GPUs unhealthy,
    cordoned or draining); 3 healthy."""
    if pool.health == "down":
        return DOWN
    healthy, total = gpu_units(pool)
    if total and not healthy:
        return UNHEALTHY
    if healthy < total or pool.cordoned or pool.HasField("drain_started_ms"):
        return DEGRADED
    return HEALTHY


def placement_outcome(command: str, result: Any) -> str | None:
    """The fedraft_placements_total{result} label of one applied envelope, or None if it placed nothing."""
    if command not in PLACEMENT_COMMANDS:
        return None
    if result.code != Code.OK:
        return "rejected"
    if result.HasField("placement") and result.placement.pool:
        return "placed"
    return "pending"


def code_label(code: int) -> str:
    return Code(code).name if code in Code._value2member_map_ else f"CODE_{code}"


class NodeMetrics:
    """The registry of one node; `render()` is the /metrics body."""

    def __init__(self, engine: RaftEngine, node_id: str,
                 replication_lag: Callable[[], dict[str, float]] = dict, sources: NodeSources = NO_SOURCES) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.engine = engine
        self.node_id = node_id
        self.registry = CollectorRegistry(auto_describe=False)
        self.leader_changes = Counter("fedraft_raft_leader_changes", "Leader changes this node observed",
                                      registry=self.registry)
        self.commit_latency = Histogram("fedraft_commit_latency_seconds",
                                        "Propose to applied result, as the leader's API saw it",
                                        buckets=LATENCY_BUCKETS, registry=self.registry)
        self.rejected = Counter("fedraft_requests_rejected", "Requests refused at the API or rejected at apply",
                                ["reason"], registry=self.registry)
        self.placements = Counter("fedraft_placements", "Submit and migrate outcomes at apply", ["result"],
                                  registry=self.registry)
        self.fsync = Histogram("fedraft_fsync_seconds", "Raft journal fsync (one per group commit)",
                               buckets=FSYNC_BUCKETS, registry=self.registry)
        self.migrations = Counter("fedraft_migrations", "Workload moves off a pool (reason failover, drain, "
                                  "return, rebalance, migrate, preempted); destination none: requeued",
                                  ["source", "destination", "reason"], registry=self.registry)
        self.migration_duration = Histogram("fedraft_migration_duration_seconds",
                                            "A move's time to running at its destination (effective time)",
                                            buckets=MIGRATION_BUCKETS, registry=self.registry)
        self.registry.register(_StateCollector(engine, node_id, replication_lag, sources))

    # ----- feeds (never inside apply) -----
    def on_applied(self, applied: AppliedEntry) -> None:
        """Engine apply listener (tick thread, after the commit): count rejections and placements."""
        try:
            for i, result in enumerate(applied.results):
                if result.code != Code.OK:
                    self.rejected.labels(code_label(result.code)).inc()
                summary = applied.envelopes[i] if i < len(applied.envelopes) else None
                outcome = placement_outcome(summary.command, result) if summary is not None else None
                if outcome is not None:
                    self.placements.labels(outcome).inc()
        except Exception:  # metrics never break the tick thread
            log.exception("metrics: could not count an applied entry")

    def on_refused(self, refused: RefusedRequest) -> None:
        self.rejected.labels(refused.code).inc()

    def observe_commit(self, seconds: float) -> None:
        self.commit_latency.observe(seconds)

    def leader_changed(self) -> None:
        self.leader_changes.inc()

    def observe_fsync(self, seconds: float) -> None:
        self.fsync.observe(seconds)

    def moved(self, source: str, destination: str, reason: str) -> None:
        self.migrations.labels(source, destination, reason).inc()

    def observe_migration(self, seconds: float) -> None:
        self.migration_duration.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _StateCollector:
    """Gauges read at scrape time from the engine and one read transaction of the state."""

    def __init__(self, engine: RaftEngine, node_id: str, replication_lag: Callable[[], dict[str, float]],
                 sources: NodeSources) -> None:
        self.engine = engine
        self.node_id = node_id
        self.replication_lag = replication_lag
        self.sources = sources
        self.build = build_info()

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        e = self.engine

        def gauge(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=list(labels) if labels else None)
            g.add_metric(list(labels.values()) if labels else [], value)
            return g

        yield gauge("fedraft_raft_term", "Current Raft term", e.term)
        yield gauge("fedraft_raft_is_leader", "1 if this node is the leader", 1 if e.is_leader else 0)
        yield gauge("fedraft_raft_commit_index", "Raft commit index", e.commit_index)
        yield gauge("fedraft_apply_lag_entries", "Committed entries not applied yet",
                    max(0, e.commit_index - e.raft_last_applied), {"node": self.node_id})
        yield gauge("fedraft_lockdown", "1 if this node is in lockdown (SPEC D11)", 1 if e.in_lockdown() else 0)
        yield gauge("fedraft_apply_halted", "1 if this node stopped applying (a failed apply; see its log)",
                    1 if e.halted else 0)
        yield gauge("fedraft_build_info", "Versions this node runs (always 1)", 1, self.build)
        if self.sources.peers_connected is not None:
            yield gauge("fedraft_peers_connected", "Voter peers with a live, authenticated peer stream",
                        self.sources.peers_connected())
        used = GaugeMetricFamily("fedraft_db_used_bytes", "LMDB bytes up to the last page written", labels=["db"])
        size = GaugeMetricFamily("fedraft_db_map_size_bytes", "LMDB map size: the most the database can hold",
                                 labels=["db"])
        for name, (used_bytes, map_bytes) in database_space(self.sources.databases).items():
            used.add_metric([name], used_bytes)
            size.add_metric([name], map_bytes)
        yield from (used, size)
        lag = GaugeMetricFamily("fedraft_replication_lag_seconds",
                                "On the leader: how long each follower's oldest unacknowledged entry has waited",
                                labels=["node"])
        for peer, seconds in sorted(self.replication_lag().items()):
            lag.add_metric([peer], seconds)
        yield lag
        try:
            yield from self._from_state()
        except Exception:  # a read racing a snapshot install: the engine gauges still go out
            log.debug("state metrics unavailable", exc_info=True)

    def _from_state(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        health = GaugeMetricFamily("fedraft_pool_health", "0 down, 1 unhealthy, 2 degraded, 3 healthy",
                                   labels=["pool", "region"])
        gpus = GaugeMetricFamily("fedraft_pool_gpus", "GPUs by state", labels=["pool", "state"])
        workloads = GaugeMetricFamily("fedraft_pool_workloads", "Workloads holding resources", labels=["pool"])
        booked: dict[str, int] = {}
        holding: dict[str, int] = {}
        pools: list[ppb.PoolRecord] = []
        with self.engine.store.read() as st:
            pending, oldest = pending_critical(st)
            applied = st.applied_index
            for _, raw in st.items(POOLS):
                rec = ppb.PoolRecord()
                rec.ParseFromString(raw)
                pools.append(rec)
            for _, raw in st.items(WORKLOADS):
                w = ppb.WorkloadRecord()
                w.ParseFromString(raw)
                if w.phase in HOLDS_RESOURCES and w.HasField("placement"):
                    booked[w.placement.pool] = booked.get(w.placement.pool, 0) + len(w.placement.gpus)
                    holding[w.placement.pool] = holding.get(w.placement.pool, 0) + 1
        for pool in pools:
            health.add_metric([pool.id, pool.region], pool_health_level(pool))
            healthy, units = gpu_units(pool)
            taken = booked.get(pool.id, 0)
            gpus.add_metric([pool.id, "free"], max(0, healthy - taken))
            gpus.add_metric([pool.id, "booked"], taken)
            gpus.add_metric([pool.id, "unhealthy"], units - healthy)
            workloads.add_metric([pool.id], holding.get(pool.id, 0))
        total = GaugeMetricFamily("fedraft_pools_total", "Pools in the federation")
        total.add_metric([], len(pools))
        pending_g = GaugeMetricFamily("fedraft_pending_critical", "Critical operations waiting for approvals")
        pending_g.add_metric([], pending)
        oldest_g = GaugeMetricFamily("fedraft_pending_critical_oldest_seconds",
                                     "Effective-time age of the oldest critical operation waiting for approvals")
        oldest_g.add_metric([], oldest)
        applied_g = GaugeMetricFamily("fedraft_applied_index", "Last log index applied to the state")
        applied_g.add_metric([], applied)
        yield from (total, health, gpus, workloads, pending_g, oldest_g, applied_g)


def make_metrics(engine: RaftEngine, node_id: str, available: Callable[[], bool] = prometheus_available,
                 replication_lag: Callable[[], dict[str, float]] = dict,
                 sources: NodeSources = NO_SOURCES) -> NodeMetrics | None:
    """The node's metrics, or None without prometheus_client."""
    if not available():
        return None
    return NodeMetrics(engine, node_id, replication_lag, sources)
