"""Raft's InstallSnapshot rule 6, scripted in the simulation (snapshot mode, decision 0019).

A follower A holds entries S..N (acknowledged: the leader L counted them towards its commit) but has
applied less than S, because the commit index only reaches A with L's next message. L's snapshot is
at S. A late reset reply from A makes L fall back to its snapshot and send it to A; the append that
follows it is lost. Stock pysyncobj installs the snapshot and clears A's journal: A keeps S, loses
S+1..N. L crashes; A and B elect a new leader without S+1..N and new writes take those indexes, so
acknowledged writes vanish. fedraft's serializer ignores a snapshot whose last entry this journal
already holds with the same term (with every entry after the applied index): A catches up from its
own log, and nothing is lost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedraft._proto.fedraft.v1.peer_pb2 import PeerFrame
from fedraft.consensus import snapshot
from fedraft.transport.codec import decode, encode
from tests.sim.cluster import SimCluster, SimNode
from tests.sim.invariants import SimViolation
from tests.sim.test_truncation import QUIET, _until
from tests.sim.workload import T0_MS, Op


def _engine(node: SimNode) -> Any:
    assert node.engine is not None
    return node.engine


def _message(data: bytes) -> dict[str, Any]:
    message = decode(PeerFrame.FromString(data))
    assert message is not None
    return message


def _propose(cluster: SimCluster) -> Op:
    op = cluster.clients.new_put(T0_MS + int(cluster.now * 1000))
    cluster.step(faults=False, requests=False)  # one entry per step: the leader submits what is queued
    return op


def _until_snapshot_sent(cluster: SimCluster, src: str, dst: str) -> list[bytes]:
    """Step until src sent a whole snapshot to dst on the held link; its chunk frames, in order."""
    chunks: list[bytes] = []
    deadline = cluster.now + 5.0
    while not chunks or not _message(chunks[-1])["serialized"][2]:
        assert cluster.now < deadline, "the leader did not send its snapshot"
        cluster.step(faults=False, requests=False)
        chunks += [d for d in cluster.network.take_held(src, dst) if _message(d).get("serialized") is not None]
        cluster.network.hold(src, dst)
    return chunks


def _scenario(root: Path, *, crash: bool = True) -> dict[str, int]:
    """Runs the story to the end; returns what A held right after the snapshot arrived."""
    with SimCluster(5, root, QUIET, snapshots=True) as cluster:
        cluster.clients.setup(T0_MS + int(cluster.now * 1000))
        _until(cluster, lambda: all(op.result is not None for op in cluster.clients.ops), "setup acknowledged")
        leader = next(n for n in cluster.live() if _engine(n).is_leader)
        lid = leader.node_id
        a_id, b_id = sorted(n for n in cluster.nodes if n != lid)
        a = cluster.nodes[a_id]
        net = cluster.network
        net.partition([lid, a_id], [b_id])  # every commit now rests on L and A
        _until(cluster, lambda: _engine(a).raft_last_applied == _engine(leader).raft_last_applied,
               "A caught up")

        # A acknowledges S..N, but its replies are held: L commits nothing yet, A's commit stays below S.
        net.hold(a_id, lid)
        s = (_engine(leader).journal.last_index() or 0) + 1
        ops = [_propose(cluster) for _ in range(4)]
        last = _engine(leader).journal.last_index()
        assert last == s + 3
        _until(cluster, lambda: _engine(a).journal.last_index() == last, "A holds every new entry")
        assert _engine(a).commit_index < s <= last

        # From here L's messages to A are held too; A's reply for S alone gets through, so L commits
        # and applies S, and compacts there (a snapshot at S).
        net.hold(lid, a_id)
        replies = net.take_held(a_id, lid)
        first_ack = next(i for i, d in enumerate(replies) if _message(d).get("next_node_idx") == s + 1)
        net.inject(a_id, lid, replies[first_ack])
        net.hold(a_id, lid)
        _until(cluster, lambda: _engine(leader).raft_last_applied == s, "L applied S")
        _engine(leader)._sync.forceLogCompaction()
        _until(cluster, lambda: _engine(leader).snapshots.snapshot_index == s
               and _engine(leader).journal.first_index() == s - 1, "L's snapshot at S")

        # A's other replies arrive: L commits N and acknowledges the writes S+1..N to their clients.
        for data in replies[first_ack + 1:] + net.take_held(a_id, lid):
            net.inject(a_id, lid, data)
        _until(cluster, lambda: all(op.result is not None for op in ops), "the writes acknowledged")
        assert [op.result.index for op in ops if op.result] == list(range(s, s + 4))
        assert _engine(a).raft_last_applied < s and _engine(a).journal.last_index() == last

        # A late reset reply from A (sent when it held less) makes L fall back to its snapshot.
        stale = encode({"type": "next_node_idx", "next_node_idx": s - 1, "reset": True, "success": False})
        assert stale is not None
        net.inject(a_id, lid, stale.SerializeToString())
        net.hold(a_id, lid)
        chunks = _until_snapshot_sent(cluster, lid, a_id)
        start = max(i for i, d in enumerate(chunks) if _message(d)["serialized"][1])
        for data in chunks[start:]:  # the snapshot arrives; the append L sent after it is lost
            net.inject(lid, a_id, data)
        cluster.step(faults=False, requests=False)
        seen = {"applied": _engine(a).raft_last_applied, "last": _engine(a).journal.last_index() or 0,
                "s": s, "n": last}

        if not crash:
            # The leader carries on from A's own log: appends after S, no second snapshot.
            net.take_held(lid, a_id)
            net.take_held(a_id, lid)
            net.captured = []
            _until(cluster, lambda: _engine(a).raft_last_applied == _engine(leader).raft_last_applied
                   == _engine(leader).commit_index, "A caught up from its own log")
            seen["resent"] = sum(1 for src, dst, d in net.captured
                                 if (src, dst) == (lid, a_id) and _message(d).get("serialized") is not None)
            cluster.settle()
            return seen
        cluster.crash(lid, down_s=3600)  # before its next append repairs A
        net.take_held(a_id, lid)
        net.heal()
        _until(cluster, lambda: any(_engine(n).is_leader for n in cluster.live()), "a new leader among A and B")
        for _ in range(3):
            op = cluster.clients.new_put(T0_MS + int(cluster.now * 1000))
            _until(cluster, lambda op=op: op.result is not None, f"{op.name} acknowledged")
        cluster.settle()
        return seen


def test_a_snapshot_the_journal_already_holds_keeps_the_acknowledged_suffix(sim_root: Path) -> None:
    seen = _scenario(sim_root)
    assert seen["last"] == seen["n"], f"A dropped entries {seen['s'] + 1}..{seen['n']} it had acknowledged"
    assert seen["applied"] < seen["s"], "A installed the snapshot instead of catching up from its own log"


def test_the_leader_does_not_resend_the_snapshot_it_left_alone(sim_root: Path) -> None:
    """Live: after sending the last chunk pysyncobj's leader moves its next index for A past the
    snapshot; A matches there and catches up from its own entries, with no second transmission."""
    seen = _scenario(sim_root, crash=False)
    assert seen["last"] >= seen["n"] and seen["resent"] == 0, seen


def test_without_the_journal_check_the_same_scenario_loses_acknowledged_writes(
        sim_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    init = snapshot.SnapshotSerializer.__init__

    def unchecked(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["journal"] = None
        init(self, *args, **kwargs)

    monkeypatch.setattr(snapshot.SnapshotSerializer, "__init__", unchecked)
    with pytest.raises(SimViolation, match=r"acknowledged 'put .*' .* is not in"):
        _scenario(sim_root)


def test_the_random_faults_produce_the_case(sim_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The fault model produces it unscripted (a late or duplicated reset reply, or the backup hint, sends
    the leader back to its snapshot while the follower holds entries past it): in snapshot seeds 4, 5, 16,
    55, 94, 140, 187 and 194 of 0-199. Those runs lose nothing even without the check, as the leader's
    append right after the snapshot restores the suffix; the loss needs the crash scripted above."""
    from tests.sim.test_snapshots import _run

    caplog.set_level("INFO", logger="fedraft.consensus.snapshot")
    _run(4, sim_root)
    assert any("not installed: the journal holds" in r.getMessage() for r in caplog.records)
