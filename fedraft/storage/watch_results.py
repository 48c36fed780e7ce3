"""Pool-local results of applied entries, kept for Watch history (docs/decisions/0008-watch.md).

The replicated state archives every signed entry but not what applying it returned. Watch serves
past indexes from that archive; this store adds the results this node computed when it applied
them, keyed by index. It is never replicated and not in the state digest: each node writes what
it applied itself, after the state committed (D14), from the watch hub's thread.

`<data_dir>/watch` (LMDB):
- `results`: u64 index -> the entry's results, each a length-prefixed (u32) serialized Result, in
  envelope order;
- `meta`: `floor`, the lowest index Watch serves history for on this node (raised as old results
  are pruned: at most `keep_entries` indexes are kept).

A crash between the state's commit and this store's loses those results (the events of those
indexes are then served with `result_known = false`), never more.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

import lmdb

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.errors import OperatorError

WATCH_DIR = "watch"
DEFAULT_KEEP_ENTRIES = 200_000
DEFAULT_MAP_SIZE = 4 << 30
PRUNE_BATCH = 4096
M_FLOOR = b"floor"


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def encode_results(results: Iterable[pb.Result]) -> bytes:
    out = bytearray()
    for r in results:
        raw = r.SerializeToString(deterministic=True)
        out += len(raw).to_bytes(4, "big") + raw
    return bytes(out)


def decode_results(data: bytes) -> list[pb.Result] | None:
    """The results encoded by encode_results; None if the bytes are damaged."""
    out: list[pb.Result] = []
    pos = 0
    try:
        while pos < len(data):
            size = int.from_bytes(data[pos:pos + 4], "big")
            pos += 4
            if pos + size > len(data):
                return None
            r = pb.Result()
            r.ParseFromString(data[pos:pos + size])
            out.append(r)
            pos += size
    except Exception:
        return None
    return out


def watch_path(data_dir: Path) -> Path:
    return Path(data_dir) / WATCH_DIR


class WatchResults:
    """Results by index, with a moving floor (see the module docstring). Thread-safe."""

    def __init__(self, path: Path, *, keep_entries: int = DEFAULT_KEEP_ENTRIES,
                 map_size: int = DEFAULT_MAP_SIZE) -> None:
        if keep_entries < 1:
            raise ValueError("keep_entries must be at least 1")
        self.path = Path(path)
        self.keep_entries = keep_entries
        self._lock = threading.Lock()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            # Like the state: data fsynced at commit, the meta page lazily (a crash may undo the last commit).
            self.env = lmdb.open(str(self.path), map_size=map_size, max_dbs=4, metasync=False, sync=True)
        except lmdb.Error as exc:
            raise OperatorError(f"cannot open watch results {self.path}: {exc}") from None
        self._results = self.env.open_db(b"results")
        self._meta = self.env.open_db(b"meta")
        with self.env.begin() as txn:
            raw = txn.get(M_FLOOR, db=self._meta)
            self._floor = int.from_bytes(raw, "big") if raw else 0

    @property
    def floor(self) -> int:
        """The lowest index whose history this node serves (0: from the archive's first entry)."""
        return self._floor

    def put_many(self, items: Iterable[tuple[int, list[pb.Result]]]) -> None:
        """Store the results of applied entries (one transaction), then prune past `keep_entries`."""
        batch = [(index, encode_results(results)) for index, results in items if index >= self._floor]
        if not batch:
            return
        with self._lock, self.env.begin(write=True) as txn:
            for index, value in batch:
                txn.put(_u64(index), value, db=self._results)
            excess = int(txn.stat(self._results)["entries"]) - self.keep_entries
            if excess > 0:
                cursor = txn.cursor(db=self._results)
                doomed: list[bytes] = []
                for key, _ in cursor:
                    if len(doomed) >= min(excess, PRUNE_BATCH):
                        break
                    doomed.append(bytes(key))
                for key in doomed:
                    txn.delete(key, db=self._results)
                floor = int.from_bytes(doomed[-1], "big") + 1
                txn.put(M_FLOOR, _u64(floor), db=self._meta)
                self._floor = floor

    def get(self, index: int) -> list[pb.Result] | None:
        with self.env.begin() as txn:
            raw = txn.get(_u64(index), db=self._results)
        return decode_results(bytes(raw)) if raw is not None else None

    def last_index(self) -> int:
        with self.env.begin() as txn:
            cursor = txn.cursor(db=self._results)
            return int.from_bytes(bytes(cursor.key()), "big") if cursor.last() else 0

    def close(self) -> None:
        with self._lock:
            self.env.close()
