"""kill -9 at failpoints (fedraft.failpoints, FEDRAFT_FAILPOINTS) with concurrent clients, then restart.

Each node is armed at a different hit count, so the nodes die one after another under load (the
leader among them) and each is restarted unarmed as soon as it died; then the clients go on. The
history must be linearizable, no acknowledged write lost, and the nodes must converge.
"""

from __future__ import annotations

import signal

import pytest

from fedraft.failpoints import ENV
from tests.faults.harness import FaultCluster, run_with_workload
from tests.integration.cluster import wait_for
from tests.lin.history import Workload

pytestmark = pytest.mark.integration


def _log(c: FaultCluster, node: str) -> str:
    return (c.config(node).parent / "node.log").read_text(errors="replace")


def _restart_each_when_killed(c: FaultCluster, point: str, timeout: float = 150.0,
                              armed: list[str] | None = None) -> int:
    """Wait until every armed node died at `point`, restarting each unarmed as soon as it did."""
    armed = list(c.node_ids) if armed is None else armed
    killed: set[str] = set()

    def step() -> bool:
        for n in armed:
            if n in killed:
                continue
            code = c.procs[n].poll()
            if code is None:
                continue
            assert code == -signal.SIGKILL, f"{n} exited with {code}, not by its failpoint"
            assert f"failpoint {point} hit" in _log(c, n)
            killed.add(n)
            c.procs.pop(n)
            c.start(n)  # unarmed
        return len(killed) == len(armed)

    wait_for(step, timeout, 0.1, f"every armed node killed at {point}")
    return len(killed)


@pytest.mark.parametrize("point", ["journal.before_fsync", "journal.after_fsync", "apply.entry"])
def test_kill_at_failpoint_then_restart(fault_cluster: FaultCluster, point: str) -> None:
    c = fault_cluster
    for i, n in enumerate(c.node_ids):
        c.start(n, env={ENV: f"{point}=kill@{120 * (i + 1)}"})
    c.leader()

    def fault(workload: Workload) -> int:
        return _restart_each_when_killed(c, point)

    run_with_workload(c, f"kill -9 at {point}, each node in turn, restart", fault, before_ops=5)


@pytest.mark.raft(compaction_min_entries=40, compaction_min_time_s=3)
def test_kill_during_snapshot_install_then_restart(fault_cluster: FaultCluster) -> None:
    c = fault_cluster
    c.start_all()
    leader = c.leader()
    follower = next(n for n in c.node_ids if n != leader)

    def fault(workload: Workload) -> int:
        behind = c.status(follower).applied_index
        c.kill(follower)
        # The leader compacts its journal past what the follower has: the follower needs a snapshot.
        wait_for(lambda: c.status(c.leader()).snapshot_index > behind + 40, 120, 0.2, "a snapshot past the follower")
        c.start(follower, env={ENV: "snapshot.install=kill@1"})
        wait_for(lambda: c.procs[follower].poll() is not None, 120, 0.1, f"{follower} to die installing the snapshot")
        assert c.procs[follower].returncode == -signal.SIGKILL
        assert "failpoint snapshot.install hit" in _log(c, follower)
        c.procs.pop(follower)
        c.start(follower)
        wait_for(lambda: c.status(follower).applied_index >= c.status(c.leader()).applied_index - 5, 120, 0.2,
                 f"{follower} caught up")
        # Its state was older than the snapshot renamed into place: start-up installed that first
        # (otherwise pysyncobj would take the snapshot's index as applied over the older state).
        assert "an install was interrupted" in _log(c, follower)
        return 1

    run_with_workload(c, "kill -9 during snapshot install, restart", fault, before_ops=5)
