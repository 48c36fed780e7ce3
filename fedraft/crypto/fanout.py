"""Signed fan-out queries and answers (SPEC D1 context `fedraft/v1/fanout`; decision 0009).

Both are `Signed(body = FanoutMessage)`: the oneof says whether the body is a query or an answer, so
a signature over one can never pass for the other. An answer names the sha256 of its query's body.
"""

from __future__ import annotations

import hashlib
import os

from google.protobuf.message import DecodeError as ProtoDecodeError

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft._proto.fedraft.v1 import fanout_pb2 as fpb
from fedraft.crypto.envelopes import check_signed_shape
from fedraft.crypto.signing import CTX_FANOUT, Signer, verify
from fedraft.errors import DecodeError

MAX_QUERY_BYTES = 4096
MAX_ANSWER_BYTES = 256 * 1024
NONCE_LEN = 16


def sign_message(signer: Signer, cluster_id: bytes, message: fpb.FanoutMessage) -> pb.Signed:
    body = message.SerializeToString(deterministic=True)
    return pb.Signed(body=body, sig=signer.sign(CTX_FANOUT, cluster_id, body), key_id=signer.key_id)


def build_query(signer: Signer, cluster_id: bytes, *, origin_pool: str, author: str, text: str, level: str,
                now_ms: int, validity_ms: int = 60_000, max_results: int = 0,
                nonce: bytes | None = None) -> pb.Signed:
    query = fpb.FanoutQuery(origin_pool=origin_pool, author=author, text=text, level=level, issued_at_ms=now_ms,
                            expires_at_ms=now_ms + validity_ms, nonce=nonce or os.urandom(NONCE_LEN),
                            max_results=max_results)
    return sign_message(signer, cluster_id, fpb.FanoutMessage(query=query))


def build_incidents_query(signer: Signer, cluster_id: bytes, *, origin_pool: str, author: str, now_ms: int,
                          limit: int = 0, validity_ms: int = 60_000, nonce: bytes | None = None) -> pb.Signed:
    """An administrator's signed request for every pool's incidents (decision 0015)."""
    query = fpb.IncidentsQuery(origin_pool=origin_pool, author=author, issued_at_ms=now_ms,
                               expires_at_ms=now_ms + validity_ms, nonce=nonce or os.urandom(NONCE_LEN), limit=limit)
    return sign_message(signer, cluster_id, fpb.FanoutMessage(incidents_query=query))


def query_digest(signed: pb.Signed) -> bytes:
    return hashlib.sha256(bytes(signed.body)).digest()


def parse(signed: pb.Signed, kind: str, max_bytes: int) -> fpb.FanoutMessage:
    """The message a Signed carries, which must be of `kind` (a FanoutMessage oneof name); no signature check."""
    check_signed_shape(signed)
    if len(signed.body) > max_bytes:
        raise DecodeError(f"fan-out {kind} of {len(signed.body)} bytes exceeds {max_bytes}")
    message = fpb.FanoutMessage()
    try:
        message.ParseFromString(bytes(signed.body))
    except ProtoDecodeError:
        raise DecodeError(f"fan-out {kind} does not decode") from None
    if message.WhichOneof("kind") != kind:
        raise DecodeError(f"the signed body is not a fan-out {kind}")
    return message


def verify_message(public_key: bytes, cluster_id: bytes, signed: pb.Signed) -> None:
    """Raise SignatureError unless `public_key` signed this body for this federation."""
    verify(public_key, CTX_FANOUT, cluster_id, bytes(signed.body), bytes(signed.sig))
