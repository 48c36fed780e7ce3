"""Three fedraft nodes in one process, ticked by the test on simulated time (SPEC §2, §9).

Every node is the real thing from the engine down: RaftEngine (pysyncobj with fedraft's patches,
the strict pickle shim, batching of envelopes into leader-signed entries), the real GrpcTransport
and codec over `SimLinks`, the real Applier on a real LMDB StateStore. Only the journal
(`SimJournal`, with an explicit fsync boundary), the network (`SimNetwork`) and time are simulated.

All nondeterminism enters through the seed: pysyncobj's clock and election-timeout RNG and the
transport's clock are replaced for the duration of the run (`SimCluster` is a context manager);
network faults, client requests and the fault schedule each draw from their own seeded RNG.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import types
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pysyncobj.syncobj as _ps

import fedraft.consensus.engine as engine_module
import fedraft.consensus.peer_transport as peer_transport
import fedraft.consensus.snapshot as snapshot_module
from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.consensus.engine import EngineTuning, RaftEngine
from fedraft.consensus.peer_transport import GrpcTransport
from fedraft.storage.state import StateStore
from tests.sim.invariants import ErrorLogs, Invariants, SimViolation
from tests.sim.journal import SimDisk, SimJournal
from tests.sim.network import Faults, SimLinks, SimNetwork, describe
from tests.sim.workload import NODE_IDS, T0_MS, Clients, Op, make_federation

TUNING = EngineTuning(election_min_s=0.5, election_max_s=1.0, heartbeat_s=0.05, tick_s=0.01,
                      compaction_min_entries=10**9, compaction_min_time_s=10**9)

# Snapshot mode (`SimCluster(..., snapshots=True)`): every node compacts its log past this many entries,
# so a follower that was down or cut off for a few seconds is brought back by a snapshot from the leader.
SNAPSHOT_TUNING = replace(TUNING, compaction_min_entries=16)
SNAPSHOT_CHUNK_BYTES = 4096

REQUEST_TIMEOUT_S = 3.0
MAX_ATTEMPTS = 50


@dataclass(frozen=True)
class Schedule:
    """How often the fault schedule acts, per step, and for how long (seconds)."""

    steps: int = 600
    step_s: float = 0.02
    request: float = 0.25        # a new client request
    crash: float = 0.004
    down_s: tuple[float, float] = (0.2, 3.0)
    pause: float = 0.004         # SIGSTOP: the node stops ticking; frames pile up for it
    pause_s: tuple[float, float] = (0.2, 2.5)
    partition: float = 0.004
    partition_s: tuple[float, float] = (0.3, 3.0)
    settle_s: float = 30.0       # after the faults: heal everything, then wait this long for convergence
    faults: Faults = field(default_factory=Faults)


class SimNode:
    def __init__(self, node_id: str, root: Path) -> None:
        self.node_id = node_id
        self.dir = root / node_id
        self.disk = SimDisk()
        self.engine: RaftEngine | None = None
        self.store: StateStore | None = None
        self.links: SimLinks | None = None
        self.down_until = 0.0
        self.paused_until = 0.0


class SimCluster:
    def __init__(self, seed: int, root: Path, schedule: Schedule = Schedule(), *,
                 fail_on_error_logs: bool = True, snapshots: bool = False) -> None:
        self.seed = seed
        self.snapshots = snapshots
        self.tuning = SNAPSHOT_TUNING if snapshots else TUNING
        self.installs: list[str] = []       # "node:index" of every snapshot a follower installed
        self.serialized: list[str] = []     # "node:index" of every snapshot pysyncobj asked a node for
        self.fail_on_error_logs = fail_on_error_logs
        self.schedule = schedule
        self.now = 100.0
        self.step_no = 0
        self.rng = random.Random(f"{seed}/schedule")
        self.fed = make_federation(seed)
        self.clients = Clients(seed, self.fed)
        self.network = SimNetwork(seed, list(NODE_IDS), lambda: self.now, schedule.faults)
        self.nodes = {n: SimNode(n, root) for n in NODE_IDS}
        self.invariants = Invariants()
        self.partitioned_until = 0.0
        self.events: list[str] = []
        self._acks: list[Op] = []   # acknowledged, not yet found on every node
        self._ack_count = 0
        self._error_logs = ErrorLogs()
        self._exit = contextlib.ExitStack()

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> SimCluster:
        ex = self._exit
        raft_rng = random.Random(f"{self.seed}/raft")
        ex.enter_context(_patched(_ps, "monotonicTime", lambda: self.now))
        ex.enter_context(_patched(_ps, "random", raft_rng))
        ex.enter_context(_patched(peer_transport, "time", types.SimpleNamespace(monotonic=lambda: self.now)))
        if self.snapshots:  # small chunks: a snapshot crosses the network in several messages
            ex.enter_context(_patched(engine_module, "SNAPSHOT_CHUNK_BYTES", SNAPSHOT_CHUNK_BYTES))
        # The snapshot copy runs in a background thread in a node (D17); here it runs inline when
        # pysyncobj asks for it, so it is done by the next tick's checkSerializing, whatever the scheduler.
        ex.enter_context(_patched(snapshot_module, "threading",
                                  types.SimpleNamespace(Thread=_InlineThread, Lock=snapshot_module.threading.Lock)))
        logging.getLogger().addHandler(self._error_logs)
        ex.callback(logging.getLogger().removeHandler, self._error_logs)
        ex.callback(self._close_all)
        for node in self.nodes.values():
            self._start(node)
        return self

    def __exit__(self, *exc: object) -> None:
        self._exit.close()

    def _start(self, node: SimNode) -> None:
        node.store = StateStore(node.dir / "state", self.fed.genesis, map_size=64 << 20)
        node.links = links = SimLinks(self.network, node.node_id)
        self.network.set_alive(node.node_id, True)

        def transport(sync_obj: Any, self_node: Any, other_nodes: Any, *, journal: Any, before_release: Any,
                      raft_min_timeout: float) -> GrpcTransport:
            return GrpcTransport(sync_obj, self_node, other_nodes, links=links, before_release=before_release,
                                 raft_min_timeout=raft_min_timeout)

        node.engine = RaftEngine(
            node_id=node.node_id, peer_ids=[n for n in NODE_IDS if n != node.node_id],
            identity=self.fed.nodes[node.node_id], store=node.store, data_dir=node.dir,
            transport_factory=transport, tuning=self.tuning, wall_ms=lambda: T0_MS + int(self.now * 1000),
            auto_tick=False, journal=SimJournal(node.disk))  # type: ignore[arg-type]
        snapshots: Any = node.engine.snapshots
        snapshots._clock = lambda: self.now  # the retry delay after a failed snapshot, on simulated time
        node.engine.add_snapshot_listener(
            lambda _first, last, n=node.node_id: self.installs.append(f"{n}:{last}"))
        serialize = snapshots.serialize

        def counted(data: Any, id: int, n: str = node.node_id) -> None:
            self.serialized.append(f"{n}:{id}")
            serialize(data, id)
        snapshots.serialize = counted

    def crash(self, node_id: str, down_s: float) -> None:
        """kill -9: no flush, no clean stop; the unsynced journal tail is lost."""
        node = self.nodes[node_id]
        assert node.engine is not None and node.store is not None
        self.events.append(f"{self.now:.2f} crash {node_id} for {down_s:.2f}s")
        node.engine.transport.destroy()
        node.engine.journal.crash()
        node.store.close()
        self.network.set_alive(node_id, False)
        for op in self.clients.ops:
            if op.in_flight and op.sent_to == node_id:
                op.in_flight = False
        node.engine = node.store = node.links = None
        node.down_until = self.now + down_s

    def _close_all(self) -> None:
        for node in self.nodes.values():
            if node.engine is not None and node.store is not None:
                node.engine.transport.destroy()
                node.engine.journal.crash()
                node.store.close()
                node.engine = node.store = None

    # -- stepping ------------------------------------------------------------------------------

    def live(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.engine is not None]

    def step(self, *, faults: bool = True, requests: bool = True) -> None:
        s = self.schedule
        self.step_no += 1
        self.now += s.step_s
        for node in self.nodes.values():
            if node.engine is None and node.down_until <= self.now:
                self.events.append(f"{self.now:.2f} restart {node.node_id}")
                self._start(node)
        if self.partitioned_until and self.partitioned_until <= self.now:
            self.events.append(f"{self.now:.2f} heal")
            self.network.heal()
            self.partitioned_until = 0.0
        if faults:
            self._inject_faults()
        if requests and self.rng.random() < s.request:
            self.clients.new_request(T0_MS + int(self.now * 1000))
        self._send_requests()
        self.network.deliver_due()
        for node in self.live():
            if node.paused_until > self.now:
                continue
            assert node.engine is not None
            node.engine.submit_queued()
            node.engine.tick()
        self.check()

    def _inject_faults(self) -> None:
        s, rng = self.schedule, self.rng
        live = self.live()
        if rng.random() < s.crash and len(live) == len(self.nodes):
            self.crash(rng.choice(live).node_id, rng.uniform(*s.down_s))
        if rng.random() < s.pause:
            node = rng.choice(live)
            node.paused_until = self.now + rng.uniform(*s.pause_s)
            self.events.append(f"{self.now:.2f} pause {node.node_id} until {node.paused_until:.2f}")
        if rng.random() < s.partition and not self.partitioned_until:
            alone = rng.choice(NODE_IDS)
            self.network.partition([alone], [n for n in NODE_IDS if n != alone])
            self.partitioned_until = self.now + rng.uniform(*s.partition_s)
            self.events.append(f"{self.now:.2f} partition {alone} until {self.partitioned_until:.2f}")

    def _send_requests(self) -> None:
        """Each unacknowledged request goes (again) to a node that says it leads, else to any node."""
        ready = [n for n in self.live() if n.paused_until <= self.now]
        if not ready:
            return
        leaders = [n for n in ready if n.engine is not None and n.engine.is_leader]
        for op in self.clients.ops:
            if op.in_flight and self.now - op.sent_at > REQUEST_TIMEOUT_S:
                op.in_flight = False  # a client gives up waiting and sends the same envelope again
            if op.result is not None or op.in_flight or op.next_try_at > self.now or op.attempts >= MAX_ATTEMPTS:
                continue
            node = self.rng.choice(leaders or ready)
            assert node.engine is not None
            op.attempts += 1
            op.in_flight = True
            op.sent_to, op.sent_at = node.node_id, self.now
            future = node.engine.propose(op.signed, op.key)
            future.add_done_callback(lambda f, op=op: self._on_result(op, f))

    def _on_result(self, op: Op, future: Future[pb.Result]) -> None:
        op.in_flight = False
        if future.exception() is not None:
            op.next_try_at = self.now + 0.2
            return
        if op.result is None:
            op.result = future.result()
            op.acked_at_step = self.step_no
            self._acks.append(op)
            self._ack_count += 1

    def check(self) -> None:
        inv = self.invariants
        if self._error_logs.records and self.fail_on_error_logs:
            raise SimViolation(f"logged {self._error_logs.records[0]}")
        for node in self.live():
            engine = node.engine
            assert engine is not None and node.store is not None and node.links is not None
            if engine.halted:
                raise SimViolation(f"{node.node_id} halted: {engine.halted}")
            if node.links.closed:
                raise SimViolation(f"{node.node_id} refused a frame: {node.links.closed[0]}")
            if engine.is_leader:
                inv.leader(node.node_id, engine.term)
            inv.state(node.node_id, node.store, self._acks, (engine.raft_last_applied, self._ack_count))
        everyone = set(self.nodes)
        self._acks = [op for op in self._acks if op.verified_on != everyone]

    # -- whole runs ----------------------------------------------------------------------------

    def run(self) -> None:
        s = self.schedule
        self.clients.setup(T0_MS + int(self.now * 1000))
        for _ in range(s.steps):
            self.step()
        self.settle()

    def settle(self) -> None:
        """Heal everything and stop the faults; every node must then reach the same applied index,
        and every acknowledged write be found on every node."""
        self.network.heal()
        self.partitioned_until = 0.0
        self.network.faults = Faults(drop=0.0, duplicate=0.0, spike=0.0)
        for node in self.nodes.values():
            node.paused_until = 0.0
            node.down_until = min(node.down_until, self.now)
        deadline = self.now + self.schedule.settle_s
        while self.now < deadline:
            self.step(faults=False, requests=False)
            if self._converged():
                return
        raise SimViolation(f"no convergence {self.schedule.settle_s:.0f}s after healing: "
                           f"applied {self.invariants.applied}, {len(self._acks)} acks not yet everywhere")

    def _converged(self) -> bool:
        live = self.live()
        if len(live) != len(self.nodes) or self._acks:
            return False
        if any(op.result is None and op.attempts < MAX_ATTEMPTS for op in self.clients.ops):
            return False
        applied = {self.invariants.applied.get(n.node_id) for n in live}
        commits = {n.engine.commit_index for n in live if n.engine is not None}
        return len(applied) == 1 and len(commits) == 1

    def fingerprint(self) -> str:
        """One hash of everything a run did: faults, network counts, digests by index, every journal."""
        disks = {n: (node.disk.entries, node.disk.term, node.disk.voted_for) for n, node in sorted(self.nodes.items())}
        seen = (self.events, sorted(self.network.stats.items()), sorted(self.invariants.digests.items()), disks,
                self.serialized, self.installs)
        return hashlib.sha256(repr(seen).encode()).hexdigest()

    def summary(self) -> str:
        acked = sum(1 for op in self.clients.ops if op.result is not None)
        terms = max(self.invariants.leaders, default=0)
        return (f"seed {self.seed}: {self.step_no} steps ({self.now - 100:.1f} s simulated), {len(self.events)} "
                f"faults, {acked}/{len(self.clients.ops)} requests acknowledged, {terms} terms, applied "
                f"{max(self.invariants.applied.values(), default=0)}, {self.invariants.checks} state checks, "
                f"{len(self.serialized)} snapshots requested, {len(self.installs)} installed; "
                f"network: {describe(self.network.stats)}")


@contextlib.contextmanager
def _patched(module: Any, name: str, value: Any) -> Iterator[None]:
    saved = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, saved)


class _InlineThread:
    """threading.Thread for the snapshot module: `start()` runs the target there and then."""

    def __init__(self, target: Any, args: tuple[Any, ...] = (), **_kw: Any) -> None:
        self._target, self._args = target, args

    def start(self) -> None:
        self._target(*self._args)

    def join(self) -> None:
        pass
