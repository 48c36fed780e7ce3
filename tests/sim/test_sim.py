"""The deterministic simulation (tests/sim/cluster.py): random faults from a seed, with the
invariants checked after every step, and a scripted scenario for pysyncobj's truncation bug."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sim.cluster import SimCluster
from tests.sim.invariants import SimViolation


def _run_seed(seed: int, root: Path) -> None:
    with SimCluster(seed, root) as cluster:
        try:
            cluster.run()
        except SimViolation as exc:
            faults = "\n  ".join(cluster.events[-12:]) or "(none)"
            print(f"SIMULATION FAILED: seed {seed}\n  replay: pytest tests/sim --sim-seed {seed}")
            raise SimViolation(
                f"seed {seed}, step {cluster.step_no} ({cluster.now - 100:.2f} s simulated): {exc}\n"
                f"replay: pytest tests/sim --sim-seed {seed}\nlast faults:\n  {faults}") from None
        print(cluster.summary())


def test_random_faults(sim_seed: int, sim_root: Path) -> None:
    _run_seed(sim_seed, sim_root)


@pytest.mark.nightly
def test_random_faults_nightly(sim_seed: int, sim_root: Path) -> None:
    _run_seed(sim_seed, sim_root)


def test_a_seed_replays_exactly(sim_root: Path) -> None:
    """Same seed, same run: the event log, every node's journal and state digest are identical."""
    runs = []
    for attempt in range(2):
        with SimCluster(7, sim_root / str(attempt)) as cluster:
            cluster.run()
            runs.append((cluster.events, cluster.network.stats, cluster.invariants.digests,
                         {n: list(node.disk.entries) for n, node in cluster.nodes.items()}))
    assert runs[0] == runs[1]
    assert runs[0][0], "the seed injected no fault"
