"""Fuzz the snapshot decoders (fedraft/consensus/snapshot.py, SPEC D15).

- `decode_header` (the header of a received or stored snapshot): `SnapshotHeader` or `DecodeError`.
- `read_header` (a snapshot file on disk (start-up, `deserialize`)): `SnapshotHeader` or `DecodeError`.
- `SnapshotSerializer.setTransmissionData` (the leader's snapshot chunks, over the peer link): True only for
  a complete, signed, matching snapshot; never raises.

A stream other than the genuine file never installs, and a refused stream leaves no file behind.
"""

from __future__ import annotations

import hashlib
import struct
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from fedraft.consensus.snapshot import MAGIC, SnapshotHeader, SnapshotSerializer, decode_header, read_header
from fedraft.crypto.signing import CTX_SNAPSHOT, Identity, Signer
from fedraft.errors import DecodeError
from tests.security.fuzzing import fuzz_pair, hostile, within_memory

CLUSTER = hashlib.sha256(b"fuzz cluster").digest()
LEADER = Identity.generate()
BODY = bytes(range(256)) * 12
CHUNK = 1024


def state_digest(body: bytes) -> bytes:
    """The receiver's recomputed D18 digest of a body, in this test's fake state format."""
    return hashlib.sha256(b"state:" + body).digest()


def _genuine() -> tuple[bytes, bytes]:
    header = SnapshotHeader(CLUSTER, 10, 3, state_digest(BODY), hashlib.sha256(BODY).digest(),
                            len(BODY), "node-a", (b"\x00prev", 9, 3), (b"\x01last", 10, 3))
    signed = SnapshotHeader(**{**header.__dict__, "signature": Signer(LEADER).sign(
        CTX_SNAPSHOT, CLUSTER, header.unsigned_bytes())})
    encoded = signed.encode()
    return encoded, MAGIC + struct.pack(">I", len(encoded)) + encoded + BODY


HEADER, FILE = _genuine()


def check_header(raw: bytes) -> None:
    try:
        header = within_memory(256 * 1024 + 4 * len(raw), lambda: decode_header(raw))
    except DecodeError:
        return
    assert header.encode() == raw, "an accepted header is exactly its canonical encoding"


test_fuzz_snapshot_header, test_fuzz_snapshot_header_nightly = fuzz_pair(hostile([HEADER], protobuf=False),
                                                                         check_header, ci=400)


def check_file(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "snapshot"
        path.write_bytes(raw)
        try:
            header = read_header(path)
        except DecodeError:
            return
        assert len(raw) == header.body_offset + header.body_len


test_fuzz_snapshot_file, test_fuzz_snapshot_file_nightly = fuzz_pair(hostile([FILE], protobuf=False), check_file)


class _Recording:
    def __init__(self) -> None:
        self.installed: list[int] = []

    def install(self, data_file: Path, index: int) -> None:
        self.installed.append(index)

    def body_digest(self, data_file: Path) -> bytes:
        return state_digest(data_file.read_bytes())

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a receiver does not call {name}")


def _chunks(data: bytes, size: int) -> list[tuple[bytes, bool, bool]]:
    pieces = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
    return [(p, i == 0, i == len(pieces) - 1) for i, p in enumerate(pieces)]


STREAMS = st.tuples(hostile([FILE], protobuf=False, max_random=4096), st.sampled_from([CHUNK, 700, 2 * CHUNK]),
                    st.lists(st.tuples(st.integers(0, 8), st.booleans(), st.booleans()), max_size=3))


def check_stream(case: tuple[bytes, int, list[tuple[int, bool, bool]]]) -> None:
    data, size, flag_changes = case
    chunks = _chunks(data, size)
    for i, first, last in flag_changes:  # a peer may also lie about where the stream starts and ends
        if i < len(chunks):
            chunks[i] = (chunks[i][0], first, last)
    with tempfile.TemporaryDirectory() as tmp:
        source = _Recording()
        receiver = SnapshotSerializer(Path(tmp) / "snapshot", source=source, signer=Signer(Identity.generate()),
                                      node_id="node-b", cluster_id=CLUSTER, chunk_size=CHUNK,
                                      max_snapshot_bytes=64 * 1024,
                                      verify_key_for=lambda node: LEADER.public_key if node == "node-a" else None)
        try:
            done = [receiver.setTransmissionData(chunk) for chunk in chunks]
            if any(done):
                assert source.installed and set(source.installed) == {10}
                assert (Path(tmp) / "snapshot").read_bytes() == FILE, "only the genuine snapshot installs"
            else:
                assert source.installed == []
                assert not (Path(tmp) / "snapshot").exists()
        finally:
            receiver.close()
        leftovers = [p.name for p in Path(tmp).iterdir() if p.name != "snapshot"]
        assert leftovers == [], leftovers


test_fuzz_snapshot_stream, test_fuzz_snapshot_stream_nightly = fuzz_pair(STREAMS, check_stream, nightly=2000)


def test_the_genuine_snapshot_installs() -> None:
    check_stream((FILE, CHUNK, []))
