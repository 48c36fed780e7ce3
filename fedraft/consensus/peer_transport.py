"""pysyncobj's transport over fedraft's gRPC peer links (SPEC §2, §3, D5, D11).

pysyncobj keeps its Raft state unlocked and expects every callback on its tick thread. gRPC delivers
frames on its own threads, so this adapter decodes there (strict codec, no pickle), queues the
message, and wakes the tick thread through a self-pipe in pysyncobj's poller; a tick callback drains
the queue too, as a backup.

Outgoing messages wait in an outbox until the owner's `before_release` (the journal fsync) has run:
every vote and acknowledgement that leaves the node is preceded by the fsync of what it vouches for,
and many messages share one fsync. With `appends_first` (decision 0017), a leader's append_entries
leave just before that fsync instead of after it, so the leader's fsync overlaps the round trip to
its followers (Raft thesis §10.2.1). The leader still counts an entry for its own commit only after
its fsync: replies are handled on this thread, after `before_release` has returned. If that fsync
fails after appends left, the node fences itself: it handles and sends nothing more until restarted.

Two inbound filters sit here because only the transport sees messages before Raft does:
- pre-vote emulation: a request_vote is dropped while the leader we follow was heard within
  raftMinTimeout, so a node back from a flapping link cannot depose a healthy leader;
- the rejoin guard (D5): a node rejoining with an empty data directory grants no vote before it has
  heard a leader, and afterwards only in higher terms than that leader's.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from pysyncobj.node import Node
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.transport import Transport, TransportNotReadyError

from fedraft._proto.fedraft.v1.peer_pb2 import PeerFrame
from fedraft.errors import InvariantBroken, OperatorError
from fedraft.transport.codec import Message, decode, encode
from fedraft.transport.links import PeerLinks

__all__ = ["GrpcTransport", "RejoinGuard"]

log = logging.getLogger(__name__)

_MESSAGE, _CONNECTED, _DISCONNECTED = 0, 1, 2
# What an outbox frame is: anything else, an append_entries, an append_entries with no entries (a heartbeat).
_OTHER, _APPEND, _HEARTBEAT = 0, 1, 2
# Bound the work of one drain so a burst of inbound frames cannot starve the rest of the tick; the
# remainder is picked up by the next wake-up.
_MAX_DRAIN = 4096
_STOP_GRACE_S = 0.5


class RejoinGuard:
    """SPEC D5: after a rejoin, no vote until a leader was heard, then only in terms above its term.

    The floor is persisted by the owner (journal metadata) so it keeps applying across restarts;
    `active` is set when the node was started with --rejoin on an empty data directory.
    """

    def __init__(self, *, active: bool, load_floor: Callable[[], int | None],
                 store_floor: Callable[[int], None]) -> None:
        self.active = active
        self._store_floor = store_floor
        self._floor = load_floor()

    @property
    def floor(self) -> int | None:
        return self._floor

    def allows_vote(self, term: int) -> bool:
        if self._floor is not None:
            return term > self._floor
        return not self.active

    def on_append_entries(self, term: int) -> None:
        if self._floor is None and self.active:
            self._store_floor(term)
            self._floor = term
            log.info("rejoin: heard a leader in term %d; voting only in later terms", term)


class GrpcTransport(Transport):  # type: ignore[misc]
    """Build with functools.partial(GrpcTransport, links=..., before_release=..., raft_min_timeout=...,
    rejoin=...) as pysyncobj's transportClass; pysyncobj adds (syncObj, selfNode, otherNodes)."""

    def __init__(self, syncObj: Any, selfNode: Node | None, otherNodes: Any, *, links: PeerLinks,
                 before_release: Callable[[], None], raft_min_timeout: float,
                 rejoin: RejoinGuard | None = None, appends_first: Callable[[], bool] | None = None) -> None:
        """`appends_first()` is asked at each release: True lets append_entries leave before
        `before_release` (the owner says no while a term or vote change waits for the fsync)."""
        super().__init__(syncObj, selfNode, otherNodes)
        if selfNode is None:
            raise InvariantBroken("fedraft has no read-only nodes: every voter has a node id")
        self._sync = syncObj
        self._self_id = str(selfNode.id)
        self._nodes: dict[str, Node] = {str(n.id): n for n in otherNodes}
        self._links = links
        self._before_release = before_release
        self._appends_first = appends_first
        self._fenced = False
        self._raft_min_timeout = raft_min_timeout
        self._rejoin = rejoin or RejoinGuard(active=False, load_floor=lambda: None, store_floor=lambda _t: None)
        self._ready = False
        self._destroyed = False

        self._inbox: collections.deque[tuple[int, str, Message | None]] = collections.deque()
        self._outbox: list[tuple[str, PeerFrame, int]] = []  # (peer, frame, _OTHER/_APPEND/_HEARTBEAT)
        self._outbox_lock = threading.Lock()
        self._last_append: dict[str, float] = {}  # node id -> monotonic time of its last append_entries

        # Self-pipe wake-up. pysyncobj's PipeNotifier is not used: its notify() ignores EAGAIN and is
        # not meant to be shared across threads.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._wake_pending = False
        self._wake_lock = threading.Lock()  # keeps a late gRPC thread from writing to a closed (reused) fd
        syncObj._poller.subscribe(self._wake_r, self._on_wake, POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.ERROR)
        syncObj.addOnTickCallback(self._on_tick)

        links.on_frame = self._on_frame
        links.on_connected = self._on_connected
        links.on_disconnected = self._on_disconnected
        # The node binds (and starts) its links before Raft exists, so a peer may have connected before
        # these callbacks were set. pysyncobj sends append_entries only to peers it was told are
        # connected: without this, such a peer would never hear the leader (it kept timing out and
        # calling elections under load). A duplicate event is harmless; a later disconnect queues after.
        for peer_id in self._nodes:
            if links.connected(peer_id):
                self._inbox.append((_CONNECTED, peer_id, None))
        if self._inbox:
            self._wake()

    # ----- pysyncobj Transport interface (tick thread unless noted) -----

    def tryGetReady(self) -> None:
        if self._ready:
            return
        try:
            self._links.start()
        except OperatorError as exc:
            raise TransportNotReadyError(str(exc)) from None
        self._ready = True

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def fenced(self) -> bool:
        """True after a journal fsync failed once appends had left: the node is cut off until restarted."""
        return self._fenced

    def waitReady(self) -> None:
        self.tryGetReady()

    def addNode(self, node: Node) -> None:
        # Voters are fixed at genesis (SPEC §2); the codec refuses membership entries, so this is
        # only reached through a local bug.
        raise InvariantBroken(f"voter changes are not supported (asked to add {node.id!r})")

    def dropNode(self, node: Node) -> None:
        raise InvariantBroken(f"voter changes are not supported (asked to drop {node.id!r})")

    def send(self, node: Node, message: Message) -> bool:
        """Queue a message for release after the next journal flush. Also called from user threads."""
        frame = encode(message)
        if frame is None:
            return True  # apply_command and friends: fedraft never forwards them (SPEC §2)
        peer_id = str(node.id)
        kind = _OTHER
        if message["type"] == "append_entries":
            plain = "serialized" not in message and "transmission" not in message
            kind = _HEARTBEAT if plain and not message.get("entries") else _APPEND
        with self._outbox_lock:
            self._outbox.append((peer_id, frame, kind))
        return self._links.connected(peer_id)

    def destroy(self) -> None:
        if self._destroyed:
            return
        self._links.stop(_STOP_GRACE_S)
        self._sync._poller.unsubscribe(self._wake_r)
        with self._wake_lock:
            self._destroyed = True
            os.close(self._wake_r)
            os.close(self._wake_w)

    # ----- lockdown inputs (any thread) -----

    def last_contact(self, node_id: str) -> float | None:
        return self._links.last_contact(node_id)

    def contact_count(self, window_s: float) -> int:
        """Voters in contact within `window_s` (monotonic), this node included (SPEC D11)."""
        since = time.monotonic() - window_s
        heard = 1
        for node_id in self._nodes:
            seen = self._links.last_contact(node_id)
            if seen is not None and seen >= since:
                heard += 1
        return heard

    # ----- gRPC threads -----

    def _on_frame(self, peer_id: str, frame: PeerFrame) -> None:
        message = decode(frame)
        if message is None:
            # A peer that sends something pysyncobj never would is broken or hostile: drop its stream.
            self._links.close(peer_id, f"invalid {frame.WhichOneof('kind')} frame")
            return
        self._inbox.append((_MESSAGE, peer_id, message))
        self._wake()

    def _on_connected(self, peer_id: str) -> None:
        self._inbox.append((_CONNECTED, peer_id, None))
        self._wake()

    def _on_disconnected(self, peer_id: str) -> None:
        self._inbox.append((_DISCONNECTED, peer_id, None))
        self._wake()

    def wake(self) -> None:
        """Make the tick thread run a tick soon (any thread; the engine's proposals use it)."""
        self._wake()

    def _wake(self) -> None:
        if self._wake_pending:
            return
        with self._wake_lock:
            if self._destroyed:
                return
            self._wake_pending = True
            with contextlib.suppress(BlockingIOError):  # a full pipe is already readable
                os.write(self._wake_w, b"\x01")

    # ----- tick thread -----

    def _on_wake(self, descr: int, event: int) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass
        # Reset after emptying the pipe and before draining the queue: a producer that appends after
        # this point sees the flag down and writes again, so no wake-up is lost.
        self._wake_pending = False
        self._drain()
        self._release()

    def _on_tick(self) -> None:
        self._drain()
        self._release()

    def _drain(self) -> None:
        inbox = self._inbox
        for _ in range(_MAX_DRAIN):
            try:
                kind, peer_id, message = inbox.popleft()
            except IndexError:
                return
            node = self._nodes.get(peer_id)
            if node is None or (self._fenced and kind == _MESSAGE):
                continue
            try:
                if kind == _MESSAGE:
                    assert message is not None
                    if self._admit(peer_id, message):
                        self._onMessageReceived(node, message)
                elif kind == _CONNECTED:
                    self._onNodeConnected(node)
                else:
                    self._onNodeDisconnected(node)
            except Exception:
                # One message must not take the rest of the queue down with it.
                log.exception("pysyncobj failed on a message from %s", peer_id)
        if inbox:
            self._wake_pending = False
            self._wake()

    def _admit(self, peer_id: str, message: Message) -> bool:
        kind = message["type"]
        if kind == "append_entries":
            self._last_append[peer_id] = time.monotonic()
            self._rejoin.on_append_entries(message["term"])
            return True
        if kind != "request_vote":
            return True  # timeout_now passes: it is how a leader hands over on purpose
        term = message["term"]
        if not self._rejoin.allows_vote(term):
            log.info("rejoin guard: dropped a vote request from %s for term %d (floor %s)", peer_id, term,
                     self._rejoin.floor)
            return False
        leader = self._sync._getLeader()
        if leader is not None:
            heard = self._last_append.get(str(leader.id))
            if heard is not None and time.monotonic() - heard < self._raft_min_timeout:
                log.debug("pre-vote: dropped a vote request from %s; leader %s is alive", peer_id, leader.id)
                return False
        return True

    def _release(self) -> None:
        with self._outbox_lock:
            if not self._outbox:
                return
            batch, self._outbox = self._outbox, []
        if self._fenced:
            return
        batch = _without_superseded_heartbeats(batch)
        send = self._links.send
        if self._appends_first is None or not self._appends_first():
            # The durability contract: what these messages vouch for is on disk before any leaves.
            # If the flush raises, the batch is dropped with it (Raft resends) and the error surfaces.
            self._before_release()
            for peer_id, frame, _kind in batch:
                send(peer_id, frame)
            return
        # A leader's entries may reach the followers before its own fsync ends; votes, acknowledgements
        # and everything else still wait for it.
        late = []
        for peer_id, frame, kind in batch:
            if kind != _OTHER:
                send(peer_id, frame)
            else:
                late.append((peer_id, frame))
        try:
            self._before_release()
        except Exception:
            # Followers may acknowledge entries this node could not make durable; counting itself
            # for them could commit an entry held by one disk. Stop all Raft traffic (like a crash).
            self._fenced = True
            log.critical("journal fsync failed after append_entries left: this node stops handling and "
                         "sending Raft messages until it is restarted")
            raise
        for peer_id, frame in late:
            send(peer_id, frame)


def _without_superseded_heartbeats(batch: list[tuple[str, PeerFrame, int]]) -> list[tuple[str, PeerFrame, int]]:
    """Drop a heartbeat that a later append_entries to the same peer in the same release supersedes.

    pysyncobj sends an empty append_entries right after apply (to spread the commit index) and
    another, with the new entry, when the same tick proposes: the later one carries the same term and
    an equal or newer commit index, so the follower loses nothing and is spared a message and an
    acknowledgement. (Its consistency check is usually the same or later; after a reset handled in
    between it is earlier, which only makes the follower resend more. Dropping any Raft message is
    safe; this one costs no liveness.)"""
    if len(batch) < 2:
        return batch
    last_append: dict[str, int] = {}
    for i, (peer_id, _frame, kind) in enumerate(batch):
        if kind != _OTHER:
            last_append[peer_id] = i
    return [item for i, item in enumerate(batch) if item[2] != _HEARTBEAT or last_append[item[0]] == i]
