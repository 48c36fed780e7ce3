"""Fuzz the peer-port decoders: raw frames, the Raft codec, and the signed hello.

What a peer's bytes go through, in order (fedraft/transport/links.py, codec.py):
- `PeerFrame.FromString` on every inbound frame (handshake and stream): returns a frame or raises
  protobuf's DecodeError, which closes the stream.
- `PeerLinks._on_raw`, the gate of an established stream: size, rate, parse, kind; returns whether
  the stream stays open, never raises.
- `codec.decode`: the pysyncobj message or None (None closes the stream). What it accepts must be
  a shape pysyncobj itself produces, so it re-encodes to the same message.
- `check_hello`: None only for the genuine signed hello, otherwise the reason.
"""

from __future__ import annotations

import os
from typing import Any

from google.protobuf.message import DecodeError
from hypothesis import strategies as st

from fedraft._proto.fedraft.v1.peer_pb2 import PeerFrame, PeerHello
from fedraft.crypto.signing import Signer
from fedraft.transport.codec import decode, encode
from fedraft.transport.links import LinkLimits, _Stream, check_hello, sign_hello
from tests.security.fuzzing import fuzz_pair, hostile, within_memory
from tests.transport.conftest import Federation, make_federation

VALID_MESSAGES: list[dict[str, Any]] = [
    {"type": "request_vote", "term": 3, "last_log_index": 17, "last_log_term": 2},
    {"type": "response_vote", "term": 3},
    {"type": "timeout_now", "term": 9},
    {"type": "next_node_idx", "next_node_idx": 18, "reset": False, "success": True},
    {"type": "append_entries", "term": 4, "commit_index": 10, "entries": [], "prevLogIdx": 12, "prevLogTerm": 4},
    {"type": "append_entries", "term": 4, "commit_index": 10,
     "entries": [(b"\x01", 13, 4), (b"\x00payload", 14, 4), (b"\x00" + bytes(range(40)), 15, 4)],
     "prevLogIdx": 12, "prevLogTerm": 3},
    {"type": "append_entries", "term": 2, "commit_index": 0, "entries": [], "prevLogIdx": None, "prevLogTerm": None},
    {"type": "append_entries", "term": 5, "commit_index": 7, "serialized": (b"FRSNAP01 bytes", True, False)},
    {"type": "append_entries", "term": 5, "commit_index": 7, "serialized": None},
]
FED = make_federation()
CID = FED.cluster_id
N1, N2 = FED.nodes["n1"], FED.nodes["n2"]
GENUINE_HELLO = sign_hello(Signer(N2.identity), CID, "n2", "n1", b"\x11" * 16)
GENUINE_REPLY = sign_hello(Signer(N1.identity), CID, "n1", "n2", b"\x22" * 16, echo_nonce=b"\x11" * 16)


def _frame_bytes(message: dict[str, Any]) -> bytes:
    frame = encode(message)
    assert frame is not None
    return frame.SerializeToString()


VALID_FRAMES = [_frame_bytes(m) for m in VALID_MESSAGES] + [
    PeerFrame(hello=GENUINE_HELLO).SerializeToString(), PeerFrame(hello=GENUINE_REPLY).SerializeToString()]

# A decode may hold the parsed frame and the message built from it: a few times the input, plus slack.
MEMORY_BOUND = 256 * 1024


def _limit(value: int) -> bool:
    return type(value) is int and 0 <= value < 2**63


def check_frame(raw: bytes) -> None:
    try:
        frame = within_memory(MEMORY_BOUND + 8 * len(raw), lambda: PeerFrame.FromString(raw))
    except DecodeError:
        return
    message = within_memory(MEMORY_BOUND + 8 * len(raw), lambda: decode(frame))
    if message is None:
        return
    # Accepted: exactly a message pysyncobj could have produced, which encodes back to itself.
    again = encode(message)
    assert again is not None and decode(PeerFrame.FromString(again.SerializeToString())) == message
    for key, value in message.items():
        if key in ("term", "commit_index", "last_log_index", "last_log_term", "next_node_idx"):
            assert _limit(value), (key, value)
    for command, index, term in message.get("entries", []):
        assert command[:1] in (b"\x00", b"\x01"), "only REGULAR and NO_OP commands cross the wire"
        assert _limit(index) and _limit(term) and term <= message["term"]


test_fuzz_frame, test_fuzz_frame_nightly = fuzz_pair(hostile(VALID_FRAMES, max_random=2048), check_frame, ci=400)


class _Gate:
    """A real (unstarted) PeerLinks gate with one established stream; records what it lets through."""

    def __init__(self) -> None:
        fed = Federation(ca=FED.ca, cluster_id=CID, nodes=FED.nodes, ports={n: 1 for n in FED.nodes})
        self.links = fed.links("n1", limits=LinkLimits(max_frame_bytes=4096))
        self.delivered: list[PeerFrame] = []
        self.links.on_frame = lambda peer, frame: self.delivered.append(frame)


GATE = _Gate()


def check_stream_gate(frames: list[bytes]) -> None:
    stream = _Stream("n2", GATE.links.limits)
    GATE.delivered.clear()
    for raw in frames:
        open_ = GATE.links._on_raw(stream, raw)
        assert open_ is not stream.closed
        if not open_:
            break
    for frame in GATE.delivered:
        assert frame.WhichOneof("kind") not in (None, "hello")
        assert frame.ByteSize() <= GATE.links.limits.max_frame_bytes


test_fuzz_stream_gate, test_fuzz_stream_gate_nightly = fuzz_pair(
    st.lists(hostile([*VALID_FRAMES, b"\x00" * 5000]), max_size=6), check_stream_gate)


def check_hello_bytes(raw: bytes) -> None:
    try:
        frame = PeerFrame.FromString(raw)
    except DecodeError:
        return
    if frame.WhichOneof("kind") != "hello":
        return
    hello = frame.hello
    as_dialer = check_hello(hello, cluster_id=CID, speaker=N2.voter, listener="n1", echo_nonce=b"")
    as_reply = check_hello(hello, cluster_id=CID, speaker=N1.voter, listener="n2", echo_nonce=b"\x11" * 16)
    assert as_dialer is None or isinstance(as_dialer, str)
    assert as_reply is None or isinstance(as_reply, str)
    # Only the genuine hellos pass, field for field: no mutation forges one.
    if as_dialer is None:
        assert hello == GENUINE_HELLO
    if as_reply is None:
        assert hello == GENUINE_REPLY


test_fuzz_hello, test_fuzz_hello_nightly = fuzz_pair(
    hostile([PeerFrame(hello=GENUINE_HELLO).SerializeToString(), PeerFrame(hello=GENUINE_REPLY).SerializeToString(),
             PeerFrame(hello=PeerHello(cluster_id=CID, node_id="n2", peer_node_id="n1", nonce=os.urandom(16),
                                       sig=b"\x00" * 64)).SerializeToString()]),
    check_hello_bytes)


def test_a_huge_claimed_length_is_refused_without_allocating_it() -> None:
    # A length-delimited field that claims 2 GiB: protobuf must refuse it from the buffer it has.
    raw = b"\x22" + b"\xff\xff\xff\xff\x07" + b"\x00" * 16
    try:
        within_memory(MEMORY_BOUND, lambda: PeerFrame.FromString(raw))
    except DecodeError:
        pass
    else:
        raise AssertionError("a truncated 2 GiB field parsed")
