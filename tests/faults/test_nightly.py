"""Long fault runs (marker `nightly`, deselected by default: `pytest -m nightly tests/faults`).

Same checks as the CI fault tests — every history linearizable, no acknowledged write lost on any
node, equal digests — over many rounds of faults on random nodes, slow links, and kills at every
failpoint at several hit counts.
"""

from __future__ import annotations

import random
import signal

import pytest

from fedraft.failpoints import ENV
from tests.faults.harness import KEYS, FaultCluster, run_with_workload
from tests.faults.test_failpoints_kill import _log, _restart_each_when_killed
from tests.integration.cluster import wait_for
from tests.lin.history import Workload

pytestmark = [pytest.mark.integration, pytest.mark.nightly]

MORE_KEYS = [*KEYS, *(f"/routes/lin/x{i}" for i in range(6))]


def _rejoined_all(c: FaultCluster, timeout: float = 90.0) -> None:
    def ok() -> bool:
        leader = c.leader()
        top = c.status(leader).applied_index
        return all(c.status(n).leader_id == leader and c.status(n).applied_index >= top - 5 for n in c.procs)
    wait_for(ok, timeout, 0.3, "every node following the leader")


@pytest.mark.parametrize("seed", [1, 2])
def test_many_rounds_of_partitions_on_random_nodes(fault_cluster: FaultCluster, seed: int) -> None:
    c = fault_cluster
    c.start_all()
    c.leader()
    rng = random.Random(seed)

    def fault(workload: Workload) -> int:
        rounds = 20
        for _ in range(rounds):
            victim = rng.choice([c.leader(), *c.node_ids])
            mode = rng.choice(["blackhole", "drop"])
            c.isolate(victim, mode)
            c.leader_other_than(victim)
            workload.wait_ops(40, timeout=90)
            c.heal()
            _rejoined_all(c)
        return rounds

    run_with_workload(c, f"20 partitions of random nodes (seed {seed})", fault, threads=6, keys=MORE_KEYS,
                      seed=seed, after_ops=60)


def test_slow_links_then_a_partition(fault_cluster: FaultCluster) -> None:
    c = fault_cluster
    c.start_all()
    old = c.leader()

    def fault(workload: Workload) -> int:
        c.proxy.set(list(c.proxy.links), "delay", 0.15)
        workload.wait_ops(40, timeout=120)
        c.isolate(old)
        c.leader_other_than(old)
        workload.wait_ops(20, timeout=120)
        c.proxy.set(c.links_of(old), "delay", 0.15)
        workload.wait_ops(20, timeout=120)
        c.heal()
        _rejoined_all(c)
        return 2

    run_with_workload(c, "150 ms on every link, then the leader partitioned", fault, threads=6, keys=MORE_KEYS)


@pytest.mark.parametrize("point", ["journal.before_fsync", "journal.after_fsync", "apply.entry"])
@pytest.mark.parametrize("base", [7, 300])
def test_kill_at_failpoint_early_and_late(fault_cluster: FaultCluster, point: str, base: int) -> None:
    c = fault_cluster
    for i, n in enumerate(c.node_ids):
        c.start(n, env={ENV: f"{point}=kill@{base * (i + 1)}"})

    early: set[str] = set()

    def leader_or_restart() -> str | None:
        for n in c.node_ids:  # an early count can kill a node before there is any workload
            proc = c.procs.get(n)
            if proc is not None and proc.poll() is not None:
                assert proc.returncode == -signal.SIGKILL and f"failpoint {point}" in _log(c, n)
                c.procs.pop(n)
                c.start(n)
                early.add(n)
        try:
            return c.leader(timeout=2)
        except AssertionError:
            return None

    wait_for(leader_or_restart, 120, 0.2, "a leader")

    def fault(workload: Workload) -> int:
        armed = [n for n in c.node_ids if n not in early]
        return len(early) + _restart_each_when_killed(c, point, timeout=300, armed=armed)

    run_with_workload(c, f"kill -9 at {point} (hits {base}, {2 * base}, {3 * base})", fault, before_ops=5)
