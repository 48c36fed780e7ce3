"""Signatures with context separation (D1), envelopes, and the hash chain."""

from __future__ import annotations

import hashlib

import pytest

from fedraft.crypto.chain import GENESIS_HEAD, chain_heads, next_head
from fedraft.crypto.envelopes import build_envelope, parse_envelope, parse_signed
from fedraft.crypto.signing import CTX_ENTRY, CTX_ENVELOPE, Identity, Signer, key_id_of, verify
from fedraft.domain import commands as c
from fedraft.errors import DecodeError, SignatureError

CID = hashlib.sha256(b"cluster").digest()


def test_sign_verify_and_key_id() -> None:
    ident = Identity.generate()
    sig = ident.sign(CTX_ENVELOPE, CID, b"body")
    verify(ident.public_key, CTX_ENVELOPE, CID, b"body", sig)
    assert ident.key_id == key_id_of(ident.public_key) == hashlib.sha256(ident.public_key).digest()[:16]


@pytest.mark.parametrize("mutate", ["context", "cluster", "body", "key", "sig_len"])
def test_any_change_breaks_the_signature(mutate: str) -> None:
    ident = Identity.generate()
    sig = ident.sign(CTX_ENVELOPE, CID, b"body")
    args = {"public_key": ident.public_key, "context": CTX_ENVELOPE, "cluster_id": CID, "body": b"body", "sig": sig}
    if mutate == "context":
        args["context"] = CTX_ENTRY
    elif mutate == "cluster":
        args["cluster_id"] = hashlib.sha256(b"other").digest()
    elif mutate == "body":
        args["body"] = b"bodY"
    elif mutate == "key":
        args["public_key"] = Identity.generate().public_key
    else:
        args["sig"] = sig[:63]
    with pytest.raises(SignatureError):
        verify(**args)  # type: ignore[arg-type]


def test_envelope_round_trip_and_truncation() -> None:
    signed = build_envelope(Signer(Identity.generate()), CID, c.Delete("/routes/x", 3), now_ms=1000)
    env = parse_envelope(signed.body)
    assert env.delete.key == "/routes/x" and env.delete.expected_version == 3
    assert env.expires_at_ms - env.issued_at_ms == 120_000
    raw = signed.SerializeToString()
    assert parse_signed(raw, 1 << 16).body == signed.body
    with pytest.raises(DecodeError):
        parse_signed(raw[:-5], 1 << 16)
    with pytest.raises(DecodeError):
        parse_signed(raw, 10)


def test_chain() -> None:
    heads = chain_heads([b"a", b"b"])
    assert heads[0] == hashlib.sha256(GENESIS_HEAD + b"a").digest()
    assert heads[1] == next_head(heads[0], b"b")
    assert chain_heads([b"b", b"a"])[1] != heads[1]  # order matters


def test_a_verified_signature_is_not_verified_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    from fedraft.crypto import signing

    ident = Identity.generate()
    sig = ident.sign(CTX_ENVELOPE, b"cid", b"body")  # Identity.sign: not remembered
    calls: list[bytes] = []
    real = signing.VerifyKey.verify

    def counting(self: signing.VerifyKey, message: bytes, signature: bytes) -> bytes:
        calls.append(message)
        return real(self, message, signature)  # type: ignore[no-any-return]

    monkeypatch.setattr(signing.VerifyKey, "verify", counting)
    verify(ident.public_key, CTX_ENVELOPE, b"cid", b"body", sig)
    verify(ident.public_key, CTX_ENVELOPE, b"cid", b"body", sig)
    assert len(calls) == 1
    # The remembered digest covers key, signature and every framed byte: any change verifies again.
    with pytest.raises(SignatureError):
        verify(ident.public_key, CTX_ENVELOPE, b"cid", b"bodY", sig)
    with pytest.raises(SignatureError):
        verify(ident.public_key, CTX_ENTRY, b"cid", b"body", sig)
    with pytest.raises(SignatureError):
        verify(Identity.generate().public_key, CTX_ENVELOPE, b"cid", b"body", sig)
    assert len(calls) == 4


def test_own_signatures_are_known_and_failures_are_never_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    from fedraft.crypto import signing

    signer = Signer(Identity.generate())
    sig = signer.sign(CTX_ENTRY, b"cid", b"entry")
    monkeypatch.setattr(signing.VerifyKey, "verify", lambda *_a: pytest.fail("verified its own signature"))
    verify(signer.public_key, CTX_ENTRY, b"cid", b"entry", sig)
    monkeypatch.undo()
    bad = bytes([sig[0] ^ 1]) + sig[1:]
    for _ in range(2):
        with pytest.raises(SignatureError):
            verify(signer.public_key, CTX_ENTRY, b"cid", b"entry", bad)


def test_the_verified_set_is_bounded() -> None:
    from fedraft.crypto.signing import VerifiedSignatures

    cache = VerifiedSignatures(capacity=3)
    digests = [bytes([i]) * 32 for i in range(5)]
    for d in digests:
        cache.add(d)
    assert [d in cache for d in digests] == [False, False, True, True, True]
