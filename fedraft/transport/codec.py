"""Strict codec between pysyncobj's Raft message dicts and `PeerFrame` protobufs (SPEC §2, §3).

pysyncobj pickles its messages on its own TCP transport; ours carries one typed frame per message
and never pickles. `decode` is the gate for everything a peer sends: it accepts exactly the shapes
pysyncobj produces (types, ranges, entry command kinds) and returns None for anything else, so a
peer cannot make pysyncobj unpickle, change membership or switch code versions.

One flat function per message type: the tick thread pays for every call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fedraft._proto.fedraft.v1.peer_pb2 import (
    AppendEntries,
    NextNodeIdx,
    PeerFrame,
    RequestVote,
    ResponseVote,
    SnapshotChunk,
    TimeoutNow,
    WireEntry,
)
from fedraft.errors import InvariantBroken

__all__ = ["CodecError", "decode", "encode"]

# Raft indexes and terms fit in a signed 64-bit integer everywhere else (LMDB keys, metrics);
# anything larger from a peer is an attack or corruption, not a log.
_INT_LIMIT = 2**63

# First byte of a pysyncobj log command. Only REGULAR (our protobuf bytes, opaque to pysyncobj) and
# NO_OP (written by a new leader) may cross the wire: MEMBERSHIP (2) and VERSION (3) are unpickled by
# pysyncobj at apply time, and fedraft never issues either.
_REGULAR = 0
_NO_OP = 1

Message = dict[str, Any]


class CodecError(InvariantBroken):
    """pysyncobj handed the transport a message of a shape we do not know: a bug, not a peer fault."""


def _u(value: Any) -> int:
    """An outgoing unsigned integer: exactly int (bool is not one) and below the wire limit."""
    if type(value) is not int or not 0 <= value < _INT_LIMIT:
        raise CodecError(f"expected an integer in [0, 2**63), got {value!r}")
    return value


def _b(value: Any) -> bool:
    if type(value) is not bool:
        raise CodecError(f"expected a bool, got {value!r}")
    return value


# ----- encode: pysyncobj dict -> PeerFrame -----

def _enc_request_vote(msg: Message) -> PeerFrame:
    return PeerFrame(request_vote=RequestVote(
        term=_u(msg["term"]), last_log_index=_u(msg["last_log_index"]), last_log_term=_u(msg["last_log_term"])))


def _enc_response_vote(msg: Message) -> PeerFrame:
    return PeerFrame(response_vote=ResponseVote(term=_u(msg["term"])))


def _enc_timeout_now(msg: Message) -> PeerFrame:
    return PeerFrame(timeout_now=TimeoutNow(term=_u(msg["term"])))


def _enc_next_node_idx(msg: Message) -> PeerFrame:
    return PeerFrame(next_node_idx=NextNodeIdx(
        next_node_idx=_u(msg["next_node_idx"]), reset=_b(msg["reset"]), success=_b(msg["success"])))


def _enc_append_entries(msg: Message) -> PeerFrame | None:
    term = _u(msg["term"])
    commit_index = _u(msg["commit_index"])
    if "prevLogIdx" in msg:
        if "transmission" in msg:
            # The large-entry path pickles the entry; the engine sizes batches so it never happens.
            return None
        prev_idx = msg["prevLogIdx"]
        prev_term = msg["prevLogTerm"]
        ae = AppendEntries(
            term=term, commit_index=commit_index, regular=True,
            entries=[WireEntry(command=c, index=_u(i), term=_u(t)) for c, i, t in msg["entries"]],
        )
        if prev_idx is not None:
            ae.prev_log_idx = _u(prev_idx)
        if prev_term is not None:
            ae.prev_log_term = _u(prev_term)
        return PeerFrame(append_entries=ae)
    serialized = msg["serialized"]
    ae = AppendEntries(term=term, commit_index=commit_index, regular=False)
    # pysyncobj's serializer answers False when reading its file failed; the receiver treats that
    # like None ("no chunk yet"), and a bare False would crash its tuple unpacking.
    if serialized is not None and serialized is not False:
        data, is_first, is_last = serialized
        ae.snapshot.CopyFrom(SnapshotChunk(data=data, is_first=_b(is_first), is_last=_b(is_last)))
    return PeerFrame(append_entries=ae)


_ENCODERS: dict[str, Callable[[Message], PeerFrame | None]] = {
    "request_vote": _enc_request_vote,
    "response_vote": _enc_response_vote,
    "append_entries": _enc_append_entries,
    "next_node_idx": _enc_next_node_idx,
    "timeout_now": _enc_timeout_now,
}


def encode(msg: Message) -> PeerFrame | None:
    """The frame for a pysyncobj message, or None for messages fedraft never sends.

    apply_command / apply_command_response are dropped: followers never forward commands through
    pysyncobj (the API forwards proposals). Raises CodecError for a known type with a bad shape.
    """
    encoder = _ENCODERS.get(msg.get("type"))  # type: ignore[arg-type]
    if encoder is None:
        return None
    try:
        return encoder(msg)
    except (KeyError, TypeError, ValueError) as exc:
        raise CodecError(f"cannot encode {msg.get('type')} message: {exc!r}") from None


# ----- decode: PeerFrame -> pysyncobj dict (None = reject the frame) -----

def _dec_request_vote(frame: PeerFrame) -> Message | None:
    m = frame.request_vote
    term, last_index, last_term = m.term, m.last_log_index, m.last_log_term
    if term >= _INT_LIMIT or last_index >= _INT_LIMIT or last_term >= _INT_LIMIT:
        return None
    return {"type": "request_vote", "term": term, "last_log_index": last_index, "last_log_term": last_term}


def _dec_response_vote(frame: PeerFrame) -> Message | None:
    term = frame.response_vote.term
    return None if term >= _INT_LIMIT else {"type": "response_vote", "term": term}


def _dec_timeout_now(frame: PeerFrame) -> Message | None:
    term = frame.timeout_now.term
    return None if term >= _INT_LIMIT else {"type": "timeout_now", "term": term}


def _dec_next_node_idx(frame: PeerFrame) -> Message | None:
    m = frame.next_node_idx
    if m.next_node_idx >= _INT_LIMIT:
        return None
    return {"type": "next_node_idx", "next_node_idx": m.next_node_idx, "reset": m.reset, "success": m.success}


def _dec_append_entries(frame: PeerFrame) -> Message | None:
    m = frame.append_entries
    term, commit_index = m.term, m.commit_index
    if term >= _INT_LIMIT or commit_index >= _INT_LIMIT:
        return None
    has_idx = m.HasField("prev_log_idx")
    if m.regular:
        if m.HasField("snapshot") or has_idx != m.HasField("prev_log_term"):
            return None
        prev_idx = m.prev_log_idx if has_idx else None
        prev_term = m.prev_log_term if has_idx else None
        if has_idx and (prev_idx >= _INT_LIMIT or prev_term >= _INT_LIMIT):  # type: ignore[operator]
            return None
        entries: list[tuple[bytes, int, int]] = []
        # A leader sends a contiguous slice of its log whose terms never exceed its own term.
        expected = prev_idx + 1 if prev_idx is not None else None
        for e in m.entries:
            command, index, entry_term = e.command, e.index, e.term
            if not command or command[0] > _NO_OP or entry_term > term or index >= _INT_LIMIT:
                return None
            if expected is not None and index != expected:
                return None
            expected = index + 1
            entries.append((command, index, entry_term))
        return {"type": "append_entries", "term": term, "commit_index": commit_index,
                "entries": entries, "prevLogIdx": prev_idx, "prevLogTerm": prev_term}
    if has_idx or m.HasField("prev_log_term") or len(m.entries):
        return None
    serialized: tuple[bytes, bool, bool] | None = None
    if m.HasField("snapshot"):
        s = m.snapshot
        serialized = (s.data, s.is_first, s.is_last)
    return {"type": "append_entries", "term": term, "commit_index": commit_index, "serialized": serialized}


_DECODERS: dict[str, Callable[[PeerFrame], Message | None]] = {
    "request_vote": _dec_request_vote,
    "response_vote": _dec_response_vote,
    "append_entries": _dec_append_entries,
    "next_node_idx": _dec_next_node_idx,
    "timeout_now": _dec_timeout_now,
}


def decode(frame: PeerFrame) -> Message | None:
    """The pysyncobj message a frame carries, or None if the frame is not exactly a valid one."""
    kind = frame.WhichOneof("kind")
    decoder = _DECODERS.get(kind) if kind is not None else None
    return decoder(frame) if decoder is not None else None
