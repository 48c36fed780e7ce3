"""Watch without a cluster: events from the archive and the results store, live publishing, resume,
compaction, slow consumers (fedraft.service.watch, fedraft.storage.watch_results)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedraft._proto.fedraft.v1 import api_pb2 as api
from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.consensus.applier import AppliedEntry, Applier
from fedraft.crypto.envelopes import build_envelope
from fedraft.crypto.signing import Identity, Signer
from fedraft.domain import commands as c
from fedraft.domain.outcome import Code
from fedraft.service.watch import Compacted, Overflow, TooManyStreams, WatchHub, finish_entry
from fedraft.storage.state import StateStore
from fedraft.storage.watch_results import WatchResults, decode_results, encode_results
from tests.helpers import Fed, make_federation, sign_entry
from tests.integration.cluster import wait_for

T0 = 1_800_000_000_000


class Log:
    """A state fed through the real Applier, one entry at a time, as the engine would."""

    def __init__(self, tmp: Path) -> None:
        self.fed: Fed = make_federation()
        self.store = StateStore(tmp / "state", self.fed.genesis, map_size=64 << 20)
        self.applier = Applier(self.store)
        self.index = 1  # index 1 is the leader's no-op, as pysyncobj does: the archive has gaps
        self.requests = itertools.count()

    def env(self, command: c.Command, who: Identity | None = None) -> pb.Signed:
        return build_envelope(Signer(who or self.fed.admins["hq"]), self.fed.cluster_id, command, now_ms=T0)

    def apply(self, *envelopes: pb.Signed) -> AppliedEntry:
        self.index += 1
        data = sign_entry(self.fed, "hq", 1, list(envelopes), T0 + self.index)
        applied = self.applier.apply(self.index, 1, data)
        self.store.commit()
        assert applied is not None
        return applied

    def puts(self, n: int, prefix: str = "k") -> list[AppliedEntry]:
        return [self.apply(self.env(c.Put(f"/routes/{prefix}{next(self.requests)}", b"v"))) for _ in range(n)]


@pytest.fixture()
def log(tmp_path: Path) -> Iterator[Log]:
    lg = Log(tmp_path)
    yield lg
    lg.store.close()


def _hub(tmp: Path, log: Log, **kw: int) -> WatchHub:
    keep = kw.pop("keep_entries", 1000)
    hub = WatchHub(log.store, WatchResults(tmp / "watch", keep_entries=keep), "hq", **kw)
    hub.start()
    return hub


def _feed(hub: WatchHub, entries: list[AppliedEntry]) -> None:
    for a in entries:
        hub.on_applied(a)
    wait_for(lambda: hub.published >= entries[-1].index, 10, 0.01, "the hub to publish")


def _take(events: Iterator[api.WatchEvent], n: int) -> list[api.WatchEvent]:
    out: list[api.WatchEvent] = []
    for e in events:
        if not e.progress:
            out.append(e)
        if len(out) == n:
            break
    return out


def test_results_encoding_round_trips_and_damage_is_detected() -> None:
    results = [pb.Result(code=0, index=5, ordinal=0, record=pb.RegistryRecord(key="/routes/a", value=b"1")),
               pb.Result(code=9, message="no", index=5, ordinal=1)]
    assert decode_results(encode_results(results)) == results
    assert decode_results(encode_results([])) == []
    assert decode_results(encode_results(results)[:-3]) is None


def test_history_comes_from_the_archive_with_the_stored_results(tmp_path: Path, log: Log) -> None:
    entries = log.puts(3)
    batched = log.apply(log.env(c.Put("/routes/x", b"1")), log.env(c.CompareAndSet("/routes/x", b"2", 7)))
    hub = _hub(tmp_path, log)
    try:
        hub.results.put_many((a.index, a.results) for a in [*entries, batched])
        events = hub.history(1, log.index, include_barriers=False)
        assert [(e.index, e.ordinal) for e in events] == [(2, 0), (3, 0), (4, 0), (5, 0), (5, 1)]
        assert [e.command for e in events] == ["put", "put", "put", "put", "compare_and_set"]
        assert all(e.result_known and e.author == "hq-admin" and e.author_pool == "hq" for e in events)
        assert events[0].author_key_id == Signer(log.fed.admins["hq"]).key_id
        assert events[0].result.record.key == "/routes/k0" and events[0].code == Code.OK
        assert events[4].code == Code.FAILED_PRECONDITION and events[4].message
        # entry_last marks the end of each index: a resumed stream starts at index + 1
        assert [e.entry_last for e in events] == [True, True, True, False, True]
    finally:
        hub.stop()


def test_without_stored_results_the_dedup_table_or_nothing_gives_the_result(tmp_path: Path, log: Log) -> None:
    put = log.apply(log.env(c.Put("/routes/a", b"1")))
    tick = log.apply(log.env(c.Tick(T0), who=log.fed.nodes["hq"]))  # node no-ops are not remembered
    hub = _hub(tmp_path, log)
    try:
        events = hub.history(1, log.index, include_barriers=False)
        assert [(e.index, e.command) for e in events] == [(put.index, "put"), (tick.index, "tick")]
        assert events[0].result_known and events[0].result == put.results[0]   # from the de-dup table
        assert not events[1].result_known and not events[1].HasField("result")  # the archive proves only who/what
        assert events[1].author == "hq"
    finally:
        hub.stop()


def test_barriers_are_left_out_unless_asked_for(tmp_path: Path, log: Log) -> None:
    node = log.fed.nodes["hq"]
    mixed = log.apply(log.env(c.Put("/routes/a", b"1")), log.env(c.Barrier(1), who=node))
    only_barrier = log.apply(log.env(c.Barrier(2), who=node))
    hub = _hub(tmp_path, log)
    try:
        hub.results.put_many([(mixed.index, mixed.results), (only_barrier.index, only_barrier.results)])
        quiet = hub.history(1, log.index, include_barriers=False)
        assert [(e.index, e.ordinal, e.entry_last) for e in quiet] == [(mixed.index, 0, True)]
        full = hub.history(1, log.index, include_barriers=True)
        assert [(e.index, e.ordinal, e.command, e.entry_last) for e in full] == [
            (mixed.index, 0, "put", False), (mixed.index, 1, "barrier", True), (only_barrier.index, 0, "barrier", True)]
        assert finish_entry([], True) == []
    finally:
        hub.stop()


def test_a_stream_replays_history_then_follows_live_entries_in_order(tmp_path: Path, log: Log) -> None:
    first = log.puts(3)
    hub = _hub(tmp_path, log)
    try:
        _feed(hub, first)
        stream = hub.open(1)
        events = stream.events(progress_s=60)
        assert [e.index for e in _take(events, 3)] == [a.index for a in first]
        later = log.puts(4)
        _feed(hub, later)
        got = _take(events, 4)
        assert [e.index for e in got] == [a.index for a in later]
        assert [e.result for e in got] == [a.results[0] for a in later]  # live: the applier's own results
        stream.close()
        assert hub.stream_count == 0
    finally:
        hub.stop()


def test_from_now_announces_where_now_is_and_resuming_gives_exactly_the_rest(tmp_path: Path, log: Log) -> None:
    hub = _hub(tmp_path, log)
    try:
        _feed(hub, log.puts(2))
        now = hub.open(0)
        events = now.events(progress_s=60)
        start = next(events)
        assert start.progress and start.index == log.index and start.served_by == "hq"
        entries = log.puts(5)
        _feed(hub, entries)
        seen = _take(events, 2)
        now.close()
        # a client that saw two events resumes from the last index + 1: no gap, no repeat
        resumed = hub.open(seen[-1].index + 1)
        rest = _take(resumed.events(progress_s=60), 3)
        resumed.close()
        assert [e.index for e in seen + rest] == [a.index for a in entries]
    finally:
        hub.stop()


def test_an_index_below_the_kept_results_is_out_of_range_naming_the_oldest(tmp_path: Path, log: Log) -> None:
    hub = _hub(tmp_path, log, keep_entries=3)
    try:
        _feed(hub, log.puts(6))  # indexes 2..7; results of 5, 6, 7 kept
        assert hub.results.floor == 5
        with pytest.raises(Compacted) as info:
            hub.open(2)
        assert info.value.floor == 5 and "oldest available index is 5" in str(info.value)
        stream = hub.open(5)
        assert [e.index for e in _take(stream.events(progress_s=60), 3)] == [5, 6, 7]
        stream.close()
    finally:
        hub.stop()
        hub.results.close()
    reopened = WatchResults(tmp_path / "watch", keep_entries=3)
    assert reopened.floor == 5 and reopened.get(4) is None and reopened.get(7) is not None
    reopened.close()


def test_a_slow_consumer_is_closed_with_the_index_to_resume_from(tmp_path: Path, log: Log) -> None:
    hub = _hub(tmp_path, log, queue_events=3)
    try:
        stream = hub.open(0)
        events = stream.events(progress_s=60)
        assert next(events).progress  # subscribed; nothing read after this
        entries = log.puts(5)
        for a in entries:  # one at a time (a batch larger than the queue overflows at once)
            _feed(hub, [a])
        got: list[int] = []
        with pytest.raises(Overflow) as info:
            got.extend(e.index for e in events)
        assert got == [a.index for a in entries[:3]]  # what fit in the queue is delivered first
        assert info.value.resume_from == entries[3].index and "resume with from_index" in str(info.value)
        stream.close()
        rest = hub.open(info.value.resume_from)
        assert [e.index for e in _take(rest.events(progress_s=60), 2)] == [a.index for a in entries[3:]]
        rest.close()
    finally:
        hub.stop()


def test_a_range_larger_than_the_queue_overflows_at_once(tmp_path: Path, log: Log) -> None:
    hub = _hub(tmp_path, log, queue_events=3)
    try:
        stream = hub.open(0)
        events = stream.events(progress_s=60)
        start = next(events)
        entries = log.puts(5)
        hub.on_snapshot(entries[0].index, entries[-1].index)  # brought 5 entries at once
        with pytest.raises(Overflow) as info:
            list(events)
        assert info.value.resume_from == start.index + 1
        stream.close()
        rest = hub.open(info.value.resume_from)
        assert [e.index for e in _take(rest.events(progress_s=60), 5)] == [a.index for a in entries]
        rest.close()
    finally:
        hub.stop()


def test_streams_are_bounded_and_an_idle_one_reports_progress(tmp_path: Path, log: Log) -> None:
    hub = _hub(tmp_path, log, max_streams=1)
    try:
        stream = hub.open(0)
        with pytest.raises(TooManyStreams):
            hub.open(0)
        events = stream.events(progress_s=0.05)
        assert next(events).progress
        entries = log.puts(1)
        _feed(hub, entries)
        assert next(events).index == entries[0].index
        idle = next(events)
        assert idle.progress and idle.index == entries[0].index
        stream.close()
        hub.open(0).close()  # the slot is free again
    finally:
        hub.stop()


def test_a_caller_that_went_away_ends_the_stream(tmp_path: Path, log: Log) -> None:
    hub = _hub(tmp_path, log)
    try:
        stream = hub.open(0)
        assert [e.progress for e in stream.events(check=lambda: False)] == [True]
    finally:
        hub.stop()


def test_entries_applied_before_the_listener_are_published_from_the_archive(tmp_path: Path, log: Log) -> None:
    hub = _hub(tmp_path, log)
    try:
        stream = hub.open(0)
        events = stream.events(progress_s=60)
        next(events)
        missed = log.puts(2)        # applied, but the listener never heard of them (start-up replay)
        later = log.puts(1)
        _feed(hub, later)           # the next entry it hears of fills the gap from the archive
        got = _take(events, 3)
        assert [e.index for e in got] == [a.index for a in missed + later]
        assert all(e.result_known for e in got)  # puts: their results are in the de-dup table
        stream.close()
    finally:
        hub.stop()


def test_a_snapshot_install_publishes_what_it_brought(tmp_path: Path, log: Log) -> None:
    hub = _hub(tmp_path, log)
    try:
        stream = hub.open(0)
        events = stream.events(progress_s=60)
        next(events)
        brought = log.puts(3)
        hub.on_snapshot(brought[0].index, brought[-1].index)
        assert [e.index for e in _take(events, 3)] == [a.index for a in brought]
        stream.close()
    finally:
        hub.stop()
