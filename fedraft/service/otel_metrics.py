"""The SPEC §8 metrics as OpenTelemetry instruments, on the node's own meter (fedraft.telemetry).

The same names and labels as the Prometheus endpoint (fedraft.service.metrics), so a collector that
exports to Prometheus yields the names operators already chart. Fed by NodeSignals like the
Prometheus registry; term, apply lag, replication lag, apply halted, build info, peers connected,
database space and the oldest pending critical operation are observed at collection time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from fedraft.consensus.applier import AppliedEntry
from fedraft.domain.outcome import Code
from fedraft.service.audit import RefusedRequest
from fedraft.service.metrics import (
    FSYNC_BUCKETS,
    LATENCY_BUCKETS,
    MIGRATION_BUCKETS,
    NO_SOURCES,
    NodeSources,
    build_info,
    code_label,
    database_space,
    pending_critical,
    placement_outcome,
)

if TYPE_CHECKING:  # importing the engine patches pysyncobj: only a node process should
    from fedraft.consensus.engine import RaftEngine


class OtelMetrics:
    def __init__(self, meter: Any, engine: RaftEngine, node_id: str,
                 replication_lag: Callable[[], dict[str, float]] = dict, sources: NodeSources = NO_SOURCES) -> None:
        from opentelemetry.metrics import CallbackOptions, Observation

        self.engine = engine
        self.node_id = node_id
        self.commit_latency = meter.create_histogram(
            "fedraft_commit_latency_seconds", unit="s",
            description="Propose to applied result, as the leader's API saw it",
            explicit_bucket_boundaries_advisory=list(LATENCY_BUCKETS))
        self.fsync = meter.create_histogram(
            "fedraft_fsync_seconds", unit="s", description="Raft journal fsync (one per group commit)",
            explicit_bucket_boundaries_advisory=list(FSYNC_BUCKETS))
        self.migration_duration = meter.create_histogram(
            "fedraft_migration_duration_seconds", unit="s",
            description="A move's time to running at its destination (effective time)",
            explicit_bucket_boundaries_advisory=list(MIGRATION_BUCKETS))
        self.leader_changes = meter.create_counter("fedraft_raft_leader_changes",
                                                   description="Leader changes this node observed")
        self.rejected = meter.create_counter("fedraft_requests_rejected",
                                             description="Requests refused at the API or rejected at apply")
        self.placements = meter.create_counter("fedraft_placements", description="Submit and migrate outcomes at apply")
        self.migrations = meter.create_counter("fedraft_migrations", description="Workload moves off a pool")

        def term(_options: CallbackOptions) -> Iterable[Observation]:
            yield Observation(self.engine.term)

        def apply_lag(_options: CallbackOptions) -> Iterable[Observation]:
            e = self.engine
            yield Observation(max(0, e.commit_index - e.raft_last_applied), {"node": self.node_id})

        def replication(_options: CallbackOptions) -> Iterable[Observation]:
            for peer, seconds in sorted(replication_lag().items()):
                yield Observation(seconds, {"node": peer})

        def halted(_options: CallbackOptions) -> Iterable[Observation]:
            yield Observation(1 if self.engine.halted else 0)

        build = build_info()

        def build_gauge(_options: CallbackOptions) -> Iterable[Observation]:
            yield Observation(1, build)

        def peers(_options: CallbackOptions) -> Iterable[Observation]:
            if sources.peers_connected is not None:
                yield Observation(sources.peers_connected())

        def db_used(_options: CallbackOptions) -> Iterable[Observation]:
            for name, (used, _size) in database_space(sources.databases).items():
                yield Observation(used, {"db": name})

        def db_size(_options: CallbackOptions) -> Iterable[Observation]:
            for name, (_used, size) in database_space(sources.databases).items():
                yield Observation(size, {"db": name})

        def oldest_pending(_options: CallbackOptions) -> Iterable[Observation]:
            with self.engine.store.read() as st:
                yield Observation(pending_critical(st)[1])

        meter.create_observable_gauge("fedraft_raft_term", [term], description="Current Raft term")
        meter.create_observable_gauge("fedraft_apply_halted", [halted],
                                      description="1 if this node stopped applying (a failed apply; see its log)")
        meter.create_observable_gauge("fedraft_build_info", [build_gauge], description="Versions this node runs")
        meter.create_observable_gauge("fedraft_peers_connected", [peers],
                                      description="Voter peers with a live, authenticated peer stream")
        meter.create_observable_gauge("fedraft_db_used_bytes", [db_used], unit="By",
                                      description="LMDB bytes up to the last page written")
        meter.create_observable_gauge("fedraft_db_map_size_bytes", [db_size], unit="By",
                                      description="LMDB map size: the most the database can hold")
        meter.create_observable_gauge("fedraft_pending_critical_oldest_seconds", [oldest_pending], unit="s",
                                      description="Effective-time age of the oldest critical operation waiting "
                                                  "for approvals")
        meter.create_observable_gauge("fedraft_apply_lag_entries", [apply_lag],
                                      description="Committed entries not applied yet")
        meter.create_observable_gauge("fedraft_replication_lag_seconds", [replication], unit="s",
                                      description="On the leader: how long each follower's oldest unacknowledged "
                                                  "entry has waited")

    def on_applied(self, applied: AppliedEntry) -> None:
        for i, result in enumerate(applied.results):
            if result.code != Code.OK:
                self.rejected.add(1, {"reason": code_label(result.code)})
            summary = applied.envelopes[i] if i < len(applied.envelopes) else None
            outcome = placement_outcome(summary.command, result) if summary is not None else None
            if outcome is not None:
                self.placements.add(1, {"result": outcome})

    def on_refused(self, refused: RefusedRequest) -> None:
        self.rejected.add(1, {"reason": refused.code})

    def observe_commit(self, seconds: float) -> None:
        self.commit_latency.record(seconds)

    def leader_changed(self) -> None:
        self.leader_changes.add(1)

    def observe_fsync(self, seconds: float) -> None:
        self.fsync.record(seconds)

    def moved(self, source: str, destination: str, reason: str) -> None:
        self.migrations.add(1, {"source": source, "destination": destination, "reason": reason})

    def observe_migration(self, seconds: float) -> None:
        self.migration_duration.record(seconds)
