"""Sealed boxes for memories (SPEC D12; decision 0009).

A pool's box key is the X25519 form of an Ed25519 key it already has: its voter node's identity key
(pinned in genesis) or, for a member pool, its agent's key (RegisterPool). libsodium's
crypto_sign_ed25519_pk_to_curve25519 / sk_to_curve25519 give the two halves, so no second key has
to be distributed, rotated or pinned; rotating the agent key (RotateKey) rotates the box key, and
`fedraft memory reseal` re-seals to it. The same key signs and decrypts, which libsodium supports
(age and ssh-to-age do the same); the two uses never share an input format.

A box seals a MemoryPlaintext {key, owner_pool, value}: opening checks it belongs to the memory it
was read from, so a box copied into another memory does not pass for that memory's value.
"""

from __future__ import annotations

from nacl.bindings import crypto_sign_ed25519_pk_to_curve25519, crypto_sign_ed25519_sk_to_curve25519
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.signing import SigningKey

from fedraft._proto.fedraft.v1 import memory_pb2 as mpb
from fedraft.crypto.signing import Identity
from fedraft.domain.governance.memories import Sealed
from fedraft.errors import SignatureError


class OpenError(SignatureError):
    """A box does not open with this key, or holds another memory's value."""


def box_public_key(ed25519_public_key: bytes) -> bytes:
    """The X25519 public key a pool's boxes are sealed to."""
    try:
        return crypto_sign_ed25519_pk_to_curve25519(ed25519_public_key)
    except (CryptoError, ValueError, TypeError) as exc:
        raise SignatureError(f"not a usable Ed25519 public key: {exc}") from None


def box_private_key(identity: Identity) -> bytes:
    sk = SigningKey(identity.seed)
    return crypto_sign_ed25519_sk_to_curve25519(bytes(sk) + bytes(sk.verify_key))


def plaintext(key: str, owner_pool: str, value: bytes) -> bytes:
    return mpb.MemoryPlaintext(key=key, owner_pool=owner_pool, value=value).SerializeToString(deterministic=True)


def seal(ed25519_public_key: bytes, key: str, owner_pool: str, value: bytes) -> bytes:
    """A sealed box (randomized) of the memory's plaintext to the pool whose key this is."""
    return SealedBox(PublicKey(box_public_key(ed25519_public_key))).encrypt(plaintext(key, owner_pool, value))


def open_box(identity: Identity, box: bytes, key: str, owner_pool: str) -> bytes:
    """The value inside `box`, which must have been sealed to `identity`'s pool for memory `key`."""
    try:
        inner = SealedBox(PrivateKey(box_private_key(identity))).decrypt(box)
    except CryptoError:
        raise OpenError("the sealed value does not open with this key (sealed to another pool or key)") from None
    message = mpb.MemoryPlaintext()
    try:
        message.ParseFromString(inner)
    except Exception:
        raise OpenError("the sealed value opened but does not decode") from None
    if message.key != key or message.owner_pool != owner_pool:
        raise OpenError(f"the sealed value belongs to memory {message.key!r} of {message.owner_pool}, "
                        f"not {key!r} of {owner_pool}")
    return bytes(message.value)


def seal_all(recipients: list[tuple[str, bytes, bytes]], key: str, owner_pool: str,
             value: bytes) -> tuple[Sealed, ...]:
    """One box per (pool, key id, Ed25519 public key), sorted by pool: what PutMemory carries."""
    return tuple(Sealed(pool, key_id, seal(public_key, key, owner_pool, value))
                 for pool, key_id, public_key in sorted(recipients))
