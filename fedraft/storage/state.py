"""The replicated state in LMDB: one environment, one named database per area (SPEC §1, D15, D18).

The applier is the only writer and runs on the tick thread: it keeps one write transaction open
across the entries of a tick and commits it once (`commit`). Readers on other threads use read
transactions and see only committed state. The applied index and the chain head live in `meta`,
written in the same transaction as the change they describe.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import lmdb

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.crypto.chain import GENESIS_HEAD
from fedraft.domain.genesis import Genesis
from fedraft.domain.registry import Record, Revision
from fedraft.errors import DecodeError, InvariantBroken, OperatorError
from fedraft.storage import (
    catalog_schema,
    checkpoint_schema,
    governance_schema,
    log_schema,
    memory_schema,
    placement_schema,
)

if TYPE_CHECKING:
    from fedraft.consensus.snapshot import SnapshotRead

# Every replicated database. The digest (D18) covers exactly these, in sorted order. Each area names
# its own databases in its schema module.
CORE_DBS = (b"archive", b"dedup", b"dedup_exp", b"meta", b"principals", b"registry")
REPLICATED_DBS = tuple(sorted({*CORE_DBS, *governance_schema.DBS, *placement_schema.DBS, *catalog_schema.DBS,
                                *memory_schema.DBS, *checkpoint_schema.DBS,
                                *log_schema.DBS}))

M_APPLIED = b"applied_index"
M_HEAD = b"chain_head"
M_EFFECTIVE = b"effective_ms"
M_TERM = b"leader_term"
M_TERM_LEADER = b"leader_term_node"
M_TERM_START = b"leader_term_start_ms"
M_APPLY_VERSION = b"apply_version"
M_SEEDED = b"genesis_cluster_id"

DEFAULT_MAP_SIZE = 16 << 30
DATA_FILE = "data.mdb"


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def from_u64(b: bytes | None) -> int:
    return int.from_bytes(b, "big") if b else 0


def record_to_pb(r: Record) -> pb.RegistryRecord:
    return pb.RegistryRecord(
        key=r.key, value=r.value, version=r.version,
        create_revision=pb.Revision(index=r.create_revision.index, ordinal=r.create_revision.ordinal),
        mod_revision=pb.Revision(index=r.mod_revision.index, ordinal=r.mod_revision.ordinal))


def record_from_pb(m: pb.RegistryRecord) -> Record:
    return Record(m.key, m.value, m.version,
                  Revision(m.create_revision.index, m.create_revision.ordinal),
                  Revision(m.mod_revision.index, m.mod_revision.ordinal))


class Derived:
    """What this process derives from the replicated state to apply faster (the placement view).

    Never persisted or replicated: a node must decide the same with or without it, so it is dropped
    whenever the state may move under it (an aborted write transaction, a snapshot install, a
    reopen), and `writes` counts, per database, every write to an area's databases (`StateTxn.put`/
    `delete` of the applier's transaction): a holder compares `written(the databases it read)` with
    the count it last saw to know that nobody else changed them since.
    """

    def __init__(self) -> None:
        self.caches: dict[str, object] = {}
        self.writes: dict[bytes, int] = {}

    def reset(self) -> None:
        self.caches.clear()

    def written(self, dbs: Iterable[bytes]) -> int:
        """How many writes these databases have had (counts only grow)."""
        writes = self.writes
        return sum(writes.get(db, 0) for db in dbs)


class StateTxn:
    """Typed access to the state through one LMDB transaction (read or write).

    `derived` is the store's process-local cache, given only to the applier's write transaction."""

    def __init__(self, txn: lmdb.Transaction, dbs: dict[bytes, lmdb._Database],
                 derived: Derived | None = None) -> None:
        self.txn = txn
        self._dbs = dbs
        self.derived = derived

    def _get(self, db: bytes, key: bytes) -> bytes | None:
        value = self.txn.get(key, db=self._dbs[db])
        return bytes(value) if value is not None else None

    def _put(self, db: bytes, key: bytes, value: bytes) -> None:
        self.txn.put(key, value, db=self._dbs[db])

    # generic access for the areas' schema modules
    def get(self, db: bytes, key: bytes) -> bytes | None:
        return self._get(db, key)

    def put(self, db: bytes, key: bytes, value: bytes) -> None:
        if self.derived is not None:
            self.derived.writes[db] = self.derived.writes.get(db, 0) + 1
        self._put(db, key, value)

    def delete(self, db: bytes, key: bytes) -> bool:
        if self.derived is not None:
            self.derived.writes[db] = self.derived.writes.get(db, 0) + 1
        return bool(self.txn.delete(key, db=self._dbs[db]))

    def items(self, db: bytes, prefix: bytes = b"", start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs of `db` whose key starts with `prefix`, in key order, from `start` on."""
        cursor = self.txn.cursor(db=self._dbs[db])
        if not cursor.set_range(max(prefix, start)):
            return
        for key, value in cursor:
            if not bytes(key).startswith(prefix):
                return
            yield bytes(key), bytes(value)

    def count(self, db: bytes) -> int:
        return int(self.txn.stat(self._dbs[db])["entries"])

    # meta
    def meta_int(self, name: bytes) -> int:
        return from_u64(self._get(b"meta", name))

    def set_meta_int(self, name: bytes, value: int) -> None:
        self._put(b"meta", name, u64(value))

    def meta_bytes(self, name: bytes) -> bytes | None:
        return self._get(b"meta", name)

    def set_meta_bytes(self, name: bytes, value: bytes) -> None:
        self._put(b"meta", name, value)

    @property
    def applied_index(self) -> int:
        return self.meta_int(M_APPLIED)

    @property
    def chain_head(self) -> bytes:
        return self.meta_bytes(M_HEAD) or GENESIS_HEAD

    @property
    def effective_ms(self) -> int:
        return self.meta_int(M_EFFECTIVE)

    # principals
    def principal(self, key_id: bytes) -> pb.Principal | None:
        raw = self._get(b"principals", key_id)
        if raw is None:
            return None
        p = pb.Principal()
        p.ParseFromString(raw)
        return p

    def put_principal(self, p: pb.Principal) -> None:
        self._put(b"principals", p.key_id, p.SerializeToString(deterministic=True))

    # registry
    def registry_get(self, key: str) -> Record | None:
        raw = self._get(b"registry", key.encode())
        if raw is None:
            return None
        m = pb.RegistryRecord()
        m.ParseFromString(raw)
        return record_from_pb(m)

    def registry_set(self, record: Record) -> None:
        self._put(b"registry", record.key.encode(), record_to_pb(record).SerializeToString(deterministic=True))

    def registry_remove(self, key: str) -> None:
        self.txn.delete(key.encode(), db=self._dbs[b"registry"])

    def registry_count(self) -> int:
        return int(self.txn.stat(self._dbs[b"registry"])["entries"])

    # de-duplication (D3)
    def dedup_get(self, key_id: bytes, request_id: bytes) -> pb.DedupRecord | None:
        raw = self._get(b"dedup", key_id + request_id)
        if raw is None:
            return None
        d = pb.DedupRecord()
        d.ParseFromString(raw)
        return d

    def dedup_put(self, key_id: bytes, request_id: bytes, record: pb.DedupRecord) -> None:
        self._put(b"dedup", key_id + request_id, record.SerializeToString(deterministic=True))
        self._put(b"dedup_exp", u64(record.expires_at_ms) + key_id + request_id, b"")

    def dedup_prune(self, now_ms: int, limit: int) -> int:
        """Drop de-dup records that expired at or before `now_ms` (oldest first, at most `limit`)."""
        cursor = self.txn.cursor(db=self._dbs[b"dedup_exp"])
        doomed: list[bytes] = []
        for key, _ in cursor:
            if from_u64(bytes(key[:8])) > now_ms or len(doomed) >= limit:
                break
            doomed.append(bytes(key))
        for key in doomed:
            self.txn.delete(key, db=self._dbs[b"dedup_exp"])
            self.txn.delete(key[8:], db=self._dbs[b"dedup"])
        return len(doomed)

    # archive of signed entries (SPEC §4)
    def archive_put(self, index: int, signed_entry: bytes) -> None:
        self._put(b"archive", u64(index), signed_entry)

    def archive_get(self, index: int) -> bytes | None:
        return self._get(b"archive", u64(index))

    def archive_iter(self, start: int = 0) -> Iterator[tuple[int, bytes]]:
        cursor = self.txn.cursor(db=self._dbs[b"archive"])
        if not cursor.set_range(u64(start)):
            return
        for key, value in cursor:
            yield from_u64(bytes(key)), bytes(value)

    def digest(self) -> bytes:
        """SPEC D18: sha256 over the sorted (key, value) pairs of every replicated database."""
        h = hashlib.sha256()
        for name in REPLICATED_DBS:
            h.update(len(name).to_bytes(4, "big") + name)
            for key, value in self.txn.cursor(db=self._dbs[name]):
                h.update(len(key).to_bytes(4, "big"))
                h.update(key)
                h.update(len(value).to_bytes(4, "big"))
                h.update(value)
        return h.digest()


def env_usage(env: lmdb.Environment) -> tuple[int, int]:
    """(bytes up to the last page written, map size) of an LMDB environment: how close it is to full.
    A high-water mark: LMDB reuses freed pages but never gives them back."""
    info = env.info()
    return (info["last_pgno"] + 1) * env.stat()["psize"], info["map_size"]


def replicated_dbs(env: lmdb.Environment, txn: lmdb.Transaction, where: Path) -> dict[bytes, lmdb._Database]:
    """The replicated databases of a state opened read-only outside a StateStore (an export, a
    recovery, a received snapshot body); OperatorError naming the one that is missing."""
    dbs = {}
    for name in REPLICATED_DBS:
        try:
            dbs[name] = env.open_db(name, txn=txn, create=False)
        except lmdb.Error:
            raise OperatorError(f"{where}: the state has no {name.decode()} database "
                                "(written by another fedraft version?)") from None
    return dbs


@dataclass
class SnapshotReadView:
    index: int
    txn: lmdb.Transaction


class StateStore:
    """The LMDB environment holding the replicated state of one node."""

    def __init__(self, path: Path, genesis: Genesis, map_size: int = DEFAULT_MAP_SIZE) -> None:
        self.path = Path(path)
        self.genesis = genesis
        self.map_size = map_size
        self._write: lmdb.Transaction | None = None
        self._swap = _SwapLock()  # readers share it; a snapshot install takes it alone
        self.derived = Derived()  # process-local, never persisted: see Derived
        self.installs = 0  # snapshot installs by this process; changes only while readers are shut out
        self._open()

    def _open(self) -> None:
        self.derived.reset()
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            # metasync=False: data pages are fsynced at commit, the meta page lazily; a crash may
            # undo the last commit but keeps the file intact. The journal replays what is lost.
            self.env = lmdb.open(str(self.path), map_size=self.map_size, max_dbs=64, max_readers=256,
                                 metasync=False, sync=True, writemap=False)
        except lmdb.Error as exc:
            raise OperatorError(f"cannot open state database {self.path}: {exc}") from None
        self.env.reader_check()
        self._dbs = {name: self.env.open_db(name) for name in REPLICATED_DBS}
        with self.env.begin(write=True) as txn:
            st = StateTxn(txn, self._dbs)
            seeded = st.meta_bytes(M_SEEDED)
            if seeded is None:
                self._seed(st)
            elif seeded != self.genesis.cluster_id:
                raise OperatorError(f"state in {self.path} belongs to another federation",
                                    hint="check the genesis file in the node config")

    def _seed(self, st: StateTxn) -> None:
        """Index 0: the principals genesis pins (voter nodes and admins)."""
        from fedraft.crypto.signing import key_id_of

        for v in self.genesis.voters:
            st.put_principal(pb.Principal(key_id=key_id_of(v.public_key), public_key=v.public_key,
                                          pool=v.pool, role="node", name=v.node_id))
        for a in self.genesis.admins:
            st.put_principal(pb.Principal(key_id=key_id_of(a.public_key), public_key=a.public_key,
                                          pool=a.pool, role="admin", name=a.name))
        governance_schema.seed(st, self.genesis)
        placement_schema.seed(st, self.genesis)
        st.set_meta_bytes(M_SEEDED, self.genesis.cluster_id)
        st.set_meta_int(M_APPLIED, 0)
        st.set_meta_bytes(M_HEAD, GENESIS_HEAD)

    # --- the applier's write transaction (tick thread only) ---
    def writer(self) -> StateTxn:
        if self._write is None:
            self._write = self.env.begin(write=True)
        return StateTxn(self._write, self._dbs, self.derived)

    def commit(self) -> bool:
        """Commit pending apply writes; True if there were any."""
        if self._write is None:
            return False
        txn, self._write = self._write, None
        txn.commit()
        return True

    def abort(self) -> None:
        self.derived.reset()  # it may hold what the aborted transaction wrote
        if self._write is not None:
            self._write.abort()
            self._write = None

    # --- readers (any thread) ---
    @contextmanager
    def read(self) -> Iterator[StateTxn]:
        with self._swap.shared(), self.env.begin() as txn:
            yield StateTxn(txn, self._dbs)

    def applied_index(self) -> int:
        with self.read() as st:
            return st.applied_index

    def digest(self) -> bytes:
        with self.read() as st:
            return st.digest()

    def usage(self) -> tuple[int, int]:
        """(bytes used, map size); never against an environment a snapshot install is swapping."""
        with self._swap.shared():
            return env_usage(self.env)

    def sync(self) -> None:
        self.env.sync(True)

    # --- SnapshotSource (fedraft.consensus.snapshot) ---
    def snapshot_begin(self) -> SnapshotReadView:
        self.commit()
        txn = self.env.begin()
        return SnapshotReadView(StateTxn(txn, self._dbs).applied_index, txn)

    def snapshot_digest(self, read: SnapshotRead) -> bytes:
        assert isinstance(read, SnapshotReadView)
        return StateTxn(read.txn, self._dbs).digest()

    def snapshot_copy(self, read: SnapshotRead, fd: int) -> None:
        assert isinstance(read, SnapshotReadView)
        self.env.copyfd(fd, compact=True, txn=read.txn)

    def snapshot_end(self, read: SnapshotRead) -> None:
        assert isinstance(read, SnapshotReadView)
        read.txn.abort()

    @staticmethod
    def _probe(data_file: Path) -> tuple[int, bytes | None]:
        """(applied index, cluster id) of a compact state copy."""
        probe = lmdb.open(str(data_file), subdir=False, readonly=True, lock=False, max_dbs=64)
        try:
            with probe.begin() as txn:
                meta = probe.open_db(b"meta", txn=txn, create=False)
                cid = txn.get(M_SEEDED, db=meta)
                return from_u64(txn.get(M_APPLIED, db=meta)), bytes(cid) if cid is not None else None
        finally:
            probe.close()

    def body_applied_index(self, data_file: Path) -> int:
        """The applied index of a compact state copy (a snapshot body)."""
        return self._probe(data_file)[0]

    @staticmethod
    def body_digest(data_file: Path) -> bytes:
        """SPEC D18 digest of a compact state copy (a received snapshot body), before it is installed."""
        try:
            probe = lmdb.open(str(data_file), subdir=False, readonly=True, lock=False, max_dbs=64)
        except lmdb.Error as exc:
            raise DecodeError(f"snapshot body is not a state copy: {exc}") from None
        try:
            with probe.begin() as txn:
                return StateTxn(txn, replicated_dbs(probe, txn, data_file)).digest()
        except (lmdb.Error, OperatorError) as exc:
            raise DecodeError(f"snapshot body is not a state copy: {exc}") from None
        finally:
            probe.close()

    def install(self, data_file: Path, index: int) -> None:
        """Swap the live state for a received compact copy (already verified by the caller)."""
        got, cid = self._probe(data_file)
        # The state's applied index counts fedraft entries; the header names the Raft index, which may
        # be a later pysyncobj no-op.
        if got > index or cid != self.genesis.cluster_id:
            raise InvariantBroken(f"snapshot state is at index {got}, past the header's index {index}")
        with self._swap.exclusive():
            self.abort()
            self.env.close()
            staging = self.path.with_name(self.path.name + ".installing")
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            os.replace(data_file, staging / DATA_FILE)
            _fsync_dir(staging)
            old = self.path.with_name(self.path.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.path, old)
            os.replace(staging, self.path)
            _fsync_dir(self.path.parent)
            shutil.rmtree(old, ignore_errors=True)
            self._open()
            self.installs += 1

    def close(self) -> None:
        with self._swap.exclusive():
            self.abort()
            self.env.close()


class _SwapLock:
    """Many readers or one swapper."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._swapping = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._swapping:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._swapping:
                self._cond.wait()
            self._swapping = True
            while self._readers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._swapping = False
                self._cond.notify_all()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
