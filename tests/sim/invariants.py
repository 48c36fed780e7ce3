"""The invariants checked after every simulation step (SPEC §9).

- at most one leader per term, over the whole run;
- equal state digest at equal applied index, across nodes and across time (a node's applied index
  never goes back);
- no acknowledged write lost: every result a client received names (index, ordinal); every node
  that has applied that index holds that very envelope there in its archive of applied entries;
- no GPU double-booked: in every node's state, no GPU is held by two workloads.
Plus what the run itself must not see: an ERROR or CRITICAL log (pysyncobj's "truncating already-applied
log entries", the patch's refused conflict), a halted applier, a frame the codec refused.
"""

from __future__ import annotations

import logging
from collections import Counter

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.storage import placement_schema
from fedraft.storage.state import StateStore, StateTxn
from tests.sim.workload import Op


class SimViolation(AssertionError):
    pass


class ErrorLogs(logging.Handler):
    """Collects ERROR and CRITICAL records from every logger while a simulation runs: in a node
    they mean a bug (the transport logs an exception pysyncobj raised on a message and goes on)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(f"{record.levelname} {record.name}: {record.getMessage()}")


def _envelope_at(st: StateTxn, index: int, ordinal: int) -> tuple[bytes, bytes] | None:
    raw = st.archive_get(index)
    if raw is None:
        return None
    entry = pb.LogEntry.FromString(pb.Signed.FromString(raw).body)
    if ordinal >= len(entry.envelopes):
        return None
    signed = entry.envelopes[ordinal]
    return bytes(signed.key_id), bytes(pb.Envelope.FromString(signed.body).request_id)


def double_booked(st: StateTxn) -> list[str]:
    held = Counter(g for w in placement_schema.workloads(st)
                   if w.phase.holds_resources and w.placement is not None for g in w.placement.gpus)
    return sorted(g for g, n in held.items() if n > 1)


class Invariants:
    def __init__(self) -> None:
        self.leaders: dict[int, str] = {}
        self.digests: dict[int, tuple[bytes, str]] = {}
        self.applied: dict[str, int] = {}
        self._progress: dict[str, tuple[int, ...]] = {}
        self.checks = 0

    def leader(self, node_id: str, term: int) -> None:
        first = self.leaders.setdefault(term, node_id)
        if first != node_id:
            raise SimViolation(f"two leaders in term {term}: {first} and {node_id}")

    def state(self, node_id: str, store: StateStore, acks: list[Op], progress: tuple[int, ...]) -> None:
        """Check one node's state. `progress` (its Raft applied index, the acknowledgements so far)
        unchanged since the last look means nothing to check: only apply changes the state."""
        if self._progress.get(node_id) == progress:
            return
        self._progress[node_id] = progress
        with store.read() as st:
            applied = st.applied_index
            before = self.applied.get(node_id, 0)
            if applied < before:
                raise SimViolation(f"{node_id}'s applied index went back from {before} to {applied}")
            if applied != before or node_id not in self.applied:
                self.applied[node_id] = applied
                self.checks += 1
                digest = st.digest()
                seen = self.digests.get(applied)
                if seen is None:
                    self.digests[applied] = (digest, node_id)
                    # Equal digests at equal index mean equal states: one look per index suffices.
                    booked = double_booked(st)
                    if booked:
                        raise SimViolation(f"{node_id} at index {applied}: GPUs held twice: {booked}")
                elif seen[0] != digest:
                    raise SimViolation(f"state digests differ at applied index {applied}: {seen[1]} "
                                       f"{seen[0].hex()[:16]} vs {node_id} {digest.hex()[:16]}")
            for op in acks:
                if node_id in op.verified_on:
                    continue
                assert op.result is not None
                if op.result.index > applied:
                    continue
                found = _envelope_at(st, op.result.index, op.result.ordinal)
                if found != op.key:
                    raise SimViolation(f"acknowledged {op.name!r} (index {op.result.index}, ordinal "
                                       f"{op.result.ordinal}, acked at step {op.acked_at_step}) is not in "
                                       f"{node_id}'s applied log, which has applied up to {applied}")
                op.verified_on.add(node_id)
