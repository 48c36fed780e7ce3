"""The placement area's replicated LMDB databases (names are part of the state digest, SPEC D18).

pools: pool id -> PoolRecord; workloads: workload id -> WorkloadRecord. Values are deterministic
protobuf so every node writes the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from fedraft._proto.fedraft.v1 import placement_pb2 as ppb
from fedraft.domain.genesis import Genesis
from fedraft.domain.placement.model import Policy, Pool, Workload
from fedraft.storage import governance_schema
from fedraft.wire.placement import pool_from_pb, pool_to_pb, workload_from_pb, workload_to_pb

if TYPE_CHECKING:
    from fedraft.storage.state import StateTxn

POOLS = b"pools"
WORKLOADS = b"workloads"
DBS: tuple[bytes, ...] = (POOLS, WORKLOADS)


def seed(st: StateTxn, genesis: Genesis) -> None:
    """The voter pools exist from the start (UP, counted from the first term, SPEC D7)."""
    for pool_id in sorted({v.pool for v in genesis.voters}):
        put_pool(st, Pool(pool_id, voter=True))


def get_pool(st: StateTxn, pool_id: str) -> Pool | None:
    raw = st.get(POOLS, pool_id.encode())
    if raw is None:
        return None
    rec = ppb.PoolRecord()
    rec.ParseFromString(raw)
    return pool_from_pb(rec)


def put_pool(st: StateTxn, pool: Pool) -> None:
    st.put(POOLS, pool.id.encode(), pool_to_pb(pool).SerializeToString(deterministic=True))


def pools(st: StateTxn) -> Iterator[Pool]:
    for _, raw in st.items(POOLS):
        rec = ppb.PoolRecord()
        rec.ParseFromString(raw)
        yield pool_from_pb(rec)


def get_workload(st: StateTxn, workload_id: str) -> Workload | None:
    raw = st.get(WORKLOADS, workload_id.encode())
    if raw is None:
        return None
    rec = ppb.WorkloadRecord()
    rec.ParseFromString(raw)
    return workload_from_pb(rec)


def put_workload(st: StateTxn, workload: Workload) -> None:
    st.put(WORKLOADS, workload.id.encode(), workload_to_pb(workload).SerializeToString(deterministic=True))


def workloads(st: StateTxn) -> Iterator[Workload]:
    for _, raw in st.items(WORKLOADS):
        rec = ppb.WorkloadRecord()
        rec.ParseFromString(raw)
        yield workload_from_pb(rec)


def delete_pool(st: StateTxn, pool_id: str) -> bool:
    return st.delete(POOLS, pool_id.encode())


def policy(st: StateTxn) -> Policy:
    """The placement part of the replicated policy (SetPolicy, a critical governance command); SPEC's
    defaults until one is stored."""
    return governance_schema.policy(st).placement
