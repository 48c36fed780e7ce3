"""GrpcTransport under a real pysyncobj SyncObj: tick-thread delivery, flush-before-release, pre-vote
emulation, the rejoin guard, contact counting; then a 3-node cluster over real gRPC peer links."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.node import Node

import fedraft.consensus.peer_transport as peer_transport
from fedraft._proto.fedraft.v1.peer_pb2 import PeerFrame
from fedraft.consensus.peer_transport import GrpcTransport, RejoinGuard
from fedraft.transport.codec import decode, encode
from tests.transport.conftest import Federation, free_port, make_federation, wait_for

MIN_TIMEOUT = 1.0


class FakeLinks:
    """Stands in for PeerLinks: records what leaves, lets the test play the peers."""

    def __init__(self, journal: list[str]) -> None:
        self.journal = journal  # shared with before_release, so the order of flush and send shows
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.closed: list[tuple[str, str]] = []
        self.up: set[str] = set()
        self.contacts: dict[str, float] = {}
        self.stopped = False
        self.on_frame: Any = None
        self.on_connected: Any = None
        self.on_disconnected: Any = None

    def start(self) -> None:
        pass

    def stop(self, grace: float | None = None) -> None:
        self.stopped = True

    def send(self, peer_id: str, frame: PeerFrame) -> bool:
        message = decode(frame)
        assert message is not None
        self.journal.append(f"send {message['type']} to {peer_id}")
        self.sent.append((peer_id, message))
        return True

    def connected(self, peer_id: str) -> bool:
        return peer_id in self.up

    def last_contact(self, peer_id: str) -> float | None:
        return self.contacts.get(peer_id)

    def close(self, peer_id: str, reason: str) -> None:
        self.closed.append((peer_id, reason))

    # the test plays the peers, from a thread of its own as gRPC would
    def connect(self, *peers: str) -> None:
        for peer in peers:
            self.up.add(peer)
            self.on_connected(peer)

    def deliver(self, peer: str, message: dict[str, Any]) -> None:
        frame = encode(message)
        assert frame is not None
        self.on_frame(peer, frame)

    def sent_of(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        return [(p, m) for p, m in self.sent if m["type"] == kind]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(peer_transport, "time", clock)
    return clock


class Harness:
    def __init__(self, rejoin: RejoinGuard | None = None, appends_first: Any = None) -> None:
        self.journal: list[str] = []
        self.links = FakeLinks(self.journal)
        self.flush_error: Exception | None = None
        conf = SyncObjConf(autoTick=False, raftMinTimeout=100, raftMaxTimeout=200, connectionTimeout=200,
                           appendEntriesPeriod=0.05)
        self.sync = SyncObj(Node("n1"), [Node("n2"), Node("n3")], conf=conf, transportClass=functools.partial(
            GrpcTransport, links=self.links, before_release=self.flush, raft_min_timeout=MIN_TIMEOUT,
            rejoin=rejoin, appends_first=appends_first))
        self.links.connect("n2", "n3")
        self.tick()

    def flush(self) -> None:
        if self.flush_error is not None:
            raise self.flush_error
        self.journal.append("flush")

    def tick(self) -> None:
        self.sync.doTick(0.0)

    def elect_self(self) -> None:
        """n1 calls an election and wins it with n2's vote."""
        self.sync._SyncObj__raftElectionDeadline = 0
        self.tick()
        self.links.deliver("n2", {"type": "response_vote", "term": self.sync.raftCurrentTerm})
        self.tick()
        assert self.sync._isLeader()

    def heartbeat(self, term: int, leader: str = "n2") -> None:
        self.links.deliver(leader, {"type": "append_entries", "term": term, "commit_index": 1, "entries": [],
                                    "prevLogIdx": 1, "prevLogTerm": 0})
        self.tick()

    def ask_vote(self, term: int, candidate: str = "n3") -> bool:
        """Deliver a request_vote; True if a vote came back."""
        before = len(self.links.sent_of("response_vote"))
        self.links.deliver(candidate, {"type": "request_vote", "term": term, "last_log_index": 1, "last_log_term": 0})
        self.tick()
        return len(self.links.sent_of("response_vote")) > before


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.sync.destroy()


def test_every_message_leaves_after_a_flush(harness: Harness) -> None:
    harness.heartbeat(term=1)
    assert harness.sync.raftCurrentTerm == 1
    assert harness.journal[-2:] == ["flush", "send next_node_idx to n2"]
    assert harness.links.sent_of("next_node_idx")[-1][1]["success"] is True


def test_outbox_from_a_user_thread_is_released_by_the_tick(harness: Harness) -> None:
    transport = harness.sync._SyncObj__transport
    thread = threading.Thread(target=transport.send, args=(Node("n3"), {"type": "timeout_now", "term": 0}))
    thread.start()
    thread.join()
    assert harness.links.sent_of("timeout_now") == []
    harness.tick()
    assert harness.journal[-2:] == ["flush", "send timeout_now to n3"]


def test_apply_command_is_dropped_silently(harness: Harness) -> None:
    transport = harness.sync._SyncObj__transport
    assert transport.send(Node("n2"), {"type": "apply_command", "command": b"\x00x", "request_id": 1}) is True
    harness.tick()
    assert harness.links.sent == []


def test_a_frame_from_another_thread_wakes_the_tick_thread(harness: Harness) -> None:
    # The tick has already run its callbacks when it starts polling; only the self-pipe can end the
    # poll early and get the reply out.
    timer = threading.Timer(0.2, harness.links.deliver, args=("n2", {
        "type": "append_entries", "term": 1, "commit_index": 1, "entries": [], "prevLogIdx": 1, "prevLogTerm": 0}))
    start = time.monotonic()
    timer.start()
    harness.sync.doTick(5.0)
    assert time.monotonic() - start < 2.0
    assert harness.journal[-1] == "send next_node_idx to n2"


def test_invalid_frame_closes_the_stream(harness: Harness) -> None:
    from fedraft._proto.fedraft.v1.peer_pb2 import AppendEntries, WireEntry

    bad = PeerFrame(append_entries=AppendEntries(term=1, regular=True, prev_log_idx=1, prev_log_term=0,
                                                 entries=[WireEntry(command=b"\x02", index=2, term=1)]))
    harness.links.on_frame("n2", bad)
    harness.tick()
    assert harness.links.closed == [("n2", "invalid append_entries frame")]
    assert harness.sync.raftCurrentTerm == 0


def test_pre_vote_drops_votes_while_the_leader_is_alive(clock: Clock) -> None:
    h = Harness()
    try:
        h.heartbeat(term=1)
        clock.now += MIN_TIMEOUT / 2
        assert not h.ask_vote(term=2)
        assert h.sync.raftCurrentTerm == 1  # the healthy leader was not deposed
        clock.now += MIN_TIMEOUT
        assert h.ask_vote(term=2)
        assert h.sync.raftCurrentTerm == 2
    finally:
        h.sync.destroy()


def test_timeout_now_passes_the_pre_vote_filter(clock: Clock) -> None:
    h = Harness()
    try:
        h.heartbeat(term=1)
        h.links.deliver("n2", {"type": "timeout_now", "term": 1})
        h.tick()
        h.tick()
        # the leader's hand-over made us campaign at once
        assert {p for p, m in h.links.sent_of("request_vote") if m["term"] == 2} == {"n2", "n3"}
    finally:
        h.sync.destroy()


def test_rejoin_guard_refuses_votes_until_a_leader_is_heard(clock: Clock) -> None:
    stored: list[int] = []
    guard = RejoinGuard(active=True, load_floor=lambda: None, store_floor=stored.append)
    h = Harness(rejoin=guard)
    try:
        assert not h.ask_vote(term=5)  # no leader heard yet
        assert h.sync.raftCurrentTerm == 0
        h.heartbeat(term=3)
        assert stored == [3]
        clock.now += 10 * MIN_TIMEOUT  # past the pre-vote window: only the floor decides now
        assert not h.ask_vote(term=3)
        assert h.ask_vote(term=4)
        h.heartbeat(term=4, leader="n3")
        assert stored == [3]  # the floor is set once
    finally:
        h.sync.destroy()


def test_rejoin_floor_survives_a_restart() -> None:
    guard = RejoinGuard(active=False, load_floor=lambda: 7, store_floor=lambda _t: None)
    assert guard.floor == 7
    assert not guard.allows_vote(7) and guard.allows_vote(8)
    inactive = RejoinGuard(active=False, load_floor=lambda: None, store_floor=lambda _t: None)
    assert inactive.allows_vote(1)
    inactive.on_append_entries(4)
    assert inactive.floor is None


def test_contact_count_includes_self(harness: Harness) -> None:
    transport = harness.sync._SyncObj__transport
    now = time.monotonic()
    assert transport.contact_count(1.0) == 1
    harness.links.contacts = {"n2": now, "n3": now - 5}
    assert transport.contact_count(1.0) == 2
    assert transport.contact_count(10.0) == 3
    assert transport.last_contact("n2") == now


def test_destroy_stops_the_links(harness: Harness) -> None:
    transport = harness.sync._SyncObj__transport
    transport.destroy()
    assert harness.links.stopped
    harness.links.deliver("n2", {"type": "response_vote", "term": 1})  # a late gRPC thread: no crash


# ----- three real nodes over real gRPC -----

class Counter(SyncObj):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.value = 0
        super().__init__(*args, **kwargs)

    @replicated  # type: ignore[misc]
    def add(self, n: int) -> int:
        self.value += n
        return self.value


@pytest.fixture(scope="module")
def keys() -> Federation:
    return make_federation()


@pytest.mark.usefixtures("real_pysyncobj_pickle")  # plain pysyncobj: a pickled @replicated counter
def test_three_nodes_elect_a_leader_and_replicate(keys: Federation) -> None:
    fed = Federation(ca=keys.ca, cluster_id=keys.cluster_id, nodes=keys.nodes,
                     ports={n: free_port() for n in keys.nodes})
    flushes = {n: 0 for n in fed.nodes}

    def flusher(node_id: str) -> Any:
        def flush() -> None:
            flushes[node_id] += 1
        return flush

    conf = dict(autoTick=True, autoTickPeriod=0.01, raftMinTimeout=0.5, raftMaxTimeout=1.0, connectionTimeout=1.0,
                leaderFallbackTimeout=1.0, appendEntriesPeriod=0.05, appendEntriesBatchSizeBytes=1 << 20)
    nodes = {}
    try:
        for node_id in fed.nodes:
            nodes[node_id] = Counter(Node(node_id), [Node(p) for p in fed.nodes if p != node_id],
                                     conf=SyncObjConf(**conf), transportClass=functools.partial(
                                         GrpcTransport, links=fed.links(node_id), before_release=flusher(node_id),
                                         raft_min_timeout=0.5))
        wait_for(lambda: any(n._isLeader() for n in nodes.values()), timeout=8, what="a leader")
        leader = next(n for n in nodes.values() if n._isLeader())
        assert leader.add(5, sync=True, timeout=5) == 5
        wait_for(lambda: all(n.value == 5 for n in nodes.values()), what="replication to every node")
        assert all(count > 0 for count in flushes.values())
    finally:
        for node in nodes.values():
            node.destroy_synchronous()


def test_a_peer_connected_before_the_adapter_is_announced_to_pysyncobj() -> None:
    """The node starts its links before Raft: a peer that connected in between must still reach
    pysyncobj's connected set, or a leader never sends it append_entries."""

    class Links:
        on_frame: Any = None
        on_connected: Any = None
        on_disconnected: Any = None

        def connected(self, peer_id: str) -> bool:
            return peer_id == "b"

    class Poller:
        def subscribe(self, *_a: Any) -> None:
            pass

        def unsubscribe(self, *_a: Any) -> None:
            pass

    class Sync:
        _poller = Poller()

        def addOnTickCallback(self, _cb: Any) -> None:
            pass

    transport = GrpcTransport(Sync(), Node("a"), [Node("b"), Node("c")], links=Links(),  # type: ignore[arg-type]
                              before_release=lambda: None, raft_min_timeout=1.0)
    announced: list[str] = []
    transport.setOnNodeConnectedCallback(lambda node: announced.append(str(node.id)))
    transport._drain()
    assert announced == ["b"]
    transport._links.stop = lambda *_a: None  # type: ignore[attr-defined]
    transport.destroy()


def test_leader_appends_leave_before_the_flush_votes_after() -> None:
    """Decision 0017: with appends_first, a leader's append_entries overlap its fsync; a vote request
    (its term pending) and every acknowledgement still wait for the flush."""
    term_pending = [True]
    h = Harness(appends_first=lambda: not term_pending[0])
    try:
        h.sync._SyncObj__raftElectionDeadline = 0
        h.tick()
        assert h.journal[-3] == "flush"
        assert set(h.journal[-2:]) == {"send request_vote to n2", "send request_vote to n3"}
        term_pending[0] = False
        h.links.deliver("n2", {"type": "response_vote", "term": h.sync.raftCurrentTerm})
        h.tick()
        assert h.sync._isLeader()
        assert set(h.journal[-3:-1]) == {"send append_entries to n2", "send append_entries to n3"}
        assert h.journal[-1] == "flush"
        transport = h.sync._SyncObj__transport
        transport.send(Node("n3"), {"type": "timeout_now", "term": h.sync.raftCurrentTerm})
        h.links.deliver("n2", {"type": "append_entries", "term": h.sync.raftCurrentTerm + 5, "commit_index": 1,
                               "entries": [], "prevLogIdx": 1, "prevLogTerm": 0})
        h.tick()  # n1 steps down: its acknowledgement of the new leader and the timeout_now follow the flush
        assert h.journal[-3:] == ["flush", "send timeout_now to n3", "send next_node_idx to n2"]
    finally:
        h.sync.destroy()


def test_without_appends_first_every_message_waits_for_the_flush() -> None:
    h = Harness()
    try:
        h.elect_self()
        assert h.journal[-3] == "flush"
        assert set(h.journal[-2:]) == {"send append_entries to n2", "send append_entries to n3"}
    finally:
        h.sync.destroy()


def test_a_failed_fsync_after_appends_left_fences_the_node() -> None:
    """Followers may acknowledge what the leader could not make durable: the leader must never count
    itself for it, so it stops handling and sending Raft messages."""
    h = Harness(appends_first=lambda: True)
    try:
        h.elect_self()
        transport = h.sync._SyncObj__transport
        assert not transport.fenced
        h.flush_error = OSError("disk gone")
        h.sync._SyncObj__newAppendEntriesTime = 0
        with pytest.raises(OSError):
            h.tick()
        assert transport.fenced
        sent = len(h.links.sent)
        h.flush_error = None
        match_before = dict(h.sync._SyncObj__raftMatchIndex)
        h.links.deliver("n2", {"type": "next_node_idx", "next_node_idx": 10, "reset": False, "success": True})
        h.sync._SyncObj__newAppendEntriesTime = 0
        h.tick()
        assert h.sync._SyncObj__raftMatchIndex == match_before  # the reply was not handled
        assert len(h.links.sent) == sent  # and nothing left
    finally:
        h.sync.destroy()


def test_a_heartbeat_superseded_in_the_same_release_is_not_sent() -> None:
    """pysyncobj's empty append after apply and its append of the new entry in the same tick: only the
    latter reaches the peer; a heartbeat with no later append to its peer still leaves."""
    h = Harness(appends_first=lambda: True)
    try:
        h.elect_self()
        transport = h.sync._SyncObj__transport
        term = h.sync.raftCurrentTerm
        beat = {"type": "append_entries", "term": term, "commit_index": 1, "entries": [], "prevLogIdx": 1,
                "prevLogTerm": 0}
        entry = {**beat, "commit_index": 2, "entries": [(b"\x00x", 2, term)]}
        before = len(h.links.sent)
        transport.send(Node("n2"), beat)
        transport.send(Node("n3"), beat)
        transport.send(Node("n2"), entry)
        transport._release()
        sent = h.links.sent[before:]
        assert [(p, m["commit_index"], len(m["entries"])) for p, m in sent] == [("n3", 1, 0), ("n2", 2, 1)]
    finally:
        h.sync.destroy()


def test_a_fenced_node_counts_as_locked_down() -> None:
    """D11 + decision 0017: frames still arrive at a fenced node, but it handles none: it must refuse
    writes and linearizable reads like any cut-off node, not hang them."""
    from types import SimpleNamespace

    from fedraft.consensus.engine import EngineTuning, RaftEngine

    def engine(fenced: bool) -> Any:
        transport = SimpleNamespace(fenced=fenced, contact_count=lambda _within: 3)
        return SimpleNamespace(transport=transport, peer_ids=["b", "c"], tuning=EngineTuning())

    assert RaftEngine.in_lockdown(engine(fenced=False)) is False
    assert RaftEngine.in_lockdown(engine(fenced=True)) is True
