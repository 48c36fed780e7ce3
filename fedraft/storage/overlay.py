"""A write overlay over a read transaction: the real apply code runs on it, the state never changes.

`OverlayTxn(base)` reads through to `base` (a StateTxn of a read transaction) and keeps every write in
memory, so an apply handler can run on "the current state at the current index" for a what-if
(`fedraft failover simulate`) without copying the environment and without any chance of reaching
the store: a write path that bypasses the overlay hits LMDB's read-only transaction and raises.
`changed(db)` lists what the run wrote.
"""

from __future__ import annotations

from collections.abc import Iterator

from fedraft.storage.state import StateTxn


class OverlayTxn(StateTxn):
    def __init__(self, base: StateTxn) -> None:
        super().__init__(base.txn, base._dbs, None)  # no process-local cache: a what-if builds its own views
        self._base = base
        self._writes: dict[bytes, dict[bytes, bytes | None]] = {}

    def _get(self, db: bytes, key: bytes) -> bytes | None:
        written = self._writes.get(db)
        if written is not None and key in written:
            return written[key]
        return self._base._get(db, key)

    def _put(self, db: bytes, key: bytes, value: bytes) -> None:
        self._writes.setdefault(db, {})[bytes(key)] = bytes(value)

    def put(self, db: bytes, key: bytes, value: bytes) -> None:
        self._put(db, key, value)

    def delete(self, db: bytes, key: bytes) -> bool:
        existed = self._get(db, key) is not None
        if existed:
            self._writes.setdefault(db, {})[bytes(key)] = None
        return existed

    def items(self, db: bytes, prefix: bytes = b"", start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        written = self._writes.get(db)
        if not written:
            yield from self._base.items(db, prefix, start)
            return
        low = max(prefix, start)
        mine = sorted((k, v) for k, v in written.items() if k >= low and k.startswith(prefix))
        i = 0
        for key, value in self._base.items(db, prefix, start):
            while i < len(mine) and mine[i][0] < key:
                new_key, over = mine[i]
                if over is not None:
                    yield new_key, over
                i += 1
            if i < len(mine) and mine[i][0] == key:
                over = mine[i][1]
                if over is not None:
                    yield key, over
                i += 1
                continue
            yield key, value
        for key, over in mine[i:]:
            if over is not None:
                yield key, over

    def count(self, db: bytes) -> int:
        return sum(1 for _ in self.items(db))

    def changed(self, db: bytes) -> dict[bytes, bytes | None]:
        """Keys of `db` this overlay wrote (None: deleted)."""
        return dict(self._writes.get(db, {}))
