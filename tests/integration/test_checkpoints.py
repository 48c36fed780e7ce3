"""Signed checkpoints on 3 real nodes (SPEC §4): every node cosigns through the leader, the log exports
from the API and from a node's state directory, and `fedraft verify` checks it offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedraft.cli.main import main
from fedraft.client import Client
from fedraft.crypto.logfile import ENTRY, MAGIC, read_records, verify_log
from tests.integration.cluster import Cluster, wait_for

pytestmark = pytest.mark.integration

INTERVAL = 16


def _set_interval(cluster: Cluster, interval: int) -> None:
    admins = {}
    for pool in cluster.node_ids:
        admins[pool] = Client.from_profile(cluster.layout.profiles[pool], timeout=30)
        cluster._clients.append(admins[pool])
    proposed = admins["hq"].set_policy({"checkpoint_interval": str(interval)})
    pid, digest = bytes(proposed.governance.pending_id), bytes(proposed.governance.command_digest)
    for pool in ("gpu-dc", "cpu-branch"):
        last = admins[pool].approve(pid, digest)
    assert last.governance.state == "executed", last


def _export(client: Client) -> bytes:
    return b"".join(client.export_log())


def test_nodes_cosign_checkpoints_and_the_exported_log_verifies(cluster: Cluster, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    cluster.start_all()
    cluster.leader()
    _set_interval(cluster, INTERVAL)
    client = cluster.client(timeout=30)
    for i in range(3 * INTERVAL):
        client.put(f"/routes/cp{i % 7}", str(i).encode())

    def cosigned_by_all() -> bool:
        report = verify_log(_export(client), cluster.layout.cluster_id)
        assert report.ok, [str(p) for p in report.problems]
        return report.complete_checkpoints >= 2 and all(
            len(r.cosignatures) == 3 for r in _checkpoints(_export(client))[:2])

    wait_for(cosigned_by_all, 60, 0.5, "two checkpoints cosigned by all three nodes")

    genesis = str(cluster.layout.node_configs["hq"].parent.parent / "genesis.json")
    via_api, via_state = tmp_path / "api.frlog", tmp_path / "state.frlog"
    assert main(["export-log", "--out", str(via_api), "--profile", str(cluster.profile)]) == 0
    assert main(["export-log", "--out", str(via_state), "--config", str(cluster.config("gpu-dc"))]) == 0
    capsys.readouterr()
    for path in (via_api, via_state):
        assert main(["verify", str(path), "--genesis", genesis, "-o", "json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["ok"] and doc["complete_checkpoints"] >= 2 and not doc["genesis_trusted_from_file"]
        assert doc["anchored_index"] >= INTERVAL

    # One flipped byte inside an archived entry: verify fails and names that entry.
    data = bytearray(via_api.read_bytes())
    records = list(read_records(bytes(data)))
    target = [r for r in records if r.kind == ENTRY][10]
    index = int.from_bytes(target.payload[:8], "big")
    data[target.offset + 5 + 8 + 20] ^= 0x40
    bad = tmp_path / "bad.frlog"
    bad.write_bytes(bytes(data))
    assert main(["verify", str(bad), "--genesis", genesis]) == 1
    out = capsys.readouterr().out
    assert f"first bad index {index}" in out, out
    assert data[:len(MAGIC)] == MAGIC


def _checkpoints(data: bytes) -> list:  # type: ignore[type-arg]
    from fedraft._proto.fedraft.v1 import entries_pb2 as pb
    from fedraft.crypto.logfile import CHECKPOINT

    return [pb.CheckpointRecord.FromString(r.payload) for r in read_records(data) if r.kind == CHECKPOINT]
