"""Writing the log export (fedraft.crypto.logfile format) from a node's replicated state (SPEC §4).

Everything comes from one read transaction, so the export is one consistent applied index: the
genesis, the principals table, every archived signed entry, the entries apply rejected as a whole with
their slot terms, every checkpoint with its cosignatures, and the node's chain head.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lmdb

from fedraft.crypto.logfile import (
    CHECKPOINT,
    ENTRY,
    GENESIS,
    HEAD,
    PRINCIPAL,
    REJECTED,
    LogWriter,
    entry_payload,
    head_payload,
    rejected_payload,
)
from fedraft.errors import ConfigError, OperatorError
from fedraft.storage import checkpoint_schema, log_schema
from fedraft.storage.state import M_SEEDED, StateTxn, replicated_dbs

CHUNK_BYTES = 1 << 20


def export_records(st: StateTxn, genesis_raw: bytes) -> Iterator[bytes]:
    """The export as a sequence of byte strings (header, then one per record)."""
    w = LogWriter()
    yield w.header()
    yield w.record(GENESIS, genesis_raw)
    for _, raw in st.items(b"principals"):
        yield w.record(PRINCIPAL, raw)
    for index, raw in st.archive_iter():
        yield w.record(ENTRY, entry_payload(index, raw))
    for index, slot_term, reason in log_schema.rejected(st):
        yield w.record(REJECTED, rejected_payload(index, slot_term, reason))
    for record in checkpoint_schema.records(st):
        yield w.record(CHECKPOINT, record.SerializeToString(deterministic=True))
    yield w.record(HEAD, head_payload(st.applied_index, st.chain_head))
    yield w.end()


def chunked(parts: Iterator[bytes], size: int = CHUNK_BYTES) -> Iterator[bytes]:
    buf = bytearray()
    for part in parts:
        buf += part
        if len(buf) >= size:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)


@contextmanager
def open_state(state_dir: Path, cluster_id: bytes) -> Iterator[StateTxn]:
    """A read transaction on a node's state directory, whether or not the node is running (LMDB's
    lock file registers this reader, so the node never reuses pages it reads)."""
    if not (Path(state_dir) / "data.mdb").is_file():
        raise ConfigError(f"{state_dir}: no state database here (expected a node's data/state directory)")
    try:
        env = lmdb.open(str(state_dir), readonly=True, max_dbs=64)
    except lmdb.Error as exc:
        raise OperatorError(f"cannot open state {state_dir}: {exc}",
                            hint="run it as the user the node runs as (it needs the lock file)") from None
    try:
        with env.begin() as txn:
            st = StateTxn(txn, replicated_dbs(env, txn, state_dir))
            if st.meta_bytes(M_SEEDED) != cluster_id:
                raise ConfigError(f"{state_dir} holds the state of another federation than this genesis")
            yield st
    finally:
        env.close()
