"""The strict Raft codec: exact round trips, refusal of every shape pysyncobj would not produce."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from fedraft._proto.fedraft.v1.peer_pb2 import (
    AppendEntries,
    PeerFrame,
    PeerHello,
    RequestVote,
    SnapshotChunk,
    WireEntry,
)
from fedraft.transport.codec import CodecError, decode, encode

BIG = 2**63 - 1

ROUND_TRIPS: list[dict[str, Any]] = [
    {"type": "request_vote", "term": 3, "last_log_index": 17, "last_log_term": 2},
    {"type": "request_vote", "term": BIG, "last_log_index": 0, "last_log_term": 0},
    {"type": "response_vote", "term": 3},
    {"type": "timeout_now", "term": 9},
    {"type": "next_node_idx", "next_node_idx": 18, "reset": False, "success": True},
    {"type": "next_node_idx", "next_node_idx": 1, "reset": True, "success": False},
    {"type": "append_entries", "term": 4, "commit_index": 10, "entries": [],
     "prevLogIdx": 12, "prevLogTerm": 4},
    {"type": "append_entries", "term": 4, "commit_index": 10,
     "entries": [(b"\x01", 13, 4), (b"\x00payload", 14, 4), (b"\x00" + bytes(range(256)), 15, 4)],
     "prevLogIdx": 12, "prevLogTerm": 3},
    {"type": "append_entries", "term": 2, "commit_index": 0, "entries": [], "prevLogIdx": None, "prevLogTerm": None},
    {"type": "append_entries", "term": 5, "commit_index": 7, "serialized": None},
    {"type": "append_entries", "term": 5, "commit_index": 7, "serialized": (b"snapshot bytes", True, False)},
    {"type": "append_entries", "term": 5, "commit_index": 7, "serialized": (b"", False, True)},
]


@pytest.mark.parametrize("message", ROUND_TRIPS, ids=lambda m: m["type"])
def test_round_trip_is_exact(message: dict[str, Any]) -> None:
    frame = encode(message)
    assert frame is not None
    wire = PeerFrame.FromString(frame.SerializeToString())
    decoded = decode(wire)
    assert decoded == message
    assert decoded is not None
    for key, value in message.items():
        assert type(decoded[key]) is type(value), key
    if "entries" in message:
        assert all(type(e) is tuple and [type(x) for x in e] == [bytes, int, int] for e in decoded["entries"])


def test_serialized_false_is_sent_as_none() -> None:
    frame = encode({"type": "append_entries", "term": 1, "commit_index": 0, "serialized": False})
    assert frame is not None
    assert decode(frame) == {"type": "append_entries", "term": 1, "commit_index": 0, "serialized": None}


@pytest.mark.parametrize("message", [
    {"type": "apply_command", "command": b"\x00" + pickle.dumps(("x",)), "request_id": 1},
    {"type": "apply_command", "command": b"\x00"},
    {"type": "apply_command_response", "request_id": 1, "log_idx": 3, "log_term": 1},
    {"type": "apply_command_response", "request_id": 1, "error": 2},
    {"type": "append_entries", "term": 1, "commit_index": 0, "transmission": "start", "data": b"x",
     "prevLogIdx": 1, "prevLogTerm": 1},
    {"type": "something_else"},
    {},
])
def test_messages_fedraft_never_sends_are_dropped(message: dict[str, Any]) -> None:
    assert encode(message) is None


@pytest.mark.parametrize("message", [
    {"type": "request_vote", "term": True, "last_log_index": 1, "last_log_term": 1},
    {"type": "request_vote", "term": 1, "last_log_index": -1, "last_log_term": 1},
    {"type": "request_vote", "term": 2**63, "last_log_index": 1, "last_log_term": 1},
    {"type": "request_vote", "term": 1.0, "last_log_index": 1, "last_log_term": 1},
    {"type": "request_vote", "term": 1, "last_log_index": 1},
    {"type": "response_vote", "term": "1"},
    {"type": "next_node_idx", "next_node_idx": 1, "reset": 0, "success": True},
    {"type": "next_node_idx", "next_node_idx": False, "reset": False, "success": True},
    {"type": "append_entries", "term": 1, "commit_index": 0, "entries": [("x", 1, 1)],
     "prevLogIdx": 0, "prevLogTerm": 0},
    {"type": "append_entries", "term": 1, "commit_index": 0, "entries": [(b"\x00", True, 1)],
     "prevLogIdx": 0, "prevLogTerm": 0},
    {"type": "append_entries", "term": 1, "commit_index": 0, "serialized": (b"x", 1, 0)},
])
def test_malformed_outgoing_messages_are_a_bug(message: dict[str, Any]) -> None:
    with pytest.raises(CodecError):
        encode(message)


def regular(entries: list[WireEntry], *, term: int = 5, prev: int | None = 9, prev_term: int | None = 4,
            **extra: Any) -> PeerFrame:
    ae = AppendEntries(term=term, commit_index=3, regular=True, entries=entries, **extra)
    if prev is not None:
        ae.prev_log_idx = prev
    if prev_term is not None:
        ae.prev_log_term = prev_term
    return PeerFrame(append_entries=ae)


def test_valid_regular_frame_decodes() -> None:
    assert decode(regular([WireEntry(command=b"\x00abc", index=10, term=5)])) is not None


@pytest.mark.parametrize("frame", [
    # entry commands pysyncobj would unpickle or act on: MEMBERSHIP, VERSION, unknown, empty
    regular([WireEntry(command=b"\x02" + pickle.dumps(["add", "evil:1"]), index=10, term=5)]),
    regular([WireEntry(command=b"\x03" + pickle.dumps(7), index=10, term=5)]),
    regular([WireEntry(command=b"\x07", index=10, term=5)]),
    regular([WireEntry(command=b"", index=10, term=5)]),
    regular([WireEntry(command=b"\x00ok", index=10, term=5), WireEntry(command=b"\x02", index=11, term=5)]),
    # indexes and terms a leader cannot send
    regular([WireEntry(command=b"\x00", index=11, term=5)]),
    regular([WireEntry(command=b"\x00", index=10, term=5), WireEntry(command=b"\x00", index=12, term=5)]),
    regular([WireEntry(command=b"\x00", index=10, term=6)]),
    regular([WireEntry(command=b"\x00", index=2**63, term=5)], prev=None, prev_term=None),
    regular([], term=2**63),
    regular([], prev=2**63),
    regular([], prev_term=2**63),
    regular([], prev_term=None),
    regular([], prev=None),
    regular([], snapshot=SnapshotChunk(data=b"x")),
    # the snapshot variant with regular-only fields
    PeerFrame(append_entries=AppendEntries(term=1, regular=False, prev_log_idx=1, prev_log_term=1)),
    PeerFrame(append_entries=AppendEntries(term=1, regular=False,
                                           entries=[WireEntry(command=b"\x00", index=1, term=1)])),
    PeerFrame(append_entries=AppendEntries(term=1, commit_index=2**63, regular=False)),
    PeerFrame(request_vote=RequestVote(term=2**63)),
    PeerFrame(request_vote=RequestVote(term=1, last_log_index=2**64 - 1)),
    PeerFrame(hello=PeerHello(node_id="n1")),
    PeerFrame(),
], ids=lambda f: f.WhichOneof("kind") or "empty")
def test_invalid_frames_are_rejected(frame: PeerFrame) -> None:
    assert decode(frame) is None


def test_huge_ints_on_the_wire_are_rejected() -> None:
    for kind in ("response_vote", "timeout_now"):
        frame = PeerFrame()
        getattr(frame, kind).term = 2**64 - 1
        assert decode(frame) is None
    frame = PeerFrame()
    frame.next_node_idx.next_node_idx = 2**63
    assert decode(frame) is None


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    try:
        frame = PeerFrame.FromString(data)
    except DecodeError:
        return
    message = decode(frame)
    if message is not None:
        # whatever got through is something pysyncobj itself could have sent
        again = encode(message)
        assert again is not None and decode(again) == message


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=8), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
                max_size=4),
       st.integers(0, 2**64 - 1), st.one_of(st.none(), st.integers(0, 2**64 - 1)))
def test_structured_append_entries_never_raise(entries: list[tuple[bytes, int, int]], term: int,
                                               prev: int | None) -> None:
    frame = regular([WireEntry(command=c, index=i, term=t) for c, i, t in entries], term=term, prev=prev,
                    prev_term=prev)
    message = decode(frame)
    if message is not None:
        assert all(e[0][:1] in (b"\x00", b"\x01") for e in message["entries"])
