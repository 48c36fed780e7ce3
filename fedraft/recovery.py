"""`fedraft recover` (SPEC §6): re-found a federation that lost two voter pools for good, offline.

Below quorum nothing commits, so the survivors cannot vote the lost voters out. Recovery writes a new
genesis instead: new voters, the admins the surviving state knows for their pools, and a
`recovered_from` record naming the old cluster id and the surviving state's checkpoint (last applied
index, chain head, state digest), signed by the old federation's break-glass key. Anyone holding the
old genesis can check that the new federation descends from the old one at that point, and an
exported old log verifies up to that chain head.

The signature: Ed25519 with context `fedraft/v1/breakglass` and the OLD cluster id (SPEC D1) over the
new genesis file's canonical bytes (fedraft.domain.genesis.encode_genesis) without the
`recovered_from.signature` field. Those bytes are far longer than the 32-byte pending ids the same
key signs in degraded mode, so one can never pass for the other.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.crypto.signing import CTX_BREAKGLASS, Identity, verify
from fedraft.domain.genesis import FORMAT, Admin, Genesis, GenesisError, encode_genesis, parse_genesis
from fedraft.errors import ConfigError, OperatorError, SignatureError
from fedraft.storage.state import M_SEEDED, StateTxn, replicated_dbs


@dataclass(frozen=True)
class Checkpoint:
    cluster_id: bytes
    index: int
    chain_head: bytes
    state_digest: bytes


@dataclass(frozen=True)
class NewVoter:
    node_id: str
    pool: str
    public_key: bytes
    tls_spki_sha256: bytes


def read_checkpoint(state_dir: Path, genesis: Genesis) -> tuple[Checkpoint, list[Admin]]:
    """The last applied index, chain head and state digest of a node's state directory (read-only),
    and the current admins it knows (not revoked)."""
    if not (Path(state_dir) / "data.mdb").is_file():
        raise ConfigError(f"{state_dir}: no state database here (expected a node's data/state directory)")
    try:
        env = lmdb.open(str(state_dir), readonly=True, lock=False, max_dbs=64)
    except lmdb.Error as exc:
        raise OperatorError(f"cannot open state {state_dir}: {exc}") from None
    try:
        with env.begin() as txn:
            st = StateTxn(txn, replicated_dbs(env, txn, state_dir))
            if st.meta_bytes(M_SEEDED) != genesis.cluster_id:
                raise ConfigError(f"{state_dir} holds the state of another federation than this genesis")
            checkpoint = Checkpoint(genesis.cluster_id, st.applied_index, st.chain_head, st.digest())
            admins = []
            for _, raw in st.items(b"principals"):
                p = pb.Principal()
                p.ParseFromString(raw)
                if p.role == "admin" and not p.revoked_index:
                    admins.append(Admin(p.name, p.pool, bytes(p.public_key)))
    finally:
        env.close()
    return checkpoint, admins


def recovery_genesis(old: Genesis, checkpoint: Checkpoint, voters: list[NewVoter], admins: list[Admin],
                     break_glass: Identity, *, new_break_glass_key: bytes | None = None,
                     federation: str | None = None) -> bytes:
    """The new genesis file's bytes, signed by the old federation's break-glass key."""
    if break_glass.public_key != old.break_glass_public_key:
        raise ConfigError("that is not the old federation's break-glass key (its genesis pins another)")
    if checkpoint.cluster_id != old.cluster_id:
        raise ConfigError("the checkpoint belongs to another federation than the old genesis")
    voter_pools = {v.pool for v in voters}
    kept = [a for a in admins if a.pool in voter_pools]
    doc: dict[str, Any] = {
        "format": FORMAT,
        "federation": federation or old.federation,
        "nonce": os.urandom(16).hex(),
        "created_at_ms": int(time.time() * 1000),
        "voters": [{"node_id": v.node_id, "pool": v.pool, "public_key": v.public_key.hex(),
                    "tls_spki_sha256": v.tls_spki_sha256.hex()} for v in voters],
        "admins": [{"name": a.name, "pool": a.pool, "public_key": a.public_key.hex()}
                   for a in sorted(kept, key=lambda a: (a.pool, a.name, a.public_key))],
        "break_glass": {"public_key": (new_break_glass_key or old.break_glass_public_key).hex()},
        "recovered_from": {"federation": old.federation, "cluster_id": old.cluster_id.hex(),
                           "index": checkpoint.index, "chain_head": checkpoint.chain_head.hex(),
                           "state_digest": checkpoint.state_digest.hex()},
    }
    unsigned = encode_genesis(doc)
    try:
        parse_genesis(unsigned)  # refuse here what no node would start with
    except ValueError as exc:
        raise ConfigError(f"the new genesis would not be valid: {exc}") from None
    doc["recovered_from"]["signature"] = break_glass.sign(CTX_BREAKGLASS, old.cluster_id, unsigned).hex()
    return encode_genesis(doc)


def verify_recovery(new_raw: bytes, old: Genesis) -> Checkpoint:
    """Check that a recovered genesis descends from `old`; the checkpoint it names.

    Raises ConfigError if `new_raw` is no valid genesis, SignatureError if it does not descend from `old`.
    """
    try:
        parse_genesis(new_raw)
    except GenesisError as exc:
        raise ConfigError(f"not a valid genesis: {exc}") from None
    doc = json.loads(new_raw)
    record = doc.get("recovered_from")
    if not isinstance(record, dict):
        raise SignatureError("this genesis names no federation it was recovered from")
    try:
        signature = bytes.fromhex(record.pop("signature"))
        index = record["index"]
        # JSON numbers arrive as floats too (1e400 is infinity): only a plain integer names an index.
        if type(index) is not int or index < 0:
            raise ValueError(f"index {index!r} is not a non-negative integer")
        checkpoint = Checkpoint(bytes.fromhex(record["cluster_id"]), index,
                                bytes.fromhex(record["chain_head"]), bytes.fromhex(record["state_digest"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise SignatureError(f"malformed recovered_from record: {exc}") from None
    if checkpoint.cluster_id != old.cluster_id:
        raise SignatureError("this genesis was recovered from another federation")
    verify(old.break_glass_public_key, CTX_BREAKGLASS, old.cluster_id, encode_genesis(doc), signature)
    return checkpoint
