"""Signed checkpoints at apply (SPEC §4, D18): record one every policy.checkpoint_interval indexes.

After applying entry `index`, if the log crossed a multiple of the interval since the previous
applied fedraft entry (pysyncobj's own no-op entries never reach apply, so the checkpoint sits at the
first fedraft entry at or past the multiple), the applier records the chain head and the D18 digest
of the state as of that entry in the replicated `checkpoints` database — before the record itself is
written, so the digest covers everything up to and including entry `index`. Every node computes it
at the same index from the same state, so the record is part of the deterministic state, and a
Cosign can be checked at apply against it.

Cost: the digest is a full scan of every replicated database (the archive of signed entries
included), on the tick thread, once per checkpoint; see docs/reliability.md for figures.
"""

from __future__ import annotations

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.storage import checkpoint_schema, governance_schema
from fedraft.storage.state import StateTxn


def record_if_due(st: StateTxn, index: int, prev_applied: int) -> pb.CheckpointRecord | None:
    """Called by the applier after entry `index` is archived, chained and marked applied."""
    interval = governance_schema.policy(st).checkpoint_interval
    if index // interval == prev_applied // interval:
        return None
    record = pb.CheckpointRecord(index=index, chain_head=st.chain_head, state_digest=st.digest())
    checkpoint_schema.put(st, record)
    return record
