"""SnapshotSerializer: signed LMDB snapshots, their transmission, and every way to refuse one."""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lmdb
import pytest
from pysyncobj.config import SERIALIZER_STATE

from fedraft.consensus.snapshot import (
    SnapshotHeader,
    SnapshotSerializer,
    extract_body,
    read_header,
)
from fedraft.crypto.signing import Identity, Signer

CLUSTER = hashlib.sha256(b"test cluster").digest()
LEADER, OTHER = Identity.generate(), Identity.generate()
KEYS = {"node-a": LEADER.public_key, "node-b": OTHER.public_key}
CHUNK = 4096


def key_for(node_id: str) -> bytes | None:
    return KEYS.get(node_id)


# -- a SnapshotSource on a real LMDB environment ----------------------------------------------


@dataclass
class FakeRead:
    index: int
    txn: lmdb.Transaction


def digest_of(env: lmdb.Environment, txn: lmdb.Transaction) -> bytes:
    h = hashlib.sha256()
    for key, value in txn.cursor(db=env.open_db(b"kv", txn=txn)):
        h.update(len(key).to_bytes(4, "big") + key + len(value).to_bytes(4, "big") + value)
    return h.digest()


@dataclass
class Installed:
    index: int
    digest: bytes
    body: bytes


@dataclass
class FakeSource:
    directory: Path
    index: int = 0
    synced: int = 0
    installed: list[Installed] = field(default_factory=list)
    open_reads: int = 0
    env: lmdb.Environment = field(init=False)

    def __post_init__(self) -> None:
        self.env = lmdb.open(str(self.directory / "state"), map_size=1 << 30, max_dbs=4)
        self.env.open_db(b"kv")

    def apply(self, index: int, n: int, value_size: int = 100) -> None:
        db = self.env.open_db(b"kv")
        with self.env.begin(write=True) as txn:
            for i in range(n):
                txn.put(b"key-%012d" % i, (b"%d:%d." % (index, i) * value_size)[:value_size], db=db)
        self.index = index

    def digest(self) -> bytes:
        with self.env.begin() as txn:
            return digest_of(self.env, txn)

    def snapshot_begin(self) -> FakeRead:
        self.open_reads += 1
        return FakeRead(self.index, self.env.begin())

    def snapshot_digest(self, read: FakeRead) -> bytes:
        return digest_of(self.env, read.txn)

    def snapshot_copy(self, read: FakeRead, fd: int) -> None:
        self.env.copyfd(fd, compact=True, txn=read.txn)

    def snapshot_end(self, read: FakeRead) -> None:
        self.open_reads -= 1
        read.txn.abort()

    def sync(self) -> None:
        self.env.sync(True)
        self.synced += 1

    def body_digest(self, data_file: Path) -> bytes:
        env = lmdb.open(str(data_file), subdir=False, readonly=True, lock=False, max_dbs=4)
        try:
            with env.begin() as txn:
                return digest_of(env, txn)
        finally:
            env.close()

    def install(self, data_file: Path, index: int) -> None:
        body = data_file.read_bytes()
        target = self.directory / f"installed-{index}"
        target.mkdir()
        shutil.copy(data_file, target / "data.mdb")
        env = lmdb.open(str(target), max_dbs=4, readonly=True, lock=False)
        with env.begin() as txn:
            self.installed.append(Installed(index, digest_of(env, txn), body))
        env.close()


class BlockingSource(FakeSource):
    """Holds the copy and the sync until released, to look at the world in between."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.copy_gate, self.sync_gate = threading.Event(), threading.Event()
        self.in_sync = threading.Event()

    def snapshot_copy(self, read: FakeRead, fd: int) -> None:
        assert self.copy_gate.wait(10)
        super().snapshot_copy(read, fd)

    def sync(self) -> None:
        self.in_sync.set()
        assert self.sync_gate.wait(10)
        super().sync()


class RecordingSource:
    """A receiver-only source: records installs, must never be asked for anything else."""

    def __init__(self) -> None:
        self.installed: list[tuple[int, bytes]] = []

    def install(self, data_file: Path, index: int) -> None:
        self.installed.append((index, data_file.read_bytes()))

    body_digest = FakeSource.body_digest

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a receiver does not call {name}")


def make(path: Path, source: Any, *, node: str = "node-a", identity: Identity = LEADER,
         **kw: Any) -> SnapshotSerializer:
    kw.setdefault("verify_key_for", key_for)
    kw.setdefault("cluster_id", CLUSTER)
    return SnapshotSerializer(path, source=source, signer=Signer(identity), node_id=node,
                              chunk_size=CHUNK, **kw)


def entries(index: int, term: int = 3) -> tuple[tuple[bytes, int, int], tuple[bytes, int, int]]:
    return (b"\x01prev-%d" % (index - 1), index - 1, term), (b"\x01last-%d" % index, index, term)


def serialize(s: SnapshotSerializer, index: int) -> None:
    prev, last = entries(index)
    s.serialize((None, last, prev, set()), prev[1])


def wait_done(s: SnapshotSerializer) -> tuple[int, int | None]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        state, sid = s.checkSerializing()
        if state != SERIALIZER_STATE.SERIALIZING:
            return state, sid
        time.sleep(0.005)
    raise AssertionError("serialization did not finish")


def transmit(s: SnapshotSerializer, node: str = "n2") -> list[tuple[bytes, bool, bool]]:
    chunks = []
    while True:
        chunk = s.getTransmissionData(node)
        assert chunk is not None
        chunks.append(chunk)
        if chunk[2]:
            return chunks


@pytest.fixture
def leader(tmp_path: Path) -> tuple[SnapshotSerializer, FakeSource]:
    (tmp_path / "a").mkdir()
    source = FakeSource(tmp_path / "a")
    source.apply(10, 300)
    s = make(tmp_path / "a" / "snapshot", source)
    serialize(s, 10)
    assert wait_done(s) == (SERIALIZER_STATE.SUCCESS, 9)
    return s, source


# -- the happy path -------------------------------------------------------------------------------


def test_round_trip(tmp_path: Path, leader: tuple[SnapshotSerializer, FakeSource]) -> None:
    s, source = leader
    assert s.checkSerializing() == (SERIALIZER_STATE.NOT_SERIALIZING, None)
    assert source.synced == 1 and source.open_reads == 0
    assert s.snapshot_index == 10
    header = read_header(tmp_path / "a" / "snapshot")
    prev, last = entries(10)
    assert (header.cluster_id, header.index, header.term, header.node_id) == (CLUSTER, 10, 3, "node-a")
    assert (header.prev_entry, header.last_entry, header.state_digest) == (prev, last, source.digest())
    assert s.deserialize() == (None, last, prev, [])

    (tmp_path / "b").mkdir()
    receiver_source = FakeSource(tmp_path / "b")
    r = make(tmp_path / "b" / "snapshot", receiver_source, node="node-b", identity=OTHER)
    chunks = transmit(s)
    assert len(chunks) > 3 and chunks[0][1] and not any(c[1] for c in chunks[1:])
    assert [r.setTransmissionData(c) for c in chunks] == [False] * (len(chunks) - 1) + [True]

    [installed] = receiver_source.installed
    body = (tmp_path / "a" / "snapshot").read_bytes()[header.body_offset:]
    assert (installed.index, installed.digest, installed.body) == (10, source.digest(), body)
    assert (tmp_path / "b" / "snapshot").read_bytes() == (tmp_path / "a" / "snapshot").read_bytes()
    assert r.deserialize() == (None, last, prev, [])
    assert r.snapshot_index == 10
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["installed-10", "snapshot", "state"]

    assert extract_body(tmp_path / "b" / "snapshot", tmp_path / "body") == header
    assert (tmp_path / "body").read_bytes() == body


def test_restart_serves_the_existing_file(tmp_path: Path, leader: tuple[SnapshotSerializer, FakeSource]) -> None:
    s, source = leader
    s.close()
    for leftover in ("snapshot.tmp", "snapshot.incoming", "snapshot.incoming.body"):
        (tmp_path / "a" / leftover).write_bytes(b"half")
    again = make(tmp_path / "a" / "snapshot", source)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["snapshot", "state"]
    assert again.snapshot_index == 10
    assert again.deserialize()[1] == entries(10)[1]
    assert b"".join(c[0] for c in transmit(again)) == (tmp_path / "a" / "snapshot").read_bytes()


def test_no_snapshot_no_transmission(tmp_path: Path) -> None:
    s = make(tmp_path / "snapshot", RecordingSource())
    assert s.snapshot_index is None
    assert s.getTransmissionData("n2") is None
    assert s.setTransmissionData(None) is False and s.setTransmissionData(False) is False


# -- the sender's ordering ------------------------------------------------------------------------


def test_state_behind_the_last_entry_is_fine(tmp_path: Path) -> None:
    # pysyncobj's own no-op entries never reach the state: a state at 9 with the last entry 10 is whole.
    source = FakeSource(tmp_path)
    source.apply(9, 10)
    s = make(tmp_path / "snapshot", source)
    serialize(s, 10)
    assert wait_done(s) == (SERIALIZER_STATE.SUCCESS, 9)


def test_failed_when_the_state_is_past_the_last_applied_entry(tmp_path: Path) -> None:
    source = FakeSource(tmp_path)
    source.apply(11, 10)
    now = [100.0]
    s = make(tmp_path / "snapshot", source, retry_after=5.0, clock=lambda: now[0])
    serialize(s, 10)
    assert s.checkSerializing() == (SERIALIZER_STATE.FAILED, 9)
    assert s.checkSerializing() == (SERIALIZER_STATE.NOT_SERIALIZING, None)
    assert source.open_reads == 0 and not (tmp_path / "snapshot").exists()
    source.apply(10, 10)
    serialize(s, 10)  # within the back-off: not attempted
    assert s.checkSerializing() == (SERIALIZER_STATE.NOT_SERIALIZING, None)
    now[0] += 5.0
    serialize(s, 10)
    assert wait_done(s) == (SERIALIZER_STATE.SUCCESS, 9)


def test_failed_when_the_copy_fails(tmp_path: Path) -> None:
    source = FakeSource(tmp_path)
    source.apply(10, 10)

    def broken(read: FakeRead, fd: int) -> None:
        raise OSError("disk full")

    source.snapshot_copy = broken  # type: ignore[method-assign]
    s = make(tmp_path / "snapshot", source)
    serialize(s, 10)
    assert wait_done(s) == (SERIALIZER_STATE.FAILED, 9)
    assert source.open_reads == 0 and source.synced == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]


def test_previous_snapshot_serves_until_the_new_one_is_in(
        tmp_path: Path, leader: tuple[SnapshotSerializer, FakeSource]) -> None:
    first, first_source = leader
    first.close()
    first_source.env.close()
    source = BlockingSource(tmp_path / "a")
    path = tmp_path / "a" / "snapshot"
    old = path.read_bytes()
    s = make(path, source)
    in_flight = s.getTransmissionData("n2")  # a transmission of the old snapshot has begun
    assert in_flight is not None and in_flight[1]

    source.apply(20, 500)
    serialize(s, 20)
    assert s.checkSerializing() == (SERIALIZER_STATE.SERIALIZING, 19)
    assert path.read_bytes() == old
    assert b"".join(c[0] for c in transmit(s, "n3")) == old  # new transmissions: old file too

    source.copy_gate.set()
    assert source.in_sync.wait(10)
    # Renamed in before the state sync, and SUCCESS only after the sync.
    assert read_header(path).index == 20
    assert s.checkSerializing() == (SERIALIZER_STATE.SERIALIZING, 19)
    rest = transmit(s, "n2")
    assert in_flight[0] + b"".join(c[0] for c in rest) == old  # the open handle still reads the old file
    source.sync_gate.set()
    assert wait_done(s) == (SERIALIZER_STATE.SUCCESS, 19)
    assert source.synced == 1 and s.snapshot_index == 20
    assert b"".join(c[0] for c in transmit(s, "n2")) == path.read_bytes() != old


def test_install_during_serialization_voids_the_local_snapshot(
        tmp_path: Path, leader: tuple[SnapshotSerializer, FakeSource]) -> None:
    sender, _ = leader
    (tmp_path / "b").mkdir()
    source = BlockingSource(tmp_path / "b")
    source.apply(5, 10)
    r = make(tmp_path / "b" / "snapshot", source, node="node-b", identity=OTHER)
    serialize(r, 5)
    chunks = transmit(sender)
    received = [r.setTransmissionData(c) for c in chunks]
    assert received[-1] is True and source.installed[-1].index == 10
    source.copy_gate.set()
    source.sync_gate.set()
    assert wait_done(r) == (SERIALIZER_STATE.FAILED, 4)
    assert read_header(tmp_path / "b" / "snapshot").index == 10 and r.snapshot_index == 10


# -- everything a receiver must refuse -----------------------------------------------------------


def _valid_file(tmp_path: Path, leader: tuple[SnapshotSerializer, FakeSource]) -> tuple[bytes, SnapshotHeader]:
    return (tmp_path / "a" / "snapshot").read_bytes(), read_header(tmp_path / "a" / "snapshot")


def _feed(r: SnapshotSerializer, blob: bytes, chunk: int = CHUNK) -> list[bool]:
    pieces = [blob[i:i + chunk] for i in range(0, len(blob), chunk)]
    return [r.setTransmissionData((p, i == 0, i == len(pieces) - 1)) for i, p in enumerate(pieces)]


def _refused(tmp_path: Path, blob: bytes, chunk: int = CHUNK, **kw: Any) -> None:
    path = tmp_path / "b" / "snapshot"
    path.parent.mkdir(exist_ok=True)
    before = path.read_bytes() if path.exists() else None
    source = RecordingSource()
    r = make(path, source, node="node-b", identity=OTHER, **kw)
    assert not any(_feed(r, blob, chunk))
    assert source.installed == []
    assert (path.read_bytes() if path.exists() else None) == before
    assert sorted(p.name for p in path.parent.iterdir()) == ([] if before is None else ["snapshot"])


def test_every_flipped_header_byte_is_refused(tmp_path: Path, leader: tuple[SnapshotSerializer, FakeSource]) -> None:
    blob, header = _valid_file(tmp_path, leader)
    for offset in range(header.body_offset):  # magic, length, every field, the signature
        flipped = bytearray(blob)
        flipped[offset] ^= 0x01
        _refused(tmp_path, bytes(flipped))


@pytest.mark.parametrize("where", [0, 1, 4095, 4096, 50_000, -1])
def test_flipped_body_byte_is_refused(tmp_path: Path, leader: tuple[SnapshotSerializer, FakeSource],
                                      where: int) -> None:
    blob, header = _valid_file(tmp_path, leader)
    flipped = bytearray(blob)
    flipped[header.body_offset + where if where >= 0 else where] ^= 0x80
    _refused(tmp_path, bytes(flipped))


def test_a_previous_snapshot_is_kept_when_a_new_one_is_refused(
        tmp_path: Path, leader: tuple[SnapshotSerializer, FakeSource]) -> None:
    blob, _ = _valid_file(tmp_path, leader)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "snapshot").write_bytes(blob)
    _refused(tmp_path, blob[:-1] + bytes([blob[-1] ^ 1]))


class ForgingSource(FakeSource):
    """A voter that signs a digest which is not the digest of the state it ships."""

    def snapshot_digest(self, read: FakeRead) -> bytes:
        return hashlib.sha256(b"another state").digest()


def test_a_signed_header_whose_digest_is_not_the_body_s_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    source = ForgingSource(tmp_path / "a")
    source.apply(10, 300)
    s = make(tmp_path / "a" / "snapshot", source)
    serialize(s, 10)
    assert wait_done(s) == (SERIALIZER_STATE.SUCCESS, 9)
    blob = (tmp_path / "a" / "snapshot").read_bytes()  # signature, cluster and body hash all valid
    _refused(tmp_path, blob)


def test_a_snapshot_this_node_is_already_past_is_refused(
        tmp_path: Path, leader: tuple[SnapshotSerializer, FakeSource]) -> None:
    blob, header = _valid_file(tmp_path, leader)
    _refused(tmp_path, blob, applied_index=lambda: header.index)      # a repeated transmission
    _refused(tmp_path, blob, applied_index=lambda: header.index + 5)  # a late one
    r = make(tmp_path / "c" / "snapshot", RecordingSource(), node="node-c", identity=OTHER,
             applied_index=lambda: header.index - 1)
    (tmp_path / "c").mkdir()
    assert _feed(r, blob)[-1] is True  # one entry behind: installed


def test_wrong_cluster_unknown_or_wrong_signer(tmp_path: Path, leader: tuple[SnapshotSerializer, FakeSource]) -> None:
    blob, _ = _valid_file(tmp_path, leader)
    _refused(tmp_path, blob, cluster_id=hashlib.sha256(b"another").digest())
    _refused(tmp_path, blob, verify_key_for=lambda node: None)
    _refused(tmp_path, blob, verify_key_for=lambda node: OTHER.public_key)


def test_truncated_and_overlong_streams(tmp_path: Path, leader: tuple[SnapshotSerializer, FakeSource]) -> None:
    blob, header = _valid_file(tmp_path, leader)
    for cut in (5, 11, 100, header.body_offset, header.body_offset + 1, len(blob) - 1):
        _refused(tmp_path, blob[:cut])
    _refused(tmp_path, blob + b"\x00")
    _refused(tmp_path, blob, max_snapshot_bytes=len(blob) - 1)
    _refused(tmp_path, blob, chunk=2 * CHUNK + 1)


def test_stream_protocol_misuse(tmp_path: Path, leader: tuple[SnapshotSerializer, FakeSource]) -> None:
    blob, _ = _valid_file(tmp_path, leader)
    source = RecordingSource()
    (tmp_path / "b").mkdir()
    r = make(tmp_path / "b" / "snapshot", source, node="node-b", identity=OTHER)
    assert r.setTransmissionData((blob[CHUNK:], False, True)) is False  # no first chunk
    assert r.setTransmissionData((blob[:CHUNK], 1, 0)) is False  # ints are not bools
    assert r.setTransmissionData(("text", True, True)) is False
    # A restart of the stream mid-way discards the partial one.
    assert r.setTransmissionData((blob[:CHUNK], True, False)) is False
    assert _feed(r, blob)[-1] is True
    assert [i for i, _ in source.installed] == [10]


# -- a single pysyncobj node on LmdbJournal and SnapshotSerializer ---------------------------------


@pytest.mark.usefixtures("real_pysyncobj_pickle")  # plain pysyncobj with a pickled @replicated method
def test_pysyncobj_keeps_entries_acknowledged_after_a_snapshot_across_a_crash(tmp_path: Path) -> None:
    """Crash after SUCCESS but before the journal truncation is durable: nothing after the snapshot
    may be lost (the owner aligns the journal at start-up; pysyncobj then keeps it)."""
    import socket

    import pysyncobj.syncobj as so
    from pysyncobj import SyncObj, SyncObjConf, replicated

    from fedraft.consensus.journal import LmdbJournal

    class Counter(SyncObj):  # type: ignore[misc]
        def __init__(self, addr: str, conf: SyncObjConf) -> None:
            super().__init__(addr, [], conf)
            self.total = 0

        @replicated  # type: ignore[untyped-decorator]
        def add(self, n: int) -> None:
            self.total += n

    source = BlockingSource(tmp_path)
    source.copy_gate.set()
    nodes: list[Counter] = []
    journals: list[LmdbJournal] = []

    def snapshot_begin() -> FakeRead:
        source.index = nodes[-1].raftLastApplied  # the fake's "apply" just follows pysyncobj
        return FakeSource.snapshot_begin(source)

    source.snapshot_begin = snapshot_begin  # type: ignore[method-assign]

    def create_journal(_: object) -> LmdbJournal:
        journal = LmdbJournal(tmp_path / "journal")
        if (tmp_path / "snapshot").exists():
            header = read_header(tmp_path / "snapshot")
            journal.align_to_snapshot(header.prev_entry, header.last_entry)
        journals.append(journal)
        return journal

    def refuse_pickle(*_: object) -> None:
        raise AssertionError("pysyncobj's own serializer must not run")

    def tick_until(done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 10
        while not done():
            assert time.monotonic() < deadline
            nodes[-1].doTick(0.01)
            journals[-1].flush()  # what the transport does before releasing messages

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        addr = f"127.0.0.1:{sock.getsockname()[1]}"
    conf = dict(autoTick=False, fullDumpFile=str(tmp_path / "snapshot"), journalFile="unused",
                serializer=refuse_pickle, deserializer=refuse_pickle, useFork=False,
                logCompactionMinEntries=10**9, logCompactionMinTime=10**9)
    saved = (so.createJournal, so.Serializer)
    so.createJournal = create_journal
    so.Serializer = lambda file_name, *_: make(Path(file_name), source)
    try:
        nodes.append(Counter(addr, SyncObjConf(**conf)))
        tick_until(lambda: nodes[-1]._isLeader())
        for i in range(30):
            nodes[-1].add(i)
        tick_until(lambda: nodes[-1].raftLastApplied == (journals[-1].last_index() or 0) >= 32)
        snap = nodes[-1].raftLastApplied
        nodes[-1].forceLogCompaction()
        tick_until(source.in_sync.is_set)  # snapshot file in place, state sync under way
        for i in range(5):
            nodes[-1].add(i)
        tick_until(lambda: nodes[-1].raftLastApplied == snap + 5)  # acknowledged and durable
        source.sync_gate.set()
        deadline = time.monotonic() + 10
        while journals[-1].first_index() != snap - 1:  # SUCCESS: the journal is truncated in memory
            assert time.monotonic() < deadline
            nodes[-1].doTick(0.01)
        crash_journal = journals[-1]
        crash_journal._env.close()  # ... and the node dies before that truncation is flushed
        crash_journal._closed = True
        nodes[-1]._SyncObj__transport.destroy()

        nodes.append(Counter(addr, SyncObjConf(**conf)))
        nodes[-1].doTick(0.0)
        assert read_header(tmp_path / "snapshot").index == snap
        assert (journals[-1].first_index(), journals[-1].last_index()) == (snap - 1, snap + 5)
        assert nodes[-1].raftLastApplied == snap
        nodes[-1].destroy()
        journals[-1].close()
    finally:
        so.createJournal, so.Serializer = saved
