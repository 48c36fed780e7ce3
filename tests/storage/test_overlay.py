"""OverlayTxn: reads see the overlay's writes and deletes in key order; nothing reaches the store."""

from __future__ import annotations

from pathlib import Path

from fedraft.storage.overlay import OverlayTxn
from fedraft.storage.state import StateStore
from tests.helpers import make_federation

DB = b"workloads"  # empty at genesis


def test_writes_and_deletes_are_seen_in_order_and_never_stored(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s", make_federation().genesis, map_size=16 << 20)
    st = store.writer()
    for key in (b"b", b"d", b"f"):
        st.put(DB, key, b"base-" + key)
    store.commit()
    digest = store.digest()
    with store.read() as base:
        kept = dict(base.items(DB))
        over = OverlayTxn(base)
        over.put(DB, b"a", b"new-a")
        over.put(DB, b"d", b"new-d")
        assert over.delete(DB, b"f") and not over.delete(DB, b"zz")
        over.put(DB, b"g", b"new-g")
        assert list(over.items(DB)) == [(b"a", b"new-a"), (b"b", b"base-b"), (b"d", b"new-d"), (b"g", b"new-g")]
        assert list(over.items(DB, start=b"c")) == [(b"d", b"new-d"), (b"g", b"new-g")]
        assert list(over.items(DB, prefix=b"f")) == []
        assert over.get(DB, b"f") is None and over.get(DB, b"b") == b"base-b" and over.count(DB) == 4
        assert over.changed(DB) == {b"a": b"new-a", b"d": b"new-d", b"f": None, b"g": b"new-g"}
        assert dict(base.items(DB)) == kept
    assert store.digest() == digest
    store.close()
