"""NodeSignals: what the metrics sinks are fed (leader changes, fsyncs, replication lag, moves), over a
real state and a real journal with a stand-in for the Raft engine's own fields."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fedraft.consensus.applier import AppliedEntry, EnvelopeSummary
from fedraft.consensus.journal import LmdbJournal
from fedraft.domain.placement.model import Move, Phase, Placement, Workload, WorkloadSpec
from fedraft.service.signals import NodeSignals
from fedraft.storage.placement_schema import put_workload
from fedraft.storage.state import M_APPLIED, M_EFFECTIVE, StateStore
from tests.helpers import make_federation


@dataclass
class Engine:
    store: StateStore
    journal: LmdbJournal
    is_leader: bool = True
    leader_id: str = "hq"
    term: int = 2
    peer_ids: list[str] = field(default_factory=lambda: ["cpu-branch", "gpu-dc"])
    match: dict[str, int] = field(default_factory=dict)

    def raft_status(self) -> dict[str, Any]:
        return {f"match_idx_server_{peer}": idx for peer, idx in self.match.items()}


@dataclass
class Sink:
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.calls.append((name, args))

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [args for n, args in self.calls if n == name]


@pytest.fixture()
def engine(tmp_path: Path) -> Iterator[Engine]:
    store = StateStore(tmp_path / "state", make_federation().genesis, map_size=64 << 20)
    journal = LmdbJournal(tmp_path / "journal")
    yield Engine(store, journal)
    journal.close()
    store.close()


def _append(journal: LmdbJournal, first: int, last: int) -> None:
    for idx in range(first, last + 1):
        journal.add(b"x", idx, 2)
    journal.flush()


def _state(store: StateStore, applied: int, effective_ms: int, *workloads: Workload) -> None:
    st = store.writer()
    for w in workloads:
        put_workload(st, w)
    st.set_meta_int(M_APPLIED, applied)
    st.set_meta_int(M_EFFECTIVE, effective_ms)
    store.commit()


def test_leader_changes_and_fsyncs_reach_every_sink_once(engine: Engine) -> None:
    a, b = Sink(), Sink()
    signals = NodeSignals(engine, [a, b])  # type: ignore[arg-type]
    _append(engine.journal, 1, 3)  # flushes: fsync samples
    signals.sample()
    engine.term, engine.leader_id = 3, "gpu-dc"
    signals.sample()
    for sink in (a, b):
        assert sink.named("leader_changed") == [()]
        assert len(sink.named("observe_fsync")) == 1 and sink.named("observe_fsync")[0][0] > 0
    signals.observe_commit(0.01)
    assert a.named("observe_commit") == [(0.01,)]


def test_replication_lag_is_the_age_of_the_oldest_unacknowledged_entry(engine: Engine) -> None:
    clock = [100.0]
    signals = NodeSignals(engine, [], monotonic=lambda: clock[0])  # type: ignore[arg-type]
    _append(engine.journal, 1, 5)
    engine.match = {"gpu-dc": 5, "cpu-branch": 5}
    signals.sample_replication()
    assert signals.replication_lag() == {"gpu-dc": 0.0, "cpu-branch": 0.0}
    clock[0] = 101.0
    _append(engine.journal, 6, 8)           # entries 6-8 appear at t=101
    engine.match = {"gpu-dc": 8, "cpu-branch": 5}
    signals.sample_replication()
    clock[0] = 103.5
    _append(engine.journal, 9, 9)           # and 9 at t=103.5; cpu-branch still acknowledged only 5
    signals.sample_replication()
    assert signals.replication_lag() == {"gpu-dc": 0.0, "cpu-branch": 2.5}
    engine.is_leader = False
    signals.sample_replication()
    assert signals.replication_lag() == {}


def test_moves_are_counted_once_and_a_landed_move_is_timed(engine: Engine) -> None:
    sink = Sink()
    spec = WorkloadSpec(gpus=1)
    old = Move(1_000, 3, "hq", "gpu-dc", "failover")  # before this process started: not counted
    _state(engine.store, 5, 2_000, Workload("old", spec, "hq", Phase.RUNNING, Placement("gpu-dc", "w1"), moves=(old,)))
    signals = NodeSignals(engine, [sink])  # type: ignore[arg-type]
    signals.sample_moves()
    assert sink.calls == []

    failover = Move(10_000, 7, "gpu-dc", "hq", "failover")
    requeue = Move(10_000, 7, "gpu-dc", "", "failover")
    first = Move(9_000, 6, "", "gpu-dc", "placed")      # a first placement leaves no pool: not a move
    _state(engine.store, 7, 10_000,
           Workload("train", spec, "hq", Phase.PLACED, Placement("hq", "w1"), moves=(first, failover)),
           Workload("batch", spec, "hq", Phase.PENDING, None, moves=(requeue,)))
    signals.on_applied(AppliedEntry(7, [], [], [EnvelopeSummary("tick", "", "", "")]))
    signals.sample()
    assert sorted(sink.named("moved")) == [("gpu-dc", "hq", "failover"), ("gpu-dc", "none", "failover")]
    assert sink.named("observe_migration") == []  # placed, not running yet

    _state(engine.store, 9, 14_500,
           Workload("train", spec, "hq", Phase.RUNNING, Placement("hq", "w1"), moves=(first, failover)))
    signals.on_applied(AppliedEntry(9, [], [], [EnvelopeSummary("report_status", "", "", "")]))
    signals.sample()
    assert sink.named("observe_migration") == [(4.5,)]
    assert len(sink.named("moved")) == 2  # nothing counted twice
