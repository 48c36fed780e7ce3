"""Memories and fan-out with three real `fedraft node` processes (decision 0009).

hq and gpu-dc are paired at high, hq and cpu-branch at standard. A memory of class internal (high) put by
hq is readable on gpu-dc's host (`fedraft memory get --config`) and not on cpu-branch's, whose node stores
only ciphertext it cannot open; after SetTrust raises cpu-branch to high and hq reseals, cpu-branch reads
it. A fan-out at level high reaches gpu-dc only and its signed answer verifies; at standard it reaches
both; an unpaired origin is refused with PERMISSION_DENIED.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import grpc
import pytest

from fedraft.client import FANOUT, Client, RequestFailed
from fedraft.config import load_node_config, load_profile
from fedraft.crypto import fanout as fcrypto
from fedraft.crypto.keyfile import load_private_key
from fedraft.crypto.sealing import OpenError, open_box
from fedraft.crypto.signing import Signer
from fedraft.domain.outcome import Code
from fedraft.domain.placement.model import Trust
from tests.integration.cluster import Cluster, wait_for

pytestmark = pytest.mark.integration

DOCS = {"hq": {"hq-notes.md": "hq keeps the GPU quota ledger\n"},
        "gpu-dc": {"runbook.md": "# gpu-dc\nGPU quota: 64 units per tenant\n", "other.txt": "nothing\n"},
        "cpu-branch": {"branch.txt": "the branch has no GPU quota at all\n"}}


def _admin(cluster: Cluster, pool: str) -> Client:
    c = Client.from_profile(cluster.layout.profiles[pool], timeout=30)
    cluster._clients.append(c)
    return c


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedraft", *argv], capture_output=True, text=True, timeout=60,
                          check=False)


def _with_fanout_folders(cluster: Cluster) -> None:
    for node_id, files in DOCS.items():
        config = cluster.config(node_id)
        docs = config.parent / "docs"
        docs.mkdir()
        for name, text in files.items():
            (docs / name).write_text(text)
        # a top-level key must come before the first [table]
        config.write_text('fanout_folder = "docs"\n' + config.read_text())


def test_memories_are_sealed_by_trust_and_fanout_reaches_the_trusted_pools(cluster: Cluster) -> None:
    _with_fanout_folders(cluster)
    cluster.start_all()
    cluster.leader()
    hq, dc, branch = (_admin(cluster, p) for p in ("hq", "gpu-dc", "cpu-branch"))
    for other, client, level in (("gpu-dc", dc, Trust.HIGH), ("cpu-branch", branch, Trust.STANDARD)):
        hq.pair_offer(other, level)
        assert client.pair_accept("hq").governance.state == "active"

    # ---- fan-out: at high only gpu-dc is asked; its answer is signed by its node key and verifies ----
    result = hq.fanout("gpu quota", "high")
    assert [(a.pool, a.code, a.verified, a.signer) for a in result.answers] == [("gpu-dc", Code.OK, True, "gpu-dc")]
    assert [h[0] for h in result.answers[0].hits] == ["runbook.md"] and "64 units" in result.answers[0].hits[0][1]
    assert (result.served_by, result.skipped) == ("hq", ("cpu-branch: trusted at standard, below high",))
    cli = _cli("fanout", "gpu quota", "-o", "json", "--profile", str(cluster.layout.profiles["hq"]))
    assert cli.returncode == 0, cli.stderr
    assert [(a["pool"], a["verified"]) for a in json.loads(cli.stdout)["answers"]] == \
        [("cpu-branch", True), ("gpu-dc", True)]  # at standard: both
    # gpu-dc and cpu-branch are not paired: cpu-branch refuses a gpu-dc query, even forwarded by gpu-dc's node
    node_cfg = load_node_config(cluster.config("gpu-dc"))
    dc_node = Client([cluster.endpoint("cpu-branch")], load_private_key(node_cfg.key_path),
                     node_cfg.ca_cert.read_bytes(), hq.cluster_id)
    cluster._clients.append(dc_node)
    dc_admin = load_private_key(load_profile(cluster.layout.profiles["gpu-dc"]).key_path)
    query = fcrypto.build_query(Signer(dc_admin), hq.cluster_id, origin_pool="gpu-dc", author="gpu-dc-admin",
                                text="gpu quota", level="standard", now_ms=int(time.time() * 1000))
    with pytest.raises(grpc.RpcError) as info:
        dc_node.call(cluster.endpoint("cpu-branch"), "Ask", query.SerializeToString(deterministic=True),
                     service=FANOUT)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "gpu-dc is not paired with cpu-branch" in str(info.value.details())
    assert [a.pool for a in dc.fanout("quota", "standard").answers] == ["hq"]  # gpu-dc is paired with hq only

    # ---- a memory of class internal (high), put by hq: sealed to hq and gpu-dc only ----
    secret = b"Q3 capacity plan: 40 H100s for the hq training run"
    put = hq.put_memory("plans/q3", secret, "internal")
    assert list(put.governance.memory.pools) == ["gpu-dc", "hq"], put
    index = str(put.index)
    got = _cli("memory", "get", "plans/q3", "--config", str(cluster.config("gpu-dc")), "--min-index", index)
    assert (got.returncode, got.stdout) == (0, secret.decode()), got.stderr
    refused = _cli("memory", "get", "plans/q3", "--config", str(cluster.config("cpu-branch")), "--min-index", index)
    assert refused.returncode == 1 and "holds no sealed value of plans/q3" in refused.stderr, refused
    assert secret.decode() not in refused.stdout

    # cpu-branch's node stores the ciphertexts, and none of them opens with cpu-branch's key
    keys = {n: load_private_key(load_node_config(cluster.config(n)).key_path) for n in cluster.node_ids}
    on_branch = cluster.endpoint("cpu-branch")
    boxes = {}
    for pool, client in (("gpu-dc", dc), ("hq", hq)):
        response = client.read_memory("plans/q3", endpoint=on_branch, min_index=put.index)
        assert response.sealed.pool == pool and response.served_by == "cpu-branch"
        boxes[pool] = bytes(response.sealed.box)
        assert secret not in boxes[pool]
    assert not branch.read_memory("plans/q3", endpoint=on_branch).HasField("sealed")
    for pool, box in boxes.items():
        with pytest.raises(OpenError):
            open_box(keys["cpu-branch"], box, "plans/q3", "hq")
        assert open_box(keys[pool], box, "plans/q3", "hq") == secret

    # through the API: a node opens its own pool's box for its own pool's principals only
    assert hq.open_memory("plans/q3", min_index=put.index) == secret
    assert dc.open_memory("plans/q3", min_index=put.index) == secret
    with pytest.raises(RequestFailed, match="holds no sealed value"):
        branch.open_memory("plans/q3", min_index=put.index)
    assert [(m.key, m.data_class, m.pool, list(m.pools)) for m in hq.list("memories")] == \
        [("plans/q3", "internal", "hq", ["gpu-dc", "hq"])]

    # ---- trust raised to high (critical: every voter pool approves), then hq reseals ----
    proposed = hq.set_trust("hq", "cpu-branch", Trust.HIGH).governance
    for client in (dc, branch):
        last = client.approve(bytes(proposed.pending_id), bytes(proposed.command_digest))
    assert last.governance.state == "executed", last
    resealed = _cli("memory", "reseal", "plans/q3", "--profile", str(cluster.layout.profiles["hq"]))
    assert resealed.returncode == 0 and "sealed to cpu-branch, gpu-dc, hq" in resealed.stdout, resealed.stderr
    wait_for(lambda: _cli("memory", "get", "plans/q3", "--config", str(cluster.config("cpu-branch"))).stdout
             == secret.decode(), 30, 0.5, "cpu-branch reads the resealed memory")
