"""Per-request authentication for the API (SPEC D2).

A request carries `fedraft-auth-bin` = Signed(body = RequestAuth{method, sha256(request bytes),
timestamp, nonce}) signed with context `fedraft/v1/request`. The server checks the signer is a
known principal, the method and body hash match, the timestamp is within ±30 s of its clock and the
nonce was not seen in that window. It runs before the request body is decoded.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from google.protobuf.message import DecodeError as ProtoDecodeError

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.crypto.envelopes import check_signed_shape
from fedraft.crypto.request_auth import AUTH_HEADER, NONCE_LEN, WINDOW_MS
from fedraft.crypto.signing import CTX_REQUEST, verify
from fedraft.errors import CallerError, DecodeError, SignatureError
from fedraft.storage.state import StateStore

MAX_AUTH_BYTES = 1024
NONCE_CACHE_MAX = 200_000


class AuthError(CallerError):
    pass


@dataclass(frozen=True)
class Caller:
    key_id: bytes
    principal: pb.Principal


class RequestVerifier:
    def __init__(self, store: StateStore, cluster_id: bytes) -> None:
        self.store = store
        self.cluster_id = cluster_id
        self._nonces: OrderedDict[bytes, int] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, method: str, body: bytes, header: bytes | None, now_ms: int | None = None) -> Caller:
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        if header is None:
            raise AuthError(f"missing {AUTH_HEADER} metadata: requests must be signed",
                            hint="use fedraft.client.Client or the fedraft CLI with a key")
        if len(header) > MAX_AUTH_BYTES:
            raise AuthError("request signature header too large")
        signed = pb.Signed()
        auth = pb.RequestAuth()
        try:
            signed.ParseFromString(header)
            check_signed_shape(signed)
            auth.ParseFromString(signed.body)
        except (ProtoDecodeError, DecodeError) as exc:
            raise AuthError(f"malformed request signature: {exc}") from None
        with self.store.read() as st:
            principal = st.principal(bytes(signed.key_id))
        if principal is None:
            raise AuthError(f"unknown key id {bytes(signed.key_id).hex()}")
        try:
            verify(bytes(principal.public_key), CTX_REQUEST, self.cluster_id, bytes(signed.body), bytes(signed.sig))
        except SignatureError:
            raise AuthError("request signature does not verify (wrong key or another federation)") from None
        if principal.revoked_index:  # a revoked or rotated key reads nothing either, not only writes
            raise AuthError(f"key {bytes(signed.key_id).hex()} of {principal.name} was "
                            f"{principal.revoked_why or 'revoked'} at index {principal.revoked_index}")
        if auth.method != method:
            raise AuthError("request signature is for another method")
        if bytes(auth.body_sha256) != hashlib.sha256(body).digest():
            raise AuthError("request signature does not cover this body")
        if abs(int(auth.timestamp_ms) - now_ms) > WINDOW_MS:
            raise AuthError("request timestamp outside the ±30 s window", hint="check the client's clock")
        if len(auth.nonce) != NONCE_LEN:
            raise AuthError(f"request nonce must be {NONCE_LEN} bytes")
        self._check_nonce(bytes(signed.key_id) + bytes(auth.nonce), now_ms)
        return Caller(bytes(signed.key_id), principal)

    def _check_nonce(self, nonce: bytes, now_ms: int) -> None:
        with self._lock:
            while self._nonces:
                seen = next(iter(self._nonces.values()))
                if seen >= now_ms - 2 * WINDOW_MS and len(self._nonces) < NONCE_CACHE_MAX:
                    break
                self._nonces.popitem(last=False)
            if nonce in self._nonces:
                raise AuthError("replayed request (nonce already seen)")
            self._nonces[nonce] = now_ms
