"""The governance area's replicated LMDB databases (names are part of the state digest, SPEC D18).

pairings: "pool_a\\0pool_b" (sorted pair) -> PairingRecord.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from fedraft._proto.fedraft.v1 import governance_pb2 as gpb
from fedraft.domain.genesis import Genesis
from fedraft.domain.governance.pairing import Pairing, pair_key
from fedraft.wire.governance import pairing_from_pb, pairing_to_pb

if TYPE_CHECKING:
    from fedraft.storage.state import StateTxn

PAIRINGS = b"pairings"
DBS: tuple[bytes, ...] = (PAIRINGS,)


def seed(_st: StateTxn, _genesis: Genesis) -> None:
    """Zero default trust: no pairing exists at founding."""


def _key(x: str, y: str) -> bytes:
    a, b = pair_key(x, y)
    return a.encode() + b"\0" + b.encode()


def get_pairing(st: StateTxn, x: str, y: str) -> Pairing | None:
    raw = st.get(PAIRINGS, _key(x, y))
    if raw is None:
        return None
    rec = gpb.PairingRecord()
    rec.ParseFromString(raw)
    return pairing_from_pb(rec)


def put_pairing(st: StateTxn, p: Pairing) -> None:
    st.put(PAIRINGS, _key(p.pool_a, p.pool_b), pairing_to_pb(p).SerializeToString(deterministic=True))


def pairings(st: StateTxn) -> Iterator[Pairing]:
    for _, raw in st.items(PAIRINGS):
        rec = gpb.PairingRecord()
        rec.ParseFromString(raw)
        yield pairing_from_pb(rec)
