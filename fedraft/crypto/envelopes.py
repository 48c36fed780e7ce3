"""Signed envelopes: building them (clients), and turning their bytes back into domain commands.

An envelope is `Signed(body = Envelope bytes)` signed by its author with context
`fedraft/v1/envelope` (SPEC §4, D1). Everything that decodes here takes bytes from outside and
raises DecodeError or SignatureError with a reason a caller can act on.
"""

from __future__ import annotations

import hashlib
import os

from google.protobuf.message import DecodeError as ProtoDecodeError

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.crypto.signing import CTX_ENVELOPE, KEY_ID_LEN, SIG_LEN, Signer
from fedraft.domain import commands as c
from fedraft.errors import DecodeError
from fedraft.wire.commands import command_to_pb

REQUEST_ID_LEN = 16
# The largest command is PutMemory: its sealed values total at most 512 KiB (decision 0009); a log entry
# (1 MiB) always holds one envelope.
MAX_ENVELOPE_BYTES = 640 * 1024


def new_request_id() -> bytes:
    return os.urandom(REQUEST_ID_LEN)


def build_envelope(signer: Signer, cluster_id: bytes, command: c.Command, *, now_ms: int,
                   validity_ms: int = 120_000, request_id: bytes | None = None) -> pb.Signed:
    env = pb.Envelope(cluster_id=cluster_id, request_id=request_id or new_request_id(),
                      issued_at_ms=now_ms, expires_at_ms=now_ms + validity_ms)
    command_to_pb(command, env)
    body = env.SerializeToString(deterministic=True)
    return pb.Signed(body=body, sig=signer.sign(CTX_ENVELOPE, cluster_id, body), key_id=signer.key_id)


def parse_signed(raw: bytes, max_bytes: int) -> pb.Signed:
    if len(raw) > max_bytes:
        raise DecodeError(f"signed message of {len(raw)} bytes exceeds {max_bytes}")
    signed = pb.Signed()
    try:
        signed.ParseFromString(raw)
    except ProtoDecodeError:
        raise DecodeError("not a Signed message (truncated or corrupt bytes)") from None
    check_signed_shape(signed)
    return signed


def check_signed_shape(signed: pb.Signed) -> None:
    if len(signed.sig) != SIG_LEN:
        raise DecodeError(f"signature must be {SIG_LEN} bytes, got {len(signed.sig)}")
    if len(signed.key_id) != KEY_ID_LEN:
        raise DecodeError(f"key id must be {KEY_ID_LEN} bytes, got {len(signed.key_id)}")


def parse_envelope(body: bytes) -> pb.Envelope:
    if len(body) > MAX_ENVELOPE_BYTES:
        raise DecodeError(f"envelope of {len(body)} bytes exceeds {MAX_ENVELOPE_BYTES}")
    env = pb.Envelope()
    try:
        env.ParseFromString(body)
    except ProtoDecodeError:
        raise DecodeError("envelope body does not decode (truncated or corrupt bytes)") from None
    if len(env.request_id) != REQUEST_ID_LEN:
        raise DecodeError(f"request_id must be {REQUEST_ID_LEN} bytes")
    return env


def body_digest(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


def pending_id_of(signed: pb.Signed) -> bytes:
    """A critical command's pending id (SPEC §6): sha256 of its Signed envelope serialized with
    deterministic=True — the bytes it has inside the log entry, and the bytes a client that built it
    with build_envelope sends."""
    return hashlib.sha256(signed.SerializeToString(deterministic=True)).digest()


def command_digest_of(env: pb.Envelope) -> bytes:
    """What a vote on a critical command names: sha256 of the envelope with only its command kept
    (cluster id, request id and validity window cleared), serialized with deterministic=True. Two
    proposals of the same command have the same digest."""
    only = pb.Envelope()
    only.CopyFrom(env)
    for name in ("cluster_id", "request_id", "issued_at_ms", "expires_at_ms"):
        only.ClearField(name)
    return hashlib.sha256(only.SerializeToString(deterministic=True)).digest()
