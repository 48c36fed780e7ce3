"""Memories in the replicated LMDB state (names are part of the state digest, SPEC D18; decision 0009).

memories:      memory key -> MemoryRecord (metadata only: class, author, pools holding a box).
memory_boxes:  memory key + b"\\0" + pool -> SealedValue (that pool's box).
Keeping the boxes apart lets List "memories" serve the metadata as stored, without ciphertext.

A pool's box key (see fedraft.crypto.sealing) is read here: a voter pool's node key from genesis, a
member pool's agent key from the principals (the current `node` principal named POOL-agent, which
RegisterPool creates and RotateKey keeps the name of; the first added if an admin added another).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from fedraft._proto.fedraft.v1 import memory_pb2 as mpb
from fedraft.crypto.signing import key_id_of
from fedraft.domain.genesis import Genesis
from fedraft.domain.governance.memories import PoolKey, Recipients, recipients
from fedraft.domain.placement.model import Trust
from fedraft.storage import governance_schema, placement_schema

if TYPE_CHECKING:
    from fedraft.storage.state import StateTxn

MEMORIES = b"memories"
MEMORY_BOXES = b"memory_boxes"
DBS: tuple[bytes, ...] = (MEMORIES, MEMORY_BOXES)


def get(st: StateTxn, key: str) -> mpb.MemoryRecord | None:
    raw = st.get(MEMORIES, key.encode())
    if raw is None:
        return None
    rec = mpb.MemoryRecord()
    rec.ParseFromString(raw)
    return rec


def records(st: StateTxn) -> Iterator[mpb.MemoryRecord]:
    for _, raw in st.items(MEMORIES):
        rec = mpb.MemoryRecord()
        rec.ParseFromString(raw)
        yield rec


def _box_key(key: str, pool: str) -> bytes:
    return key.encode() + b"\0" + pool.encode()


def box(st: StateTxn, key: str, pool: str) -> mpb.SealedValue | None:
    raw = st.get(MEMORY_BOXES, _box_key(key, pool))
    if raw is None:
        return None
    sealed = mpb.SealedValue()
    sealed.ParseFromString(raw)
    return sealed


def boxes(st: StateTxn, key: str) -> list[mpb.SealedValue]:
    out = []
    for _, raw in st.items(MEMORY_BOXES, key.encode() + b"\0"):
        sealed = mpb.SealedValue()
        sealed.ParseFromString(raw)
        out.append(sealed)
    return out


def put(st: StateTxn, record: mpb.MemoryRecord, sealed: list[mpb.SealedValue]) -> None:
    """Store the record and exactly these boxes (a replaced memory's other boxes are dropped)."""
    for old in boxes(st, record.key):
        st.delete(MEMORY_BOXES, _box_key(record.key, old.pool))
    for s in sealed:
        st.put(MEMORY_BOXES, _box_key(record.key, s.pool), s.SerializeToString(deterministic=True))
    st.put(MEMORIES, record.key.encode(), record.SerializeToString(deterministic=True))


def delete(st: StateTxn, key: str) -> bool:
    for old in boxes(st, key):
        st.delete(MEMORY_BOXES, _box_key(key, old.pool))
    return st.delete(MEMORIES, key.encode())


def drop_pool(st: StateTxn, pool: str) -> int:
    """A retired pool's boxes go (its keys are revoked); memories of that pool go too. Returns the
    number of memories changed or deleted."""
    changed = 0
    for rec in list(records(st)):
        if rec.pool == pool:
            delete(st, rec.key)
            changed += 1
        elif pool in rec.pools:
            i = list(rec.pools).index(pool)
            st.delete(MEMORY_BOXES, _box_key(rec.key, pool))
            pools, key_ids = list(rec.pools), list(rec.key_ids)
            del pools[i], key_ids[i]
            del rec.pools[:], rec.key_ids[:]
            rec.pools.extend(pools)
            rec.key_ids.extend(key_ids)
            st.put(MEMORIES, rec.key.encode(), rec.SerializeToString(deterministic=True))
            changed += 1
    return changed


# ---- pool keys and recipients ----

def pool_keys(st: StateTxn, genesis: Genesis) -> dict[str, PoolKey]:
    """Every registered pool's box key (pools without one are left out)."""
    registered = {p.id for p in placement_schema.pools(st)}
    keys = {v.pool: PoolKey(v.pool, key_id_of(v.public_key), v.public_key) for v in genesis.voters
            if v.pool in registered}
    agents: dict[str, tuple[int, bytes, bytes]] = {}
    for p in governance_schema.principals(st):
        if (p.role == "node" and not p.revoked_index and p.pool in registered and p.pool not in keys
                and p.name == f"{p.pool}-agent"):
            candidate = (p.added_index, bytes(p.key_id), bytes(p.public_key))
            if p.pool not in agents or candidate < agents[p.pool]:
                agents[p.pool] = candidate
    for pool, (_, key_id, public_key) in agents.items():
        keys[pool] = PoolKey(pool, key_id, public_key)
    return keys


def recipients_of(st: StateTxn, genesis: Genesis, pool: str, level: Trust) -> Recipients:
    """The pools a value from `pool` of a class at `level` must be sealed to, at this state."""
    registered = frozenset(p.id for p in placement_schema.pools(st))
    return recipients(pool, level, list(governance_schema.pairings(st)), pool_keys(st, genesis), registered)
