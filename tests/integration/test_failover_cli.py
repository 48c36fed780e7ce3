"""`fedraft failover simulate|status` against real `fedraft node` processes (sample inventories), as an
operator would run them: the what-if is computed by a node on a copy of its state and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.cluster import Cluster, wait_for
from tests.integration.test_placement_cli import as_json, assert_one_error, fedraft, ok, pools, workload

pytestmark = [pytest.mark.integration, pytest.mark.sample_inventory]


def _placed(cluster: Cluster) -> dict[str, Any]:
    def reported() -> bool:
        return all(p["workers"] for p in pools(cluster).values())

    wait_for(reported, timeout=90, interval=0.5, what="every pool's inventory")
    ok(fedraft(cluster, "submit", "sim-job", "--gpus", "1", "--cpu", "1000"))
    return workload(cluster, "sim-job")


def test_simulate_answers_without_changing_anything(shared_cluster: Cluster) -> None:
    cluster = shared_cluster
    before = _placed(cluster)
    assert (before["phase"], before["pool"]) == ("placed", "hq")
    gpu = before["gpu_ids"][0]

    down = as_json(fedraft(cluster, "failover", "simulate", "hq", "-o", "json"))
    assert down["scenario"] == "pool hq goes down" and down["at_index"] == down["applied_index"] + 1
    row = next(r for r in down["changes"] if r["workload"] == "sim-job")
    # nothing is paired: hq is the only pool hq's work may use, so a failover leaves it pending
    assert (row["phase"], row["to"], row["move"]) == ("pending", "-", "failover")
    assert "failover: pool hq is down" in row["why"]

    failed = as_json(fedraft(cluster, "failover", "simulate", "--gpu", gpu, "--stale", "-o", "json"))
    row = next(r for r in failed["changes"] if r["workload"] == "sim-job")
    assert row["move"] == "gpu-fault" and row["phase"] == "placed" and gpu not in row["to"]
    assert row["to"].startswith("hq/") and row["why"] == f"gpu-fault: GPU {gpu} unhealthy: simulated failure (what-if)"

    drained = ok(fedraft(cluster, "failover", "simulate", "--drain", "hq"))
    assert drained.startswith("what if pool hq is drained: 0 move, 1 pending"), drained
    assert "nothing was proposed" in drained and "sim-job: placed hq/" in drained

    assert workload(cluster, "sim-job") == before  # the state did not move
    status = as_json(fedraft(cluster, "failover", "status", "-o", "json"))
    assert status == {"pools": [], "gpus": [], "workloads": []}


def test_bad_what_ifs_get_one_line_errors(shared_cluster: Cluster) -> None:
    cluster = shared_cluster
    assert_one_error(fedraft(cluster, "failover", "simulate", "--gpu", "GPU-nope"), 1,
                     "NOT_FOUND: no pool reports a GPU GPU-nope")
    assert_one_error(fedraft(cluster, "failover", "simulate", "nowhere"), 1, "pool nowhere is not registered")
    assert_one_error(fedraft(cluster, "failover", "simulate", "hq", "--drain", "hq"), 2, "exactly one of")
    assert_one_error(fedraft(cluster, "failover", "simulate", "Bad Pool"), 2, "pool")
