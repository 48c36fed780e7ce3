"""The hash chain over fedraft entries: head[i] = sha256(head[prev] || signed_entry_bytes[i]) (SPEC §4).

pysyncobj's own no-op entries are not part of the chain; the chain is keyed by Raft index.
"""

from __future__ import annotations

import hashlib

GENESIS_HEAD = b"\x00" * 32


def next_head(prev_head: bytes, signed_entry_bytes: bytes) -> bytes:
    return hashlib.sha256(prev_head + signed_entry_bytes).digest()


def chain_heads(entries: list[bytes], start: bytes = GENESIS_HEAD) -> list[bytes]:
    """Heads after each of `entries`, in order."""
    heads: list[bytes] = []
    head = start
    for entry in entries:
        head = next_head(head, entry)
        heads.append(head)
    return heads
