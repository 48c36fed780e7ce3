"""The catalog area's replicated LMDB database (its name is part of the state digest, SPEC D18).

catalog: model name -> CatalogRecord (master, versions with digests, satellite replicas), deterministic
protobuf so every node writes the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from fedraft._proto.fedraft.v1 import catalog_pb2 as cpb
from fedraft.domain.catalog.model import CatalogEntry
from fedraft.wire.catalog import entry_from_pb, entry_to_pb

if TYPE_CHECKING:
    from fedraft.storage.state import StateTxn

CATALOG = b"catalog"
DBS: tuple[bytes, ...] = (CATALOG,)


def _decode(raw: bytes) -> CatalogEntry:
    rec = cpb.CatalogRecord()
    rec.ParseFromString(raw)
    return entry_from_pb(rec)


def get_entry(st: StateTxn, name: str) -> CatalogEntry | None:
    raw = st.get(CATALOG, name.encode())
    return _decode(raw) if raw is not None else None


def put_entry(st: StateTxn, entry: CatalogEntry) -> None:
    st.put(CATALOG, entry.name.encode(), entry_to_pb(entry).SerializeToString(deterministic=True))


def entries(st: StateTxn) -> Iterator[CatalogEntry]:
    for _, raw in st.items(CATALOG):
        yield _decode(raw)


def replica_pairs(st: StateTxn) -> list[tuple[str, str]]:
    """(model name, pool) for every pool holding a model's latest version, the master included: what the
    scheduler's data-locality score reads."""
    return [(e.name, pool) for e in entries(st) for pool in e.holders()]
