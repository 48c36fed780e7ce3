"""Signed checkpoints of the log (SPEC §4): what a node signs, how it is checked, its request ids.

A checkpoint names (cluster_id, index, chain head, state digest). Each node that applied entry
`index` itself signs it with context `fedraft/v1/cosign` (SPEC D1) over a note body in the style of
C2SP signed notes: short text lines, so that an operator can read what was signed.

    fedraft checkpoint v1
    <cluster id, hex>
    <index, decimal>
    <chain head after entry index, hex>
    <D18 state digest as of entry index, hex>

(the D1 framing prefixes the context and the cluster id again; the note repeats the cluster id so
that it stands on its own). A checkpoint with a majority of the genesis voters' signatures is the
federation's signed tree head.
"""

from __future__ import annotations

import hashlib

from fedraft.crypto.signing import CTX_COSIGN, Signer, verify

NOTE_ORIGIN = "fedraft checkpoint v1"
HASH_LEN = 32


def note_body(cluster_id: bytes, index: int, chain_head: bytes, state_digest: bytes) -> bytes:
    return (f"{NOTE_ORIGIN}\n{cluster_id.hex()}\n{index}\n{chain_head.hex()}\n{state_digest.hex()}\n").encode()


def sign_checkpoint(signer: Signer, cluster_id: bytes, index: int, chain_head: bytes, state_digest: bytes) -> bytes:
    return signer.sign(CTX_COSIGN, cluster_id, note_body(cluster_id, index, chain_head, state_digest))


def verify_cosignature(public_key: bytes, cluster_id: bytes, index: int, chain_head: bytes, state_digest: bytes,
                       signature: bytes) -> None:
    """Raise SignatureError unless `signature` is `public_key`'s cosignature of the checkpoint."""
    verify(public_key, CTX_COSIGN, cluster_id, note_body(cluster_id, index, chain_head, state_digest), signature)


def cosign_request_id(node_id: str, index: int) -> bytes:
    """SPEC D13: sha256(node_id || "cosign" || index)[:16], so a restart cannot cosign twice."""
    return hashlib.sha256(node_id.encode() + b"cosign" + index.to_bytes(8, "big")).digest()[:16]


def majority(voters: int) -> int:
    return voters // 2 + 1
