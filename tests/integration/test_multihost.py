"""A federation built on three "hosts" from public parts only (decision 0015) runs as real processes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedraft.crypto.keyfile import PRIVATE_KIND
from tests.integration.cluster import wait_for
from tests.integration.multihost import NODES, MultiHost


@pytest.fixture()
def multihost(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[MultiHost]:
    fed = MultiHost(tmp_path)
    try:
        yield fed
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            print(fed.logs())
        fed.close()


def _secrets_in(directory: Path) -> set[str]:
    """Every private key held under `directory`: Ed25519 seeds and PEM private keys, by content."""
    found = set()
    for path in directory.rglob("*"):
        if not path.is_file() or path.name == "node.log" or "data" in path.relative_to(directory).parts:
            continue
        text = path.read_text(errors="replace")
        if "PRIVATE KEY" in text:
            found.add(text.strip())
        if PRIVATE_KIND in text:
            found.add(json.loads(text)["seed"])
    return found


def test_three_hosts_from_public_parts_commit_a_write(multihost: MultiHost) -> None:
    held = {n: _secrets_in(multihost.hosts[n]) for n in NODES}
    assert all(len(s) == 3 for s in held.values())  # node key, TLS key, admin key
    for a in NODES:
        for b in NODES:
            if a != b:
                assert not held[a] & held[b], f"host {a} holds a private key of {b}"
    # The assembler saw only public parts: its only secrets are the CA key and the break-glass key it made.
    assembler = _secrets_in(multihost.assembler)
    assert len(assembler) == 2 and not assembler & set().union(*held.values())

    multihost.start_all()
    multihost.leader()
    client = multihost.client(multihost.hosts["gamma"] / "gamma-admin.profile.toml")
    result = client.put("/settings/multihost", b"assembled from public parts")
    assert result.index > 0
    for endpoint in client.endpoints:
        wait_for(lambda e=endpoint: client.status(e).applied_index >= result.index, 30, 0.1, "applied everywhere")
        got = client.get("/settings/multihost", stale=True, endpoint=endpoint)
        assert got.record.value == b"assembled from public parts"
