"""What a node's metrics are fed from, for Prometheus and OpenTelemetry alike, outside apply (D14).

NodeSignals passes the engine's apply listener (tick thread, after the state commit) and the API's
refusal and commit-latency hooks on to every sink, and samples on its own thread every SAMPLE_S:
- leader changes: a known leader in another (term, leader) than the last one seen;
- journal fsync durations (drained from the journal, so none is counted twice);
- replication lag per follower, on the leader only: how long the oldest entry a follower has not
  acknowledged has been in the leader's log (0 when it matches the leader's last index), to the
  resolution of the sampling;
- workload moves (migrations, failovers, drains, returns, rebalances, preemptions) from the Move
  records of the replicated state, read when an applied command may have moved something; and how
  long a move took to land, from the move's (leader-stamped) time to the first state in which the
  workload runs at its destination, in effective time.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from fedraft._proto.fedraft.v1 import placement_pb2 as ppb
from fedraft.consensus.applier import AppliedEntry
from fedraft.service.audit import RefusedRequest
from fedraft.storage.placement_schema import WORKLOADS

if TYPE_CHECKING:  # importing the engine patches pysyncobj: only a node process should
    from fedraft.consensus.engine import RaftEngine

log = logging.getLogger(__name__)

SAMPLE_S = 0.25
LAG_WINDOW = 2400  # samples of the leader's last index kept (10 min at SAMPLE_S): lag beyond reads as a floor
# commands whose apply may move a workload or land one (orchestration runs on Tick)
MOVE_COMMANDS = frozenset({"tick", "migrate", "submit", "report_status", "pool_control", "cancel"})
NO_POOL = "none"  # label of a move's missing end (a requeue has no destination)


class SignalSink(Protocol):
    def on_applied(self, applied: AppliedEntry) -> None: ...
    def on_refused(self, refused: RefusedRequest) -> None: ...
    def observe_commit(self, seconds: float) -> None: ...
    def leader_changed(self) -> None: ...
    def observe_fsync(self, seconds: float) -> None: ...
    def moved(self, source: str, destination: str, reason: str) -> None: ...
    def observe_migration(self, seconds: float) -> None: ...


class NodeSignals:
    def __init__(self, engine: RaftEngine, sinks: list[SignalSink],
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.sinks = list(sinks)
        self.monotonic = monotonic
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fedraft-signals", daemon=True)
        self._last_leader: tuple[int, str] | None = None
        self._log_samples: collections.deque[tuple[float, int]] = collections.deque(maxlen=LAG_WINDOW)
        self._lag: dict[str, float] = {}
        self._moves_dirty = True
        self._moves_seen = engine.store.applied_index()  # count moves from this process's start
        self._landing: dict[str, tuple[int, int]] = {}   # workload -> (move index, move at_ms) not landed yet

    # ----- feeds -----
    def on_applied(self, applied: AppliedEntry) -> None:
        if any(e is not None and e.command in MOVE_COMMANDS for e in applied.envelopes):
            self._moves_dirty = True
        self._each("on_applied", applied)

    def on_refused(self, refused: RefusedRequest) -> None:
        self._each("on_refused", refused)

    def observe_commit(self, seconds: float) -> None:
        self._each("observe_commit", seconds)

    def replication_lag(self) -> dict[str, float]:
        """Seconds each follower is behind the leader's log; empty unless this node leads."""
        return dict(self._lag)

    def _each(self, method: str, *args: object) -> None:
        for sink in self.sinks:
            try:
                getattr(sink, method)(*args)
            except Exception:  # metrics never break the tick thread or a request
                log.exception("metrics sink %s failed", type(sink).__name__)

    # ----- sampling -----
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            try:
                self.sample()
            except Exception:  # a stopping engine or a read racing a snapshot install: next round
                log.debug("signal sample failed", exc_info=True)

    def sample(self) -> None:
        """One round: leader, fsync, replication lag, moves."""
        self.sample_leader()
        for seconds in self.engine.journal.take_fsync_seconds():
            self._each("observe_fsync", seconds)
        self.sample_replication()
        if self._moves_dirty:
            self._moves_dirty = False
            self.sample_moves()

    def sample_leader(self) -> None:
        """A change is a known leader in another (term, leader) than the last seen (the first is not one)."""
        leader = self.engine.leader_id
        if not leader:
            return
        seen = (self.engine.term, leader)
        if self._last_leader is not None and seen != self._last_leader:
            self._each("leader_changed")
        self._last_leader = seen

    def sample_replication(self) -> None:
        e = self.engine
        if not e.is_leader:
            self._log_samples.clear()
            self._lag = {}
            return
        now = self.monotonic()
        last = e.journal.last_index() or 0
        if not self._log_samples or self._log_samples[-1][1] != last:
            self._log_samples.append((now, last))
        status = e.raft_status()
        lag = {}
        for peer in e.peer_ids:
            match = int(status.get(f"match_idx_server_{peer}", 0))
            if match >= last:
                lag[peer] = 0.0
                continue
            # the first sample in which the leader held an entry past `match` (the oldest one: a floor)
            since = next((t for t, idx in self._log_samples if idx > match), now)
            lag[peer] = max(0.0, now - since)
        self._lag = lag

    def sample_moves(self) -> None:
        moves: list[tuple[str, str, str]] = []
        landed: list[float] = []
        with self.engine.store.read() as st:
            applied, now_ms = st.applied_index, st.effective_ms
            for _, raw in st.items(WORKLOADS):
                w = ppb.WorkloadRecord()
                w.ParseFromString(raw)
                if not w.moves:
                    continue
                for m in w.moves:
                    if m.index > self._moves_seen and m.from_pool:
                        moves.append((m.from_pool, m.to_pool or NO_POOL, m.reason))
                last = w.moves[-1]
                if last.from_pool and last.to_pool and last.index > self._moves_seen:
                    self._landing[w.id] = (last.index, last.at_ms)
                pending = self._landing.get(w.id)
                if pending is None:
                    continue
                if pending[0] != last.index or w.phase not in ("placed", "migrating", "running"):
                    del self._landing[w.id]  # moved again, requeued or ended before it ran
                elif w.phase == "running" and w.placement.pool == last.to_pool:
                    landed.append(max(0, now_ms - pending[1]) / 1000)
                    del self._landing[w.id]
        self._moves_seen = max(self._moves_seen, applied)
        for source, destination, reason in moves:
            self._each("moved", source, destination, reason)
        for seconds in landed:
            self._each("observe_migration", seconds)
