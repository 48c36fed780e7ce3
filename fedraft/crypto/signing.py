"""Ed25519 identity keys and signatures with context strings (SPEC D1).

Every signature covers `context || 0x00 || cluster_id || body`. Bodies are raw bytes carried as
they were signed; nothing here re-encodes them.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from fedraft.errors import SignatureError

CTX_ENVELOPE = b"fedraft/v1/envelope"
CTX_ENTRY = b"fedraft/v1/entry"
CTX_COSIGN = b"fedraft/v1/cosign"
CTX_BREAKGLASS = b"fedraft/v1/breakglass"
CTX_REQUEST = b"fedraft/v1/request"
CTX_FANOUT = b"fedraft/v1/fanout"
CTX_SNAPSHOT = b"fedraft/v1/snapshot"
CTX_PEER_HELLO = b"fedraft/v1/peer-hello"

KEY_ID_LEN = 16
SIG_LEN = 64
PUBLIC_KEY_LEN = 32


def key_id_of(public_key: bytes) -> bytes:
    """The 16-byte key id: sha256(public key)[:16]."""
    return hashlib.sha256(public_key).digest()[:KEY_ID_LEN]


def signing_input(context: bytes, cluster_id: bytes, body: bytes) -> bytes:
    return context + b"\x00" + cluster_id + body


@dataclass(frozen=True)
class Identity:
    """A private Ed25519 key with its derived public parts."""

    seed: bytes

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise SignatureError(f"an Ed25519 seed has 32 bytes, got {len(self.seed)}")

    @classmethod
    def generate(cls) -> Identity:
        return cls(bytes(SigningKey.generate()))

    @property
    def public_key(self) -> bytes:
        return bytes(SigningKey(self.seed).verify_key)

    @property
    def key_id(self) -> bytes:
        return key_id_of(self.public_key)

    def sign(self, context: bytes, cluster_id: bytes, body: bytes) -> bytes:
        return SigningKey(self.seed).sign(signing_input(context, cluster_id, body)).signature


class VerifiedSignatures:
    """Digests of (public key, signature, signed bytes) this process already knows to be valid.

    The leader checks an envelope at its API and again at apply, and applies the entries it signed
    itself: the second check of the same bytes under the same key is a lookup, not an Ed25519 verify
    (about 60 us each on the reference machine). Only successes are remembered, and only from a real
    verification or from signing with the private key, so nothing from outside can put a digest here;
    a key rotated in between gives another digest. Bounded: the oldest digests are forgotten first.
    """

    def __init__(self, capacity: int = 16_384) -> None:
        self.capacity = capacity
        self._seen: dict[bytes, None] = {}
        self._lock = threading.Lock()

    @staticmethod
    def digest(public_key: bytes, sig: bytes, message: bytes) -> bytes:
        return hashlib.sha256(public_key + sig + message).digest()

    def __contains__(self, digest: bytes) -> bool:
        return digest in self._seen

    def add(self, digest: bytes) -> None:
        with self._lock:
            self._seen[digest] = None
            while len(self._seen) > self.capacity:
                del self._seen[next(iter(self._seen))]

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()


VERIFIED = VerifiedSignatures()


class Signer:
    """A signing key kept expanded for repeated use (signing is on hot paths)."""

    def __init__(self, identity: Identity) -> None:
        self._key = SigningKey(identity.seed)
        self.public_key = bytes(self._key.verify_key)
        self.key_id = key_id_of(self.public_key)

    def sign(self, context: bytes, cluster_id: bytes, body: bytes) -> bytes:
        message = signing_input(context, cluster_id, body)
        sig: bytes = self._key.sign(message).signature
        VERIFIED.add(VERIFIED.digest(self.public_key, sig, message))
        return sig


def verify(public_key: bytes, context: bytes, cluster_id: bytes, body: bytes, sig: bytes) -> None:
    """Raise SignatureError unless `sig` is `public_key`'s signature over the framed body."""
    if len(sig) != SIG_LEN:
        raise SignatureError(f"a signature has {SIG_LEN} bytes, got {len(sig)}")
    if len(public_key) != PUBLIC_KEY_LEN:
        raise SignatureError(f"a public key has {PUBLIC_KEY_LEN} bytes, got {len(public_key)}")
    message = signing_input(context, cluster_id, body)
    seen = VERIFIED.digest(public_key, sig, message)
    if seen in VERIFIED:
        return
    try:
        VerifyKey(public_key).verify(message, sig)
    except (BadSignatureError, ValueError, TypeError) as exc:
        raise SignatureError("signature does not verify") from exc
    VERIFIED.add(seen)


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def constant_time_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)
