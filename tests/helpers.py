"""Shared test helpers: an in-memory genesis with its private keys, and entry building."""

from __future__ import annotations

import os
from dataclasses import dataclass

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.crypto.signing import CTX_ENTRY, Identity, Signer
from fedraft.domain.genesis import FORMAT, Genesis, encode_genesis, parse_genesis

NODE_IDS = ("hq", "gpu-dc", "cpu-branch")


@dataclass
class Fed:
    genesis: Genesis
    nodes: dict[str, Identity]
    admins: dict[str, Identity]
    break_glass: Identity

    @property
    def cluster_id(self) -> bytes:
        return self.genesis.cluster_id


def make_federation(node_ids: tuple[str, ...] = NODE_IDS) -> Fed:
    nodes = {n: Identity.generate() for n in node_ids}
    admins = {n: Identity.generate() for n in node_ids}
    bg = Identity.generate()
    doc = {
        "format": FORMAT,
        "federation": "test",
        "nonce": os.urandom(16).hex(),
        "created_at_ms": 1,
        "voters": [{"node_id": n, "pool": n, "public_key": nodes[n].public_key.hex(),
                    "tls_spki_sha256": os.urandom(32).hex()} for n in node_ids],
        "admins": [{"name": f"{n}-admin", "pool": n, "public_key": admins[n].public_key.hex()} for n in node_ids],
        "break_glass": {"public_key": bg.public_key.hex()},
    }
    return Fed(parse_genesis(encode_genesis(doc)), nodes, admins, bg)


def sign_entry(fed: Fed, node_id: str, term: int, envelopes: list[pb.Signed], leader_time_ms: int,
               *, apply_version: int = 1) -> bytes:
    entry = pb.LogEntry(term=term, leader_id=node_id, leader_time_ms=leader_time_ms, envelopes=envelopes,
                        apply_version=apply_version)
    body = entry.SerializeToString(deterministic=True)
    signer = Signer(fed.nodes[node_id])
    return pb.Signed(body=body, sig=signer.sign(CTX_ENTRY, fed.cluster_id, body),
                     key_id=signer.key_id).SerializeToString(deterministic=True)
