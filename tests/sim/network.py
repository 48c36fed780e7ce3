"""The simulated network: seeded delays, drops, duplicates, reordering between connections, partitions.

Each directed link (a → b) draws from its own seeded RNG, so the order in which a node happens to
send to its peers within a tick (pysyncobj iterates a set) never changes what the network does.
Within one connection frames arrive in order, as on a gRPC stream; a duplicate is delivered again
later, out of order (a retransmission through a proxy). When a link reconnects, the frames still in
flight on the old connection are usually dropped (SPEC §3) but sometimes arrive late, interleaved
with the new connection's frames: the reordering between connections a paused process or a proxy
produces. A partition cuts links both ways and the nodes see the disconnect.

`SimLinks` stands in for fedraft.transport.links.PeerLinks under the real GrpcTransport, so the
real codec, the outbox released after the journal flush and the pre-vote filter are all in the loop.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fedraft._proto.fedraft.v1.peer_pb2 import PeerFrame

MAX_HELD_S = 5.0


@dataclass(frozen=True)
class Faults:
    """Per-frame probabilities and delays (seconds) of the simulated network."""

    drop: float = 0.01
    duplicate: float = 0.02
    late_after_reconnect: float = 0.3  # a frame of a replaced connection still arrives
    delay_min: float = 0.001
    delay_max: float = 0.010
    spike: float = 0.02                # a frame is held up this often ...
    spike_max: float = 0.6             # ... by up to this long (a paused process, a congested link)


@dataclass(order=True)
class _InFlight:
    at: float
    order: tuple[str, str, int]
    src: str = field(compare=False)
    dst: str = field(compare=False)
    conn: int = field(compare=False)
    data: bytes = field(compare=False)
    sent: float = field(compare=False, default=0.0)


class _Link:
    def __init__(self, seed: int, src: str, dst: str) -> None:
        self.rng = random.Random(f"{seed}/{src}->{dst}")
        self.conn = 0
        self.up = True
        self.last_at = 0.0   # FIFO within a connection
        self.seq = 0


class SimNetwork:
    def __init__(self, seed: int, node_ids: list[str], now: Callable[[], float], faults: Faults) -> None:
        self.node_ids = sorted(node_ids)
        self.now = now
        self.faults = faults
        self.links = {(a, b): _Link(seed, a, b) for a in node_ids for b in node_ids if a != b}
        self.endpoints: dict[str, SimLinks] = {}
        self._queue: list[_InFlight] = []
        self.groups: dict[str, int] = {n: 0 for n in node_ids}  # partition: same group, can talk
        self.alive: set[str] = set(node_ids)
        self.stats = {"sent": 0, "delivered": 0, "dropped": 0, "duplicated": 0, "late": 0}
        self.captured: list[tuple[str, str, bytes]] | None = None  # every frame sent, once a scenario asks
        self._held: dict[tuple[str, str], list[bytes]] = {}  # links a scenario holds up (`hold`)

    # -- topology ------------------------------------------------------------------------------

    def reachable(self, a: str, b: str) -> bool:
        return a in self.alive and b in self.alive and self.groups[a] == self.groups[b]

    def partition(self, *groups: list[str]) -> None:
        for i, group in enumerate(groups):
            for n in group:
                self.groups[n] = i + 1
        self._refresh()

    def heal(self) -> None:
        self.groups = {n: 0 for n in self.node_ids}
        self._refresh()

    def set_alive(self, node_id: str, alive: bool) -> None:
        if alive:
            self.alive.add(node_id)
        else:
            self.alive.discard(node_id)
        self._refresh()

    def _refresh(self) -> None:
        """Bring each link's connection state in line with reachability; tell both ends."""
        for a, b in sorted(self.links):
            link = self.links[(a, b)]
            should = self.reachable(a, b)
            if should == link.up:
                continue
            link.up = should
            if should:
                link.conn += 1
                link.last_at = 0.0
            ep = self.endpoints.get(a)
            if ep is not None:
                ep.peer_state(b, should)

    # -- frames --------------------------------------------------------------------------------

    def send(self, src: str, dst: str, frame: PeerFrame) -> bool:
        link = self.links[(src, dst)]
        if not link.up:
            return False
        self.stats["sent"] += 1
        held = self._held.get((src, dst))
        if held is not None:
            held.append(frame.SerializeToString())
            return True
        f, rng = self.faults, link.rng
        if rng.random() < f.drop:
            self.stats["dropped"] += 1
            return True
        delay = rng.uniform(f.delay_min, f.delay_max)
        if rng.random() < f.spike:
            delay += rng.uniform(0.0, f.spike_max)
        at = max(self.now() + delay, link.last_at)
        link.last_at = at
        data = frame.SerializeToString()
        if self.captured is not None:
            self.captured.append((src, dst, data))
        self._push(at, src, dst, link, data)
        if rng.random() < f.duplicate:
            self.stats["duplicated"] += 1
            self._push(at + rng.uniform(0.0, f.spike_max), src, dst, link, data)
        return True

    def _push(self, at: float, src: str, dst: str, link: _Link, data: bytes) -> None:
        link.seq += 1
        heapq.heappush(self._queue, _InFlight(at, (src, dst, link.seq), src, dst, link.conn, data, self.now()))

    def hold(self, src: str, dst: str) -> None:
        """Hold up every frame sent on src -> dst from now on (a stalled stream; scenario tests)."""
        self._held.setdefault((src, dst), [])

    def take_held(self, src: str, dst: str) -> list[bytes]:
        """Stop holding src -> dst; the frames held so far, in order, for the scenario to `inject` or drop."""
        return self._held.pop((src, dst), [])

    def inject(self, src: str, dst: str, data: bytes) -> None:
        """Deliver a frame sent earlier once more, now: a scripted duplicate (scenario tests)."""
        self.stats["duplicated"] += 1
        self._push(self.now(), src, dst, self.links[(src, dst)], data)

    def deliver_due(self) -> None:
        now = self.now()
        while self._queue and self._queue[0].at <= now:
            item = heapq.heappop(self._queue)
            link = self.links[(item.src, item.dst)]
            if not self.reachable(item.src, item.dst):
                # Usually lost with its connection; sometimes held (in a proxy, a paused sender's
                # buffers) and delivered after the link is back, behind the new connection's frames.
                if item.dst in self.alive and now - item.sent < MAX_HELD_S \
                        and link.rng.random() < self.faults.late_after_reconnect:
                    item.at = now + link.rng.uniform(0.05, self.faults.spike_max)
                    heapq.heappush(self._queue, item)
                else:
                    self.stats["dropped"] += 1
                continue
            if item.conn != link.conn:
                self.stats["late"] += 1
            endpoint = self.endpoints.get(item.dst)
            if endpoint is None:
                self.stats["dropped"] += 1
                continue
            self.stats["delivered"] += 1
            endpoint.receive(item.src, PeerFrame.FromString(item.data))

    def in_flight(self) -> int:
        return len(self._queue)


class SimLinks:
    """PeerLinks' interface for one node, on the simulated network."""

    def __init__(self, network: SimNetwork, node_id: str) -> None:
        self.network = network
        self.node_id = node_id
        self.on_frame: Callable[[str, PeerFrame], None] = lambda _p, _f: None
        self.on_connected: Callable[[str], None] = lambda _p: None
        self.on_disconnected: Callable[[str], None] = lambda _p: None
        self.closed: list[tuple[str, str]] = []
        self._contact: dict[str, float] = {}
        network.endpoints[node_id] = self

    def start(self) -> None:
        pass

    def stop(self, grace: float | None = None) -> None:
        if self.network.endpoints.get(self.node_id) is self:
            del self.network.endpoints[self.node_id]

    def send(self, peer_id: str, frame: PeerFrame) -> bool:
        return self.network.send(self.node_id, peer_id, frame)

    def connected(self, peer_id: str) -> bool:
        return self.network.links[(self.node_id, peer_id)].up

    def last_contact(self, peer_id: str) -> float | None:
        return self._contact.get(peer_id)

    def close(self, peer_id: str, reason: str) -> None:
        self.closed.append((peer_id, reason))

    # -- from the network ----------------------------------------------------------------------

    def receive(self, peer_id: str, frame: PeerFrame) -> None:
        self._contact[peer_id] = self.network.now()
        self.on_frame(peer_id, frame)

    def peer_state(self, peer_id: str, up: bool) -> None:
        (self.on_connected if up else self.on_disconnected)(peer_id)


def describe(stats: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in stats.items())
