"""The Raft engine: pysyncobj wrapped so that it carries only signed fedraft entries.

This is the one place that wires pysyncobj. It
- closes pysyncobj's command pickle path with a strict shim (commands are our protobuf bytes),
- injects our LMDB journal and our snapshot serializer into pysyncobj at construction,
- batches checked envelopes into leader-signed entries (many envelopes share one entry, one
  append and one fsync); the tick thread itself takes the queued envelopes at the point where
  pysyncobj takes new commands, so a write crosses no extra thread between the API and Raft,
- applies committed entries through the Applier on the tick thread, commits the state once per
  tick, then resolves the callers waiting on those requests,
- serves linearizable reads with barriers: one barrier serves every read queued before it.
"""

from __future__ import annotations

import collections
import functools
import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pysyncobj.syncobj as _ps
from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.config import FAIL_REASON
from pysyncobj.node import Node

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.consensus.applier import APPLY_VERSION, MAX_ENTRY_BYTES, AppliedEntry, Applier
from fedraft.consensus.handlers import next_deadline
from fedraft.consensus.journal import LmdbJournal
from fedraft.consensus.raft_patches import ConflictOnlyTruncation, ShortCandidateRound
from fedraft.consensus.snapshot import SnapshotSerializer, read_header
from fedraft.crypto.envelopes import build_envelope, new_request_id
from fedraft.crypto.signing import CTX_ENTRY, Identity, Signer
from fedraft.domain.commands import Barrier, Command, Tick
from fedraft.domain.outcome import Code
from fedraft.storage.state import M_APPLY_VERSION, M_TERM_START, StateStore

log = logging.getLogger(__name__)

REGULAR = b"\x00"
MAX_ENVELOPES_PER_ENTRY = 1024
MAX_IN_FLIGHT = 2
IN_FLIGHT_WAIT_S = 0.5
# pysyncobj sends an entry at or above this size through its pickle "transmission" path; keep every
# entry well below it (MAX_ENTRY_BYTES) so that path is never taken.
APPEND_BATCH_BYTES = 2 * MAX_ENTRY_BYTES
SNAPSHOT_CHUNK_BYTES = 64 * 1024


class _StrictPickle:
    """Stands in for the `pickle` module inside pysyncobj.syncobj.

    pysyncobj unpickles every applied REGULAR command as `(funcID, args)`. Our commands are raw
    protobuf bytes, so `loads` returns them as the single argument of the one replicated method and
    never interprets them. `dumps` is refused: nothing of ours is ever pickled.
    """

    @staticmethod
    def loads(data: bytes) -> tuple[int, tuple[bytes]]:
        return 0, (bytes(data),)

    @staticmethod
    def to_bytes(data: bytes) -> bytes:
        return bytes(data)

    @staticmethod
    def dumps(obj: Any, protocol: Any = None) -> bytes:
        raise TypeError("fedraft never pickles (refused pysyncobj pickle.dumps)")

    load = dump = dumps


_ps.pickle = _StrictPickle
_construct_lock = threading.Lock()


@dataclass(frozen=True)
class EngineTuning:
    election_min_s: float = 1.0
    election_max_s: float = 2.0
    heartbeat_s: float = 0.1
    tick_s: float = 0.02
    compaction_min_entries: int = 5000
    compaction_min_time_s: float = 600.0
    deadline_check_s: float = 0.2     # how often the leader looks for a due deadline (SPEC D6)
    min_tick_gap_ms: int = 1_000      # at most one Tick per this interval


class ProposalTrace(Protocol):
    """Stage marks of a traced proposal (fedraft.telemetry.ProposeTrace); untraced proposals carry None."""

    def queued(self) -> None: ...
    def submitted(self, entry_envelopes: int) -> None: ...
    def committed(self, at_ns: int) -> None: ...


@dataclass
class _Proposal:
    signed: pb.Signed
    key: tuple[bytes, bytes]
    future: Future[pb.Result]
    trace: ProposalTrace | None = None


@dataclass
class _BarrierGroup:
    futures: list[Future[int]] = field(default_factory=list)


class _SyncObj(ConflictOnlyTruncation, ShortCandidateRound, SyncObj):  # type: ignore[misc]
    def __init__(self, engine: RaftEngine, *args: Any, **kwargs: Any) -> None:
        self._engine = engine
        super().__init__(*args, **kwargs)

    def _checkCommandsToApply(self) -> None:
        # pysyncobj takes new commands here, once per tick, after apply (whose commit callbacks free
        # in-flight slots) and before the tick's sends: queued envelopes become an entry right away.
        self._engine._submit_from_tick()
        super()._checkCommandsToApply()

    @replicated  # type: ignore[untyped-decorator]
    def _apply_fedraft(self, data: bytes) -> None:
        self._engine._on_apply(self.raftLastApplied + 1, data)


class RaftEngine:
    def __init__(
        self,
        *,
        node_id: str,
        peer_ids: list[str],
        identity: Identity,
        store: StateStore,
        data_dir: Path,
        transport_factory: Callable[..., Any],
        tuning: EngineTuning = EngineTuning(),
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        auto_tick: bool = True,
        journal: LmdbJournal | None = None,
    ) -> None:
        """`auto_tick=False` starts no thread: the caller drives the engine with `tick()` and
        `submit_queued()` (deterministic simulation, SPEC §2); `journal` replaces the LMDB one there."""
        self.node_id = node_id
        self.auto_tick = auto_tick
        self.peer_ids = sorted(peer_ids)
        self.store = store
        self.genesis = store.genesis
        self.cluster_id = store.genesis.cluster_id
        self.signer = Signer(identity)
        self.tuning = tuning
        self.wall_ms = wall_ms
        self.applier = Applier(store)
        self.halted: str | None = None
        self.last_apply_monotonic = time.monotonic()

        self._waiters: dict[tuple[bytes, bytes], list[Future[pb.Result]]] = defaultdict(list)
        self._waiters_lock = threading.Lock()
        self._applied_batch: list[AppliedEntry] = []
        self._queue: collections.deque[_Proposal] = collections.deque()
        self._queue_lock = threading.Lock()
        self._stopping = False
        self._stop_event = threading.Event()
        # Entries submitted to pysyncobj whose commit callback has not come yet; tick thread only.
        self._in_flight = 0
        self._in_flight_since = 0.0  # monotonic time of the last submit
        self._barrier_lock = threading.Lock()
        self._barrier_next: _BarrierGroup | None = None
        self._barrier_in_flight = False
        self._apply_listeners: list[Callable[[AppliedEntry], None]] = []
        self._snapshot_listeners: list[Callable[[int, int], None]] = []
        self._last_applied = store.applied_index()  # the state's applied index, as of the last apply
        self._apply_started_ns = 0  # when the entry being applied was found committed (traced proposals)

        data_dir.mkdir(parents=True, exist_ok=True)
        self.journal = journal if journal is not None else LmdbJournal(data_dir / "journal")
        snapshot_path = data_dir / "snapshot.bin"
        if snapshot_path.exists():
            header = read_header(snapshot_path)
            self.journal.align_to_snapshot(header.prev_entry, header.last_entry)
        self.snapshots = SnapshotSerializer(
            snapshot_path, source=store, signer=self.signer, node_id=node_id, cluster_id=self.cluster_id,
            verify_key_for=self._voter_key, chunk_size=SNAPSHOT_CHUNK_BYTES,
            # pysyncobj delivers snapshot transmissions only once it exists.
            on_installed=self._on_snapshot_installed, applied_index=lambda: self.raft_last_applied,
            journal=self.journal)
        if self.snapshots.finish_interrupted_install(store):
            self._last_applied = store.applied_index()

        conf = SyncObjConf(
            autoTick=auto_tick,
            autoTickPeriod=tuning.tick_s,
            raftMinTimeout=tuning.election_min_s,
            raftMaxTimeout=tuning.election_max_s,
            appendEntriesPeriod=tuning.heartbeat_s,
            connectionTimeout=max(3.5, tuning.election_max_s),
            # SPEC §2: a cut-off leader must stop accepting writes about as fast as a new one is elected.
            leaderFallbackTimeout=tuning.election_max_s,
            appendEntriesUseBatch=False,  # our entries are already batches; send each at once
            appendEntriesBatchSizeBytes=APPEND_BATCH_BYTES,
            logCompactionMinEntries=tuning.compaction_min_entries,
            logCompactionMinTime=tuning.compaction_min_time_s,
            logCompactionBatchSize=SNAPSHOT_CHUNK_BYTES,
            fullDumpFile=str(snapshot_path),
            serializer=_never_called,
            deserializer=_never_called,
            useFork=False,
            dynamicMembershipChange=False,
            commandsQueueSize=10_000,
            onStateChanged=self._on_state_changed,
        )
        self.transport: Any = None

        def make_transport(sync_obj: Any, self_node: Any, other_nodes: Any) -> Any:
            self.transport = transport_factory(sync_obj, self_node, other_nodes,
                                               journal=self.journal, before_release=self.journal.flush,
                                               raft_min_timeout=tuning.election_min_s)
            return self.transport

        with _construct_lock:
            saved = (_ps.createJournal, _ps.Serializer)
            _ps.createJournal = lambda _path: self.journal
            _ps.Serializer = lambda *_a, **_k: self.snapshots
            try:
                self._sync = _SyncObj(self, Node(node_id), [Node(p) for p in self.peer_ids], conf=conf,
                                      transportClass=make_transport)
            finally:
                _ps.createJournal, _ps.Serializer = saved
        # _StrictPickle.loads routes every command to method id 0: it must be ours and the only one.
        assert list(self._sync._methodToID.values()) == [0], self._sync._methodToID
        self._sync.addOnTickCallback(self._after_tick)
        self._threads: list[threading.Thread] = []
        if auto_tick:
            self._threads = [
                threading.Thread(target=self._deadline_loop, name=f"fedraft-ticker-{node_id}", daemon=True)]
            for thread in self._threads:
                thread.start()

    # ----- public state -----
    @property
    def is_leader(self) -> bool:
        return bool(self._sync._isLeader())

    @property
    def leader_id(self) -> str:
        leader = self._sync._getLeader()
        return str(leader.id) if leader is not None else ""

    @property
    def term(self) -> int:
        return int(self._sync.raftCurrentTerm)

    @property
    def commit_index(self) -> int:
        return int(self._sync.raftCommitIndex)

    @property
    def raft_last_applied(self) -> int:
        return int(self._sync.raftLastApplied)

    @property
    def has_quorum(self) -> bool:
        return bool(self._sync.hasQuorum)

    def raft_status(self) -> dict[str, Any]:
        return dict(self._sync.getStatus())

    def in_lockdown(self) -> bool:
        """SPEC D11: fewer than a majority of voters (self included) heard within raftMaxTimeout.

        A node whose transport fenced itself after a failed journal fsync (decision 0017) neither
        handles nor sends Raft messages until restarted: it counts as cut off, whatever still arrives.
        """
        if self.transport.fenced:
            return True
        voters = len(self.peer_ids) + 1
        if voters == 1:
            return False
        heard = int(self.transport.contact_count(self.tuning.election_max_s))
        return heard <= voters // 2

    def add_apply_listener(self, listener: Callable[[AppliedEntry], None]) -> None:
        self._apply_listeners.append(listener)

    def add_snapshot_listener(self, listener: Callable[[int, int], None]) -> None:
        """`listener(first, last)` after a snapshot from the leader brought entries first..last (tick thread)."""
        self._snapshot_listeners.append(listener)

    # ----- proposing -----
    def propose(self, signed: pb.Signed, key: tuple[bytes, bytes],
                trace: ProposalTrace | None = None) -> Future[pb.Result]:
        """Queue one checked envelope; the future resolves with its result once applied here."""
        future: Future[pb.Result] = Future()
        if trace is not None:
            trace.queued()
        with self._waiters_lock:
            self._waiters[key].append(future)
        with self._queue_lock:
            was_empty = not self._queue
            self._queue.append(_Proposal(signed, key, future, trace))
        # Wake the tick thread only when it can act: a non-empty queue is taken by a wake-up already
        # under way, and a full pipeline takes the queue in the tick whose apply frees a slot.
        if was_empty and self.auto_tick and self._in_flight < MAX_IN_FLIGHT and self.transport is not None:
            self.transport.wake()
        return future

    def read_barrier(self) -> Future[int]:
        """Resolves with an applied index that covers every write committed before this call."""
        future: Future[int] = Future()
        with self._barrier_lock:
            if self._barrier_next is None:
                self._barrier_next = _BarrierGroup()
            self._barrier_next.futures.append(future)
            if not self._barrier_in_flight:
                self._send_barrier_locked()
        return future

    def _send_barrier_locked(self) -> None:
        group, self._barrier_next = self._barrier_next, None
        if group is None or not group.futures:
            self._barrier_in_flight = False
            return
        self._barrier_in_flight = True
        result = self.propose_own(Barrier(0))
        result.add_done_callback(functools.partial(self._barrier_done, group))

    def propose_own(self, command: Command) -> Future[pb.Result]:
        """Propose a command signed by this node (barriers, ticks)."""
        request_id = new_request_id()
        signed = build_envelope(self.signer, self.cluster_id, command, now_ms=self.wall_ms(), validity_ms=60_000,
                                request_id=request_id)
        return self.propose(signed, (self.signer.key_id, request_id))

    def _deadline_loop(self) -> None:
        """SPEC D6: the leader appends a Tick only when a stored deadline is due, at most once per gap."""
        last_tick_ms = 0
        in_flight: Future[pb.Result] | None = None
        cached_at, due = -1, None
        # Its own event: a stop must end the wait at once.
        while not self._stop_event.wait(self.tuning.deadline_check_s):
            if not self.is_leader or self.halted or (in_flight is not None and not in_flight.done()):
                continue
            now = self.wall_ms()
            if now - last_tick_ms < self.tuning.min_tick_gap_ms:
                continue
            try:
                with self.store.read() as st:
                    # The deadline is a function of the state: recompute only when the state moved on.
                    if st.applied_index != cached_at:
                        cached_at, due = st.applied_index, next_deadline(st, st.meta_int(M_TERM_START))
            except Exception:  # a read racing a snapshot install: look again next round
                log.debug("deadline check failed", exc_info=True)
                continue
            if due is not None and due <= now:
                last_tick_ms = now
                in_flight = self.propose_own(Tick(due))

    def _barrier_done(self, group: _BarrierGroup, result: Future[pb.Result]) -> None:
        exc = result.exception()
        for f in group.futures:
            if f.done():
                continue
            if exc is not None:
                f.set_exception(exc)
            elif result.result().code != Code.OK:
                f.set_exception(NotCommitted(result.result().message))
            else:
                f.set_result(int(result.result().index))
        with self._barrier_lock:
            self._send_barrier_locked()

    def _submit_from_tick(self) -> None:
        """Tick thread (automatic ticking): submit what is queued, up to MAX_IN_FLIGHT entries.

        While MAX_IN_FLIGHT entries await commit, envelopes gather: under load one entry (one append,
        one fsync per node, one apply) then carries many writes. Bounded in time, in case pysyncobj
        drops a commit callback on a leader change."""
        if not self.auto_tick or self._stopping or not self._queue:
            return
        if self._in_flight >= MAX_IN_FLIGHT:
            if time.monotonic() - self._in_flight_since < IN_FLIGHT_WAIT_S:
                return
            self._in_flight = 0
        while self._in_flight < MAX_IN_FLIGHT:
            with self._queue_lock:
                batch = self._take_batch_locked()
            if not batch:
                return
            self._submit_or_fail(batch)

    def _take_batch_locked(self) -> list[_Proposal]:
        batch: list[_Proposal] = []
        size = 0
        while self._queue and len(batch) < MAX_ENVELOPES_PER_ENTRY:
            item_size = self._queue[0].signed.ByteSize() + 8
            if batch and size + item_size > MAX_ENTRY_BYTES - 1024:
                break
            batch.append(self._queue.popleft())
            size += item_size
        return batch

    def _submit_or_fail(self, batch: list[_Proposal]) -> None:
        try:
            self._submit_entry(batch)
        except Exception as exc:  # never break the tick
            log.exception("could not submit an entry")
            self._fail(batch, NotCommitted(f"could not submit: {exc}"))

    # ----- driven by the caller (auto_tick=False) -----
    def tick(self) -> None:
        """One pysyncobj tick: messages, elections, replication, apply, then the state commit."""
        self._sync.doTick(0.0)

    def submit_queued(self) -> None:
        """Submit what is queued as one entry, as the tick thread does when ticking is automatic."""
        with self._queue_lock:
            batch = self._take_batch_locked()
        if batch:
            self._submit_or_fail(batch)

    def _submit_entry(self, batch: list[_Proposal]) -> None:
        if not self.is_leader or self.halted:
            self._fail(batch, NotLeader(self.leader_id))
            return
        # D16: an entry needs the replicated apply version, not this node's newest: a leader upgraded
        # ahead of SetApplyVersion must not stop the nodes that are not upgraded yet.
        with self.store.read() as st:
            version = min(APPLY_VERSION, st.meta_int(M_APPLY_VERSION) or 1)
        entry = pb.LogEntry(term=self.term, leader_id=self.node_id, leader_time_ms=self.wall_ms(),
                            apply_version=version, envelopes=[p.signed for p in batch])
        body = entry.SerializeToString(deterministic=True)
        signed = pb.Signed(body=body, sig=self.signer.sign(CTX_ENTRY, self.cluster_id, body),
                           key_id=self.signer.key_id)
        data = REGULAR + signed.SerializeToString(deterministic=True)
        self._in_flight += 1
        self._in_flight_since = time.monotonic()
        for p in batch:
            if p.trace is not None:
                p.trace.submitted(len(batch))
        callback = functools.partial(self._on_commit_callback, batch)
        if self.auto_tick:
            # On the tick thread, right before pysyncobj takes its commands queue: _applyCommand would
            # also write its wake-up pipe and cost an extra empty tick.
            try:
                self._sync._SyncObj__commandsQueue.put_nowait((data, callback))
            except queue.Full:
                callback(None, FAIL_REASON.QUEUE_FULL)
        else:
            self._sync._applyCommand(data, callback)

    def _on_commit_callback(self, batch: list[_Proposal], _res: Any, err: int) -> None:
        self._in_flight = max(0, self._in_flight - 1)  # tick thread: the next _submit_from_tick refills
        if err != FAIL_REASON.SUCCESS:
            reason = {FAIL_REASON.NOT_LEADER: "not leader", FAIL_REASON.MISSING_LEADER: "no leader",
                      FAIL_REASON.DISCARDED: "entry discarded by a new leader",
                      FAIL_REASON.LEADER_CHANGED: "leader changed", FAIL_REASON.QUEUE_FULL: "queue full"}
            self._fail(batch, NotCommitted(reason.get(err, f"pysyncobj error {err}")))
            return
        # pysyncobj calls back right after applying the entry, in the tick that found it committed.
        for p in batch:
            if p.trace is not None:
                p.trace.committed(self._apply_started_ns)

    def _fail(self, batch: list[_Proposal], exc: Exception) -> None:
        with self._waiters_lock:
            for p in batch:
                futures = self._waiters.get(p.key, [])
                if p.future in futures:
                    futures.remove(p.future)
                if not futures:
                    self._waiters.pop(p.key, None)
        for p in batch:
            if not p.future.done():
                p.future.set_exception(exc)

    # ----- apply (tick thread) -----
    def _on_apply(self, index: int, data: bytes) -> None:
        if self.halted:
            raise ApplyHalted(self.halted)
        term = self.journal.term_at(index)
        self._apply_started_ns = time.time_ns()
        try:
            applied = self.applier.apply(index, int(term or 0), data)
        except Exception as exc:
            # Earlier entries of this tick share the aborted transaction and pysyncobj already counts
            # them applied: continuing in this process could diverge. Halt; a restart replays.
            self.store.abort()
            self.halted = f"apply failed at index {index}: {exc}"
            log.critical("%s; this node stops applying until restarted", self.halted)
            raise
        self.last_apply_monotonic = time.monotonic()
        if applied is not None:
            self._applied_batch.append(applied)
            self._last_applied = applied.index

    def _after_tick(self) -> None:
        if not self._applied_batch:
            self.store.commit()
            return
        batch, self._applied_batch = self._applied_batch, []
        self.store.commit()
        resolved: list[tuple[Future[pb.Result], pb.Result]] = []
        with self._waiters_lock:
            for applied in batch:
                for key, result in zip(applied.requests, applied.results, strict=True):
                    if key is None:
                        continue
                    for f in self._waiters.pop(key, []):
                        resolved.append((f, result))
        for f, result in resolved:
            if not f.done():
                f.set_result(result)
        for applied in batch:
            for listener in self._apply_listeners:
                listener(applied)

    def _on_snapshot_installed(self, index: int) -> None:
        first, self._last_applied = self._last_applied + 1, self.store.applied_index()
        for listener in self._snapshot_listeners:
            try:
                listener(first, index)
            except Exception:  # a listener never breaks the tick
                log.exception("snapshot listener failed")

    def _on_state_changed(self, old: int, new: int) -> None:
        log.info("node %s raft state %s -> %s (term %s)", self.node_id, old, new, self._sync.raftCurrentTerm
                 if hasattr(self, "_sync") else "?")

    def _voter_key(self, node_id: str) -> bytes | None:
        voter = self.genesis.voter(node_id)
        return voter.public_key if voter is not None else None

    def stop(self) -> None:
        self._stopping = True
        self._stop_event.set()
        if self.auto_tick:
            self._sync.destroy_synchronous()  # the tick thread destroys the transport on its way out
        else:
            self._sync.destroy()
        for thread in self._threads:
            thread.join(timeout=5)
        self.store.commit()
        self.journal.flush()
        self.journal.close()


class NotCommitted(Exception):
    """The entry did not commit; the outcome is unknown only if it may still commit elsewhere."""


class NotLeader(NotCommitted):
    def __init__(self, leader_hint: str) -> None:
        super().__init__(f"not the leader (leader: {leader_hint or 'unknown'})")
        self.leader_hint = leader_hint


class ApplyHalted(Exception):
    pass


def _never_called(*_args: Any) -> Any:
    raise AssertionError("pysyncobj's own serializer is replaced by fedraft.consensus.snapshot")
