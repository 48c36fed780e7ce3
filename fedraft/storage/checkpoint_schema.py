"""Signed checkpoints in the replicated state (SPEC §4; part of the D18 digest).

checkpoints: u64 index -> CheckpointRecord (chain head and state digest as of that index, the nodes'
cosignatures in the order they were applied, the log index at which a majority was reached).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from fedraft._proto.fedraft.v1 import entries_pb2 as pb

if TYPE_CHECKING:
    from fedraft.storage.state import StateTxn

CHECKPOINTS = b"checkpoints"
DBS: tuple[bytes, ...] = (CHECKPOINTS,)


def _key(index: int) -> bytes:
    return index.to_bytes(8, "big")


def get(st: StateTxn, index: int) -> pb.CheckpointRecord | None:
    raw = st.get(CHECKPOINTS, _key(index))
    if raw is None:
        return None
    return pb.CheckpointRecord.FromString(raw)


def put(st: StateTxn, record: pb.CheckpointRecord) -> None:
    st.put(CHECKPOINTS, _key(record.index), record.SerializeToString(deterministic=True))


def records(st: StateTxn, start: int = 0) -> Iterator[pb.CheckpointRecord]:
    """Checkpoints from index `start` on, in index order."""
    for _, raw in st.items(CHECKPOINTS, start=_key(start)):
        yield pb.CheckpointRecord.FromString(raw)
