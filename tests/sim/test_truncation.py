"""pysyncobj's over-eager follower truncation, scripted in the simulation (decision 0012).

The leader L replicates to A while B is cut off, so every commit rests on L and A. A duplicated,
delayed append_entries of an earlier write then reaches A after later writes were acknowledged.
Stock pysyncobj truncates A's log after that old message's entries, although they match the
leader's: the acknowledged writes now live only on L. L crashes before it re-sends them; A and B
elect a new leader whose log lacks them, and new writes take their indexes. With fedraft's patch
(fedraft.consensus.raft_patches) A keeps the matching entries and nothing is lost.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fedraft._proto.fedraft.v1.peer_pb2 import PeerFrame
from fedraft.consensus.raft_patches import ConflictOnlyTruncation
from fedraft.transport.codec import decode
from tests.sim.cluster import Schedule, SimCluster
from tests.sim.invariants import SimViolation
from tests.sim.network import Faults
from tests.sim.workload import T0_MS, Op

QUIET = Schedule(request=0.0, crash=0.0, pause=0.0, partition=0.0,
                 faults=Faults(drop=0.0, duplicate=0.0, spike=0.0, late_after_reconnect=0.0))


def _until(cluster: SimCluster, done: object, what: str, limit_s: float = 20.0) -> None:
    deadline = cluster.now + limit_s
    while not done():  # type: ignore[operator]
        if cluster.now > deadline:
            raise AssertionError(f"not reached within {limit_s} s simulated: {what}")
        cluster.step(faults=False, requests=False)


def _put(cluster: SimCluster) -> Op:
    op = cluster.clients.new_put(T0_MS + int(cluster.now * 1000))
    _until(cluster, lambda: op.result is not None, f"{op.name} acknowledged")
    return op


def _scenario(root: Path, *, stock: bool) -> bool:
    """Runs the story; True if A still held the later writes right after the late duplicate."""
    # Stock pysyncobj logs the truncation at CRITICAL: let it go on, to show what follows.
    with SimCluster(11, root, QUIET, fail_on_error_logs=not stock) as cluster:
        cluster.clients.setup(T0_MS + int(cluster.now * 1000))
        _until(cluster, lambda: all(op.result is not None for op in cluster.clients.ops), "setup acknowledged")
        leader = next(n.node_id for n in cluster.live() if n.engine is not None and n.engine.is_leader)
        a, b = sorted(n for n in cluster.nodes if n != leader)
        cluster.network.partition([leader, a], [b])
        cluster.network.captured = []
        first = _put(cluster)
        stale = next(data for src, dst, data in cluster.network.captured
                     if (src, dst) == (leader, a) and _carries(data, first.result.index))  # type: ignore[union-attr]
        later = [_put(cluster) for _ in range(3)]
        assert all(op.result is not None and op.result.index > first.result.index for op in later)  # type: ignore[union-attr]

        cluster.network.inject(leader, a, stale)   # the duplicate arrives late, after the later writes
        cluster.step(faults=False, requests=False)
        a_engine = cluster.nodes[a].engine
        assert a_engine is not None and cluster.network.stats["duplicated"] == 1
        kept = (a_engine.journal.last_index() or 0) >= later[-1].result.index  # type: ignore[union-attr]
        cluster.crash(leader, down_s=3600)         # before its next append_entries repairs A
        cluster.network.heal()
        _until(cluster, lambda: any(n.engine is not None and n.engine.is_leader for n in cluster.live()),
               "a new leader among the two left")
        for _ in range(3):
            _put(cluster)
        cluster.settle()
        return kept


def _carries(data: bytes, index: int) -> bool:
    message = decode(PeerFrame.FromString(data))
    return (message is not None and message["type"] == "append_entries"
            and any(e[1] == index for e in message.get("entries") or ()))


def test_a_late_duplicate_append_entries_loses_nothing(sim_root: Path) -> None:
    assert _scenario(sim_root, stock=False), "the follower dropped entries that matched the leader's"


def test_without_the_patch_the_same_scenario_loses_acknowledged_writes(sim_root: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(ConflictOnlyTruncation, "_SyncObj__onMessageReceived")
    monkeypatch.delattr(ConflictOnlyTruncation, "_SyncObj__deleteEntriesFrom")
    with pytest.raises(SimViolation, match=r"acknowledged 'put .*' .* is not in|state digests differ"):
        _scenario(sim_root, stock=True)
