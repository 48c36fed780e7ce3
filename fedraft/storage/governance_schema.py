"""The governance area's replicated LMDB databases (names are part of the state digest, SPEC D18).

pairings:       "pool_a\\0pool_b" (sorted pair) -> PairingRecord.
pending_ops:    hex pending id -> PendingRecord (every critical operation, open or closed).
pending_expiry: u64 expires_ms + pending id -> b"" for the open ones only (the earliest is a deadline).
policy:         b"current" -> PolicyRecord; absent until the first SetPolicy (defaults hold).
Principals live in the core `principals` database (key id -> Principal); helpers for it are here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft._proto.fedraft.v1 import governance_pb2 as gpb
from fedraft.domain.genesis import Genesis
from fedraft.domain.governance.approvals import PendingOp, Status
from fedraft.domain.governance.pairing import Pairing, pair_key
from fedraft.domain.governance.policy import GovernancePolicy
from fedraft.wire.governance import (
    pairing_from_pb,
    pairing_to_pb,
    pending_from_pb,
    pending_to_pb,
    policy_from_pb,
    policy_to_pb,
)

if TYPE_CHECKING:
    from fedraft.storage.state import StateTxn

PAIRINGS = b"pairings"
PENDING = b"pending_ops"
PENDING_EXPIRY = b"pending_expiry"
POLICY = b"policy"
PRINCIPALS = b"principals"  # a core database (state.CORE_DBS)
DBS: tuple[bytes, ...] = (PAIRINGS, PENDING, PENDING_EXPIRY, POLICY)

_POLICY_KEY = b"current"


def seed(_st: StateTxn, _genesis: Genesis) -> None:
    """Zero default trust: no pairing exists at founding; no policy record: the defaults hold."""


# ---- pairings ----

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


def delete_pairing(st: StateTxn, x: str, y: str) -> bool:
    return st.delete(PAIRINGS, _key(x, y))


def pairings(st: StateTxn) -> Iterator[Pairing]:
    for _, raw in st.items(PAIRINGS):
        rec = gpb.PairingRecord()
        rec.ParseFromString(raw)
        yield pairing_from_pb(rec)


# ---- pending critical operations ----

def _expiry_key(op: PendingOp) -> bytes:
    return op.expires_ms.to_bytes(8, "big") + op.pending_id


def get_pending(st: StateTxn, pending_id: bytes) -> PendingOp | None:
    raw = st.get(PENDING, pending_id.hex().encode())
    if raw is None:
        return None
    rec = gpb.PendingRecord()
    rec.ParseFromString(raw)
    return pending_from_pb(rec)


def put_pending(st: StateTxn, op: PendingOp) -> None:
    """Store the operation; it stays in the expiry index only while it is open."""
    st.put(PENDING, op.pending_id.hex().encode(), pending_to_pb(op).SerializeToString(deterministic=True))
    if op.status is Status.PENDING:
        st.put(PENDING_EXPIRY, _expiry_key(op), b"")
    else:
        st.delete(PENDING_EXPIRY, _expiry_key(op))


def due_pending(st: StateTxn, now_ms: int) -> list[bytes]:
    """Ids of open operations whose expiry is at or before `now_ms`, earliest first."""
    due = []
    for key, _ in st.items(PENDING_EXPIRY):
        if int.from_bytes(key[:8], "big") > now_ms:
            break
        due.append(key[8:])
    return due


def earliest_expiry(st: StateTxn) -> int | None:
    for key, _ in st.items(PENDING_EXPIRY):
        return int.from_bytes(key[:8], "big")
    return None


# ---- policy ----

def policy(st: StateTxn) -> GovernancePolicy:
    raw = st.get(POLICY, _POLICY_KEY)
    if raw is None:
        return GovernancePolicy()
    rec = gpb.PolicyRecord()
    rec.ParseFromString(raw)
    return policy_from_pb(rec)


def put_policy(st: StateTxn, value: GovernancePolicy) -> None:
    st.put(POLICY, _POLICY_KEY, policy_to_pb(value).SerializeToString(deterministic=True))


# ---- principals ----

def principals(st: StateTxn) -> Iterator[pb.Principal]:
    for _, raw in st.items(PRINCIPALS):
        p = pb.Principal()
        p.ParseFromString(raw)
        yield p


def admins(st: StateTxn) -> list[tuple[bytes, str]]:
    """(key id, pool) of every admin key that is not revoked, in key id order."""
    return [(bytes(p.key_id), p.pool) for p in principals(st) if p.role == "admin" and not p.revoked_index]
