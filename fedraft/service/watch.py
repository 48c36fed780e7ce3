"""Watch: applied results as a stream, in log order, resumable by index (docs/decisions/0008-watch.md).

`WatchHub` is fed by the engine's apply and snapshot listeners (tick thread: they only enqueue). Its
own thread stores each entry's results in the pool-local `WatchResults` (history), then publishes the
entry's events to every open stream: one event per envelope, in (index, ordinal) order. `published`
is the highest index published; every index up to it is in the state's archive and, if this node
applied it itself, has its results stored.

A stream (`WatchStream.events`) first replays history from the archive (command and author from the
archived envelope, the result from `WatchResults`, else from the de-dup table, else unknown), chunk by
chunk without holding a read transaction across a yield; when it has caught up with `published` it
subscribes, atomically under the hub's lock, and from then on gets whole entries through a bounded
queue. A consumer too slow for its queue is ended (`Overflow`) with the index to resume from.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError as ProtoDecodeError

from fedraft._proto.fedraft.v1 import api_pb2 as api
from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.consensus.applier import AppliedEntry
from fedraft.storage.state import StateStore, StateTxn
from fedraft.storage.watch_results import WatchResults

log = logging.getLogger(__name__)

DEFAULT_QUEUE_EVENTS = 10_000   # per stream: events published and not yet sent
DEFAULT_MAX_STREAMS = 16        # each open stream holds one API worker thread
HISTORY_CHUNK = 256             # archive entries read per read transaction
PROGRESS_S = 5.0                # an idle stream sends a progress report this often
IDLE_CATCH_UP_S = 1.0           # the hub looks for entries applied without its listener this often
WAKE_S = 0.5                    # a waiting stream checks its caller (cancelled, lockdown) this often
BATCH_WINDOW_S = 0.01           # the hub gathers applied entries this long after the first (decision 0018)
BARRIER = "barrier"


class Compacted(Exception):
    """from_index is below what this node still serves."""

    def __init__(self, requested: int, floor: int) -> None:
        super().__init__(f"index {requested} was compacted away on this node; the oldest available index is "
                         f"{floor}: watch from {floor}, or from 0 for new events only")
        self.requested = requested
        self.floor = floor


class TooManyStreams(Exception):
    pass


class Overflow(Exception):
    """The consumer fell behind its bounded queue; it resumes from `resume_from`."""

    def __init__(self, resume_from: int, capacity: int) -> None:
        super().__init__(f"watch consumer too slow (more than {capacity} events queued): stream closed; "
                         f"resume with from_index {resume_from}")
        self.resume_from = resume_from


class HubStopped(Exception):
    pass


def command_of(env: pb.Envelope) -> str:
    """The command's name as the log says it: the envelope's field (inner field for governance, placement)."""
    kind = env.WhichOneof("command")
    if kind in ("governance", "placement"):
        inner = getattr(env, kind).WhichOneof("command")
        return str(inner or kind)
    return kind or ""


def entry_events(st: StateTxn, index: int, signed_entry: bytes,
                 results: list[pb.Result] | None) -> list[tuple[api.WatchEvent, bool]]:
    """(event, is_barrier) per envelope of the archived entry at `index`, in ordinal order.

    `results`: what this node's applier returned for the entry (None: not kept here; the de-dup table
    may still hold an envelope's result). `entry_last` is left unset (see finish_entry). An entry that
    does not decode has no events (its envelopes were never applied).
    """
    signed, entry = pb.Signed(), pb.LogEntry()
    try:
        signed.ParseFromString(signed_entry)
        entry.ParseFromString(signed.body)
    except ProtoDecodeError:
        return []
    if results is not None and len(results) != len(entry.envelopes):
        results = None
    out: list[tuple[api.WatchEvent, bool]] = []
    for ordinal, signed_env in enumerate(entry.envelopes):
        env = pb.Envelope()
        try:
            env.ParseFromString(signed_env.body)
        except ProtoDecodeError:
            env = pb.Envelope()
        key_id = bytes(signed_env.key_id)
        event = api.WatchEvent(index=index, ordinal=ordinal, command=command_of(env), author_key_id=key_id,
                               request_id=bytes(env.request_id))
        principal = st.principal(key_id) if key_id else None
        if principal is not None:
            event.author, event.author_pool = principal.name, principal.pool
        result = results[ordinal] if results is not None else None
        if result is None and env.request_id:
            seen = st.dedup_get(key_id, bytes(env.request_id))
            # Only the record of this very application (a repeat's record points at the first one).
            if seen is not None and seen.result.index == index and seen.result.ordinal == ordinal:
                result = seen.result
        if result is not None:
            event.result.CopyFrom(result)
            event.result_known = True
            event.code, event.message = result.code, result.message
        out.append((event, event.command == BARRIER))
    return out


def finish_entry(events: list[tuple[api.WatchEvent, bool]], include_barriers: bool) -> list[api.WatchEvent]:
    """The events a stream sends for one entry, the last one marked `entry_last` (copies if needed)."""
    chosen = [e for e, barrier in events if include_barriers or not barrier]
    if chosen and not chosen[-1].entry_last:
        last = api.WatchEvent()
        last.CopyFrom(chosen[-1])
        last.entry_last = True
        chosen[-1] = last
    return chosen


@dataclass
class _Published:
    """One entry's events for both kinds of streams."""

    index: int
    with_barriers: list[api.WatchEvent]
    without_barriers: list[api.WatchEvent]


@dataclass
class _Snapshot:
    first: int
    last: int


@dataclass(eq=False)
class _Subscriber:
    include_barriers: bool
    capacity: int
    items: deque[list[api.WatchEvent]] = field(default_factory=deque)
    queued: int = 0
    overflowed: bool = False


class WatchHub:
    def __init__(self, state: StateStore, results: WatchResults, node_id: str = "", *,
                 queue_events: int = DEFAULT_QUEUE_EVENTS, max_streams: int = DEFAULT_MAX_STREAMS) -> None:
        self.state = state
        self.results = results
        self.node_id = node_id
        self.queue_events = queue_events
        self.max_streams = max_streams
        self.published = state.applied_index()
        self._cond = threading.Condition()
        self._subs: set[_Subscriber] = set()
        self._streams = 0
        self._inbox: queue.SimpleQueue[AppliedEntry | _Snapshot | None] = queue.SimpleQueue()
        self._stopping = False
        self._stop_event = threading.Event()  # cuts the batch window short on stop
        self._thread: threading.Thread | None = None

    # ----- listeners (tick thread: enqueue only) -----
    def on_applied(self, applied: AppliedEntry) -> None:
        self._inbox.put(applied)

    def on_snapshot(self, first: int, last: int) -> None:
        self._inbox.put(_Snapshot(first, last))

    # ----- lifecycle -----
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fedraft-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._stop_event.set()
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def stream_count(self) -> int:
        with self._cond:
            return self._streams

    # ----- the hub thread -----
    def _run(self) -> None:
        while not self._stopping:
            try:
                first = self._inbox.get(timeout=IDLE_CATCH_UP_S)
            except queue.Empty:
                self._safely(self._catch_up_idle)
                continue
            if first is not None:
                # One wake-up and one results transaction per window, not per entry (decision 0018).
                self._stop_event.wait(BATCH_WINDOW_S)
            batch = [first]
            while len(batch) < 256:
                try:
                    batch.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            if any(item is None for item in batch):
                return
            items = [b for b in batch if b is not None]
            self._safely(functools.partial(self._process, items))

    @staticmethod
    def _safely(fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:  # never lose the hub thread: streams resume from the archive
            log.exception("watch hub: could not publish")

    def _catch_up_idle(self) -> None:
        """Entries applied before the listener was registered (start-up replay): publish them from the archive."""
        applied = self.state.applied_index()
        if applied > self.published:
            self._publish_upto(applied, {})

    def _process(self, batch: list[AppliedEntry | _Snapshot]) -> None:
        applied = [a for a in batch if isinstance(a, AppliedEntry)]
        if applied:
            self.results.put_many((a.index, a.results) for a in applied)
        target = max((a.index for a in applied), default=0)
        if any(isinstance(b, _Snapshot) for b in batch):
            target = max(target, self.state.applied_index())
        if target > self.published:
            self._publish_upto(target, {a.index: a for a in applied})

    def _publish_upto(self, target: int, live: dict[int, AppliedEntry]) -> None:
        with self._cond:
            if not self._subs:  # nobody to tell: checked and advanced atomically, so no stream misses an entry
                self.published = max(self.published, target)
                self._cond.notify_all()
                return
            capacity = max(s.capacity for s in self._subs)
        start = self.published + 1
        if target - start + 1 > capacity:
            # More than any queue holds (a snapshot, a long stall): every stream resumes from the archive.
            with self._cond:
                for s in self._subs:
                    s.overflowed = True
                self.published = target
                self._cond.notify_all()
            return
        entries: list[_Published] = []
        with self.state.read() as st:
            for index, raw in st.archive_iter(start):
                if index > target:
                    break
                known = live.get(index)
                results = known.results if known is not None else self.results.get(index)
                events = entry_events(st, index, raw, results)
                if events:
                    entries.append(_Published(index, finish_entry(events, True), finish_entry(events, False)))
        with self._cond:
            for entry in entries:
                for s in self._subs:
                    chosen = entry.with_barriers if s.include_barriers else entry.without_barriers
                    if not chosen or s.overflowed:
                        continue
                    if s.queued + len(chosen) > s.capacity:
                        s.overflowed = True
                        continue
                    s.items.append(chosen)
                    s.queued += len(chosen)
            self.published = max(self.published, target)
            self._cond.notify_all()

    # ----- history (stream threads) -----
    def history(self, start: int, end: int, include_barriers: bool) -> list[api.WatchEvent]:
        """Events of indexes start..end from the archive (one read transaction)."""
        out: list[api.WatchEvent] = []
        with self.state.read() as st:
            for index, raw in st.archive_iter(start):
                if index > end:
                    break
                out += finish_entry(entry_events(st, index, raw, self.results.get(index)), include_barriers)
        return out

    # ----- streams -----
    def open(self, from_index: int, include_barriers: bool = False) -> WatchStream:
        with self._cond:
            if self._stopping:
                raise HubStopped("the node is stopping")
            floor = self.results.floor
            if from_index and from_index < floor:
                raise Compacted(from_index, floor)
            if self._streams >= self.max_streams:
                raise TooManyStreams(f"at most {self.max_streams} watch streams per node; try another node or "
                                     "later")
            self._streams += 1
            stream = WatchStream(self, from_index or self.published + 1, include_barriers, announce=not from_index)
            if not from_index:  # from now: nothing to replay, subscribed at once
                stream.sub = _Subscriber(include_barriers, self.queue_events)
                self._subs.add(stream.sub)
        return stream

    def _close(self, stream: WatchStream) -> None:
        with self._cond:
            self._streams -= 1
            if stream.sub is not None:
                self._subs.discard(stream.sub)


class WatchStream:
    """One client's stream; iterate `events(check)`, then `close()`."""

    def __init__(self, hub: WatchHub, start: int, include_barriers: bool, announce: bool = False) -> None:
        self.hub = hub
        self.next_index = start  # the next index to send: every event below it was sent
        self.include_barriers = include_barriers
        self.announce = announce  # "from now": first tell the client where now is (a progress report)
        self.sub: _Subscriber | None = None
        self._closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.hub._close(self)

    def events(self, check: Callable[[], bool] = lambda: True,
               progress_s: float = PROGRESS_S) -> Iterator[api.WatchEvent]:
        """Events from `next_index` on. `check()` is called while waiting; False ends the stream
        (the caller went away); it may also raise to end it with an error."""
        hub = self.hub
        if self.announce:
            yield api.WatchEvent(progress=True, index=self.next_index - 1, served_by=hub.node_id)
        # History: replay from the archive until caught up with what the hub published, then subscribe.
        while self.sub is None:
            with hub._cond:
                if hub._stopping:
                    return
                floor = hub.results.floor
                if self.next_index < floor:
                    raise Compacted(self.next_index, floor)
                if self.next_index > hub.published:
                    self.sub = _Subscriber(self.include_barriers, hub.queue_events)
                    hub._subs.add(self.sub)
                    break
                end = min(hub.published, self.next_index + HISTORY_CHUNK - 1)
            chunk = hub.history(self.next_index, end, self.include_barriers)
            yield from chunk
            self.next_index = end + 1
            if not check():
                return
        # Live: whole entries through the bounded queue.
        sub = self.sub
        assert sub is not None
        idle_since = time.monotonic()
        while True:
            with hub._cond:
                if not sub.items and not sub.overflowed and not hub._stopping:
                    hub._cond.wait(WAKE_S)
                items = list(sub.items)
                sub.items.clear()
                sub.queued = 0
                overflowed, stopping, published = sub.overflowed, hub._stopping, hub.published
            for events in items:
                if events[0].index < self.next_index:
                    continue  # published before the subscription's history ended (never expected)
                yield from events
                self.next_index = events[0].index + 1
            if overflowed:
                raise Overflow(self.next_index, hub.queue_events)
            if stopping:
                return
            if items:
                idle_since = time.monotonic()
                continue
            if not check():
                return
            if time.monotonic() - idle_since >= progress_s:
                idle_since = time.monotonic()
                self.next_index = max(self.next_index, published + 1)
                yield api.WatchEvent(progress=True, index=published, served_by=hub.node_id)
