"""Per-request signatures (SPEC D2): method, body hash, ±30 s window, nonce cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedraft.crypto.request_auth import sign_request
from fedraft.crypto.signing import Identity, Signer
from fedraft.service.auth import AuthError, RequestVerifier
from fedraft.storage.state import StateStore
from tests.helpers import make_federation

NOW = 1_800_000_000_000


@pytest.fixture()
def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    fed = make_federation()
    store = StateStore(tmp_path / "s", fed.genesis, map_size=32 << 20)
    return fed, RequestVerifier(store, fed.cluster_id), Signer(fed.admins["hq"])


def test_valid_request(setup) -> None:  # type: ignore[no-untyped-def]
    fed, verifier, signer = setup
    header = sign_request(signer, fed.cluster_id, "Get", b"body", NOW)
    caller = verifier.verify("Get", b"body", header, NOW + 1000)
    assert caller.principal.role == "admin"


@pytest.mark.parametrize("case", ["missing", "garbage", "oversized", "method", "body", "old", "future", "unknown",
                                  "replay", "cluster", "revoked"])
def test_refusals(setup, case: str) -> None:  # type: ignore[no-untyped-def]
    fed, verifier, signer = setup
    header: bytes | None = sign_request(signer, fed.cluster_id, "Get", b"body", NOW)
    method, body, now = "Get", b"body", NOW
    if case == "missing":
        header = None
    elif case == "garbage":
        header = b"\xff\x00garbage"
    elif case == "oversized":
        header = b"x" * 5000
    elif case == "method":
        method = "Propose"
    elif case == "body":
        body = b"other"
    elif case == "old":
        now = NOW + 31_000
    elif case == "future":
        now = NOW - 31_000
    elif case == "unknown":
        header = sign_request(Signer(Identity.generate()), fed.cluster_id, "Get", b"body", NOW)
    elif case == "replay":
        verifier.verify(method, body, header, now)
    elif case == "cluster":
        header = sign_request(signer, b"\x01" * 32, "Get", b"body", NOW)
    elif case == "revoked":
        st = verifier.store.writer()
        principal = st.principal(signer.key_id)
        principal.revoked_index, principal.revoked_why = 7, "revoked by gpu-dc-admin"
        st.put_principal(principal)
        verifier.store.commit()
    with pytest.raises(AuthError) as info:
        verifier.verify(method, body, header, now)
    assert str(info.value)
    if case == "revoked":
        assert "of hq-admin was revoked by gpu-dc-admin at index 7" in str(info.value)
