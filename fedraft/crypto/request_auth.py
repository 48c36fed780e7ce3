"""Signing API requests (SPEC D2): the client half; the server's checks live in fedraft.service.auth.

A request carries `fedraft-auth-bin` = Signed(body = RequestAuth{method, sha256(request bytes),
timestamp, nonce}) signed with context `fedraft/v1/request`.
"""

from __future__ import annotations

import hashlib
import os
import time

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.crypto.signing import CTX_REQUEST, Signer

AUTH_HEADER = "fedraft-auth-bin"
WINDOW_MS = 30_000
NONCE_LEN = 16


def sign_request(signer: Signer, cluster_id: bytes, method: str, body: bytes, now_ms: int | None = None) -> bytes:
    auth = pb.RequestAuth(method=method, body_sha256=hashlib.sha256(body).digest(),
                          timestamp_ms=now_ms if now_ms is not None else int(time.time() * 1000),
                          nonce=os.urandom(NONCE_LEN))
    raw = auth.SerializeToString(deterministic=True)
    signed = pb.Signed(body=raw, sig=signer.sign(CTX_REQUEST, cluster_id, raw), key_id=signer.key_id)
    return signed.SerializeToString(deterministic=True)
