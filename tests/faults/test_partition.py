"""Network and process faults with real node processes and concurrent clients (SPEC §9, issue 8 item 2).

Every test runs registry clients through the fault, checks the recorded history for linearizability
(tests/lin/checker.py) and that every acknowledged write is readable afterwards at its version or a
later one, on the leader and on every node; the nodes end with equal state digests.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.harness import FaultCluster, run_with_workload
from tests.integration.cluster import SLOW_RAFT, wait_for
from tests.lin.history import Workload

pytestmark = pytest.mark.integration

ELECTION_MAX_S = SLOW_RAFT["election_max_ms"] / 1000


def _rejoined(c: FaultCluster, node: str, timeout: float = 60.0) -> None:
    """`node` is part of the cluster again: it leads, or follows the leader and has caught up."""
    def back() -> bool:
        leader = c.leader()
        s = c.status(node)
        return s.leader_id == leader and s.applied_index >= c.status(leader).applied_index - 5
    wait_for(back, timeout, 0.2, f"{node} back in the cluster")


def test_partitioned_leader_then_heal(fault_cluster: FaultCluster) -> None:
    c = fault_cluster
    c.start_all()
    old = c.leader()

    def fault(workload: Workload) -> int:
        term = c.status(old).term
        cut_at = time.monotonic()
        c.isolate(old)
        new = c.leader_other_than(old)
        assert c.status(new).term > term
        # The cut-off leader goes into lockdown (refuses writes) within raftMaxTimeout (SPEC D11).
        wait_for(lambda: c.status(old).lockdown, 15, 0.1, f"{old} in lockdown")
        assert time.monotonic() - cut_at < ELECTION_MAX_S + 2.0
        workload.wait_ops(40, timeout=90)  # the majority side keeps serving
        c.heal()
        _rejoined(c, old)
        return 1

    run_with_workload(c, "leader partitioned (blackhole), then healed", fault)


# The stall once seen in full-suite runs ("only 1 of 10 operations completed in 60 s" after the flaps)
# was the workload's budget for the checked keys running out during a fault that lasted longer under
# load; workers now go on with put-only keys, which count as progress (tests/lin/history.py).
def test_flapping_link_between_leader_and_a_follower(fault_cluster: FaultCluster) -> None:
    c = fault_cluster
    c.start_all()
    leader = c.leader()
    follower = next(n for n in c.node_ids if n != leader)
    link = next(name for name in c.links_of(leader) if follower in name.split("->"))
    flaps = 4

    def fault(workload: Workload) -> int:
        # Down longer than the election timeout's minimum, so the follower's timer fires while cut off.
        c.proxy.flap([link], up_s=1.5, down_s=2.5)
        wait_for(lambda: c.proxy.links[link].stats.faults >= flaps, 60, 0.2, f"{flaps} flaps")
        workload.wait_ops(10, timeout=60)
        c.heal()
        _rejoined(c, follower)
        return c.proxy.links[link].stats.faults

    # Paced clients, so that the checked operations spread over the whole flapping window.
    run_with_workload(c, "flapping leader-follower link (1.5 s up, 2.5 s down)", fault, pause_s=0.05)


def test_leader_stopped_for_three_election_timeouts_then_continued(fault_cluster: FaultCluster) -> None:
    c = fault_cluster
    c.start_all()
    old = c.leader()

    def fault(workload: Workload) -> int:
        stopped_at = time.monotonic()
        c.pause(old)
        try:
            c.leader_other_than(old)
            # Keep it stopped for three election timeouts while the clients go on with the new leader.
            wait_for(lambda: time.monotonic() - stopped_at >= 3 * ELECTION_MAX_S and workload.completed() > 0,
                     60, 0.1, "three election timeouts")
        finally:
            c.resume(old)
        _rejoined(c, old)
        return 1

    run_with_workload(c, f"leader SIGSTOPped {3 * ELECTION_MAX_S:.0f} s, then SIGCONT", fault, pause_s=0.05)


def test_quorum_lost_then_restored(fault_cluster: FaultCluster) -> None:
    """Both followers stopped: nothing can commit, so writes in flight end with an unknown outcome
    (clients give up after 4 s); some of them commit once the followers continue."""
    c = fault_cluster
    c.start_all()
    leader = c.leader()
    followers = [n for n in c.node_ids if n != leader]

    during: list[int] = []

    def fault(workload: Workload) -> int:
        unknown_before = workload.history.counts()["info"]
        for n in followers:
            c.pause(n)
        try:
            wait_for(lambda: c.status(leader).lockdown, 15, 0.1, f"{leader} in lockdown")
            wait_for(lambda: workload.history.counts()["info"] >= unknown_before + 4, 60, 0.1,
                     "writes with an unknown outcome")
            during.append(workload.history.counts()["info"] - unknown_before)
        finally:
            for n in followers:
                c.resume(n)
        c.leader()
        return 1

    figures = run_with_workload(c, "both followers SIGSTOPped (no quorum), then SIGCONT", fault, client_timeout=4.0)
    # Unknown outcomes counted while the quorum was gone (completed ones only: an operation still in
    # flight is "pending"), and all of them are in the checked history.
    assert during and during[0] >= 4
    assert figures.unknown >= 4 and figures.lost == 0
