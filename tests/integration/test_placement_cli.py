"""The placement and pairing commands against real `fedraft node` processes, run as an operator would
(`python -m fedraft ...` subprocesses). The nodes report the sample inventories: hq 2 workers x 2 L4
(24 GiB), gpu-dc 4 workers x 8 A100/H100 (80 GiB), cpu-branch 3 CPU-only workers.

The tests build on each other in file order (one shared cluster): inventory, a 1-GPU workload,
pairing, an 8 x 80 GiB workload, migration, cordon, cancel, the agent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster import Cluster, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.sample_inventory]

REPO = Path(__file__).resolve().parents[2]
POOLS = ("cpu-branch", "gpu-dc", "hq")


def fedraft(cluster: Cluster, *args: str, admin: str = "hq", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """One CLI call as `admin`'s pool admin (FEDRAFT_PROFILE), output piped (plain text)."""
    env = {k: v for k, v in os.environ.items() if k != "FEDRAFT_PROFILE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env["FEDRAFT_PROFILE"] = str(cluster.layout.profiles[admin])
    return subprocess.run([sys.executable, "-m", "fedraft", *args], env=env, cwd=cluster.root, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.args, result.returncode, result.stdout, result.stderr)
    return result.stdout


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(result))


def assert_one_error(result: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    assert result.returncode == code, (result.args, result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    assert len([line for line in lines if line.startswith("error:")]) == 1, result.stderr
    assert all(line.startswith(("error:", "hint:")) for line in lines), result.stderr
    assert fragment in lines[0], result.stderr


def pools(cluster: Cluster) -> dict[str, dict[str, Any]]:
    return {p["pool"]: p for p in as_json(fedraft(cluster, "pools", "-o", "json"))}


def workload(cluster: Cluster, workload_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [w for w in as_json(fedraft(cluster, "workloads", "-o", "json"))
                                   if w["id"] == workload_id]
    assert len(found) == 1, found
    return found[0]


def all_endpoints(cluster: Cluster) -> str:
    return ",".join(cluster.endpoint(n) for n in cluster.node_ids)


def test_pools_show_the_three_pools_with_their_inventory(shared_cluster: Cluster) -> None:
    cluster = shared_cluster

    def reported() -> dict[str, dict[str, Any]] | None:
        current = pools(cluster)
        return current if set(current) == set(POOLS) and all(p["workers"] for p in current.values()) else None

    current = wait_for(reported, timeout=90, interval=0.5, what="every pool's inventory in `fedraft pools`")
    assert current is not None
    hq, dc, branch = current["hq"], current["gpu-dc"], current["cpu-branch"]
    assert (hq["workers"], hq["gpus_healthy"], hq["gpus_total"]) == (2, 4, 4)
    assert (dc["workers"], dc["gpus_healthy"], dc["gpus_total"], dc["region"], dc["tier"]) == \
        (4, 32, 32, "dc-east", "gpu")
    assert (branch["workers"], branch["gpus_total"], branch["tier"]) == (3, 0, "cpu")
    for p in current.values():
        assert (p["health"], p["voter"], p["gpus_booked"], p["cordoned"], p["draining"]) == \
            ("up", True, 0, False, False)
        assert p["heartbeat_age_ms"] is not None and p["heartbeat_age_ms"] < 60_000
    table = ok(fedraft(cluster, "pools")).splitlines()
    assert table[1].split()[:3] == ["POOL", "HEALTH", "VOTER"] and "\x1b[" not in "".join(table)
    assert any(line.split()[0] == "gpu-dc" and "32/32" in line for line in table[2:])


def test_a_one_gpu_workload_stays_on_the_submitters_own_pool(shared_cluster: Cluster) -> None:
    cluster = shared_cluster
    out = ok(fedraft(cluster, "submit", "one-gpu", "--gpus", "1", "--cpu", "1000", "--ram", "1024"))
    assert out.startswith("one-gpu placed on pool hq, worker hq-"), out  # nothing is paired yet: only hq
    w = workload(cluster, "one-gpu")
    assert (w["phase"], w["pool"], w["home_pool"], w["submitter_pool"], len(w["gpu_ids"])) == \
        ("placed", "hq", "hq", "hq", 1)
    assert_one_error(fedraft(cluster, "submit", "one-gpu", "--gpus", "1"), 1, "ALREADY_EXISTS")


def test_pairing_needs_both_halves(shared_cluster: Cluster) -> None:
    cluster = shared_cluster
    assert_one_error(fedraft(cluster, "pair", "accept", "hq", admin="gpu-dc"), 1, "FAILED_PRECONDITION")
    offered = as_json(fedraft(cluster, "pair", "offer", "gpu-dc", "--trust", "high", "-o", "json"))
    assert (offered["state"], offered["trust"]) == ("offered", "high")
    assert as_json(fedraft(cluster, "pairings", "-o", "json")) == [
        {"pool_a": "gpu-dc", "pool_b": "hq", "trust": "high", "state": "offered", "offered_by": "hq"}]
    assert "is active" in ok(fedraft(cluster, "pair", "accept", "hq", admin="gpu-dc"))
    assert as_json(fedraft(cluster, "pairings", "-o", "json")) == [
        {"pool_a": "gpu-dc", "pool_b": "hq", "trust": "high", "state": "active", "offered_by": "hq"}]
    table = ok(fedraft(cluster, "pairings")).splitlines()
    assert table[1].split() == ["POOL_A", "POOL_B", "TRUST", "STATE", "OFFERED_BY"]
    assert table[2].split() == ["gpu-dc", "hq", "high", "active", "hq"]
    assert_one_error(fedraft(cluster, "pair", "accept", "hq", admin="gpu-dc"), 1, "ALREADY_EXISTS")
    assert_one_error(fedraft(cluster, "pair", "offer", "nowhere", "--trust", "high"), 4, "NOT_FOUND")


def test_eight_80gb_gpus_go_to_gpu_dc_and_explain_says_why(shared_cluster: Cluster) -> None:
    cluster = shared_cluster
    placed = as_json(fedraft(cluster, "submit", "big-1", "--gpus", "8", "--gpu-mem", "80000", "-o", "json"))
    assert (placed["phase"], placed["pool"], len(placed["gpus"])) == ("placed", "gpu-dc", 8)
    assert all(g.startswith(f"GPU-{placed['worker']}-") for g in placed["gpus"])  # one worker's 8 GPUs
    w = workload(cluster, "big-1")
    assert (w["pool"], sorted(w["gpu_ids"]), w["spec"]["gpu_memory_mb"]) == ("gpu-dc", sorted(placed["gpus"]), 80000)
    assert pools(cluster)["gpu-dc"]["gpus_booked"] == 8

    text = ok(fedraft(cluster, "explain", "big-1"))
    assert "workload big-1: placed on gpu-dc" in text
    assert f"placed on gpu-dc worker {placed['worker']}" in text
    assert any(line.strip().startswith("gpu-dc") and line.endswith(" *") for line in text.splitlines()), text
    doc = as_json(fedraft(cluster, "explain", "big-1", "-o", "json"))
    e = doc["explanation"]
    assert e["chosen"] == "gpu-dc" and e["scored"][0]["pool"] == "gpu-dc"
    refused = {ex["pool"]: r["filter"] for r in e["refused"] for ex in r["examples"]}
    assert refused.get("hq") == "gpus", e                 # 24 GiB L4s: below the 80000 MiB floor
    assert refused.get("cpu-branch") == "trust", e        # not paired with hq


def test_migrate_moves_a_workload_and_records_why(shared_cluster: Cluster) -> None:
    cluster = shared_cluster
    out = ok(fedraft(cluster, "migrate", "one-gpu", "--to", "gpu-dc"))
    assert out.startswith("one-gpu moved to pool gpu-dc, worker dc-"), out
    doc = as_json(fedraft(cluster, "explain", "one-gpu", "-o", "json"))
    assert [(m["from_pool"], m["to_pool"], m["reason"]) for m in doc["moves"]][:1] == [("hq", "gpu-dc", "migrate")]
    assert "hq -> gpu-dc (migrate)" in ok(fedraft(cluster, "explain", "one-gpu"))
    assert_one_error(fedraft(cluster, "migrate", "ghost"), 4, "NOT_FOUND")


def test_a_cordoned_pool_takes_nothing_new(shared_cluster: Cluster) -> None:
    cluster = shared_cluster
    assert ok(fedraft(cluster, "cordon", "gpu-dc")).startswith("cordoned gpu-dc")
    assert pools(cluster)["gpu-dc"]["cordoned"] is True
    result = fedraft(cluster, "submit", "big-2", "--gpus", "8", "--gpu-mem", "80000")
    out = ok(result)  # accepted, pending: exit 0
    assert out.startswith("big-2 is pending: no pool fits"), out
    assert "refused by state: 1 — gpu-dc: cordoned" in out, out
    pending = as_json(fedraft(cluster, "workloads", "--phase", "pending", "-o", "json"))
    assert [(w["id"], bool(w["reason"])) for w in pending] == [("big-2", True)]
    assert "refused by state" in ok(fedraft(cluster, "explain", "big-2"))
    assert_one_error(fedraft(cluster, "cordon", "nowhere"), 4, "NOT_FOUND")
    assert ok(fedraft(cluster, "uncordon", "gpu-dc")).startswith("uncordoned gpu-dc")
    assert pools(cluster)["gpu-dc"]["cordoned"] is False


def test_cancel(shared_cluster: Cluster) -> None:
    cluster = shared_cluster
    assert ok(fedraft(cluster, "cancel", "big-2")).startswith("big-2 cancelled")
    assert workload(cluster, "big-2")["phase"] == "cancelled"
    assert ok(fedraft(cluster, "cancel", "big-1")).startswith("big-1 cancelled")
    assert pools(cluster)["gpu-dc"]["gpus_booked"] <= 1  # big-1's 8 GPUs are free (one-gpu may be there)
    assert_one_error(fedraft(cluster, "cancel", "big-1"), 1, "FAILED_PRECONDITION")
    assert_one_error(fedraft(cluster, "cancel", "ghost"), 4, "NOT_FOUND")
    assert_one_error(fedraft(cluster, "explain", "ghost"), 4, "workload ghost not found")
    assert ok(fedraft(cluster, "workloads")).splitlines()[1].split() == [
        "ID", "PHASE", "POOL", "WORKER", "GPUS", "HOME", "SUBMITTER", "PRIORITY", "MOVES", "REASON"]


def test_agent_once_reports_for_its_pool(shared_cluster: Cluster) -> None:
    cluster = shared_cluster
    node_dir = cluster.config("gpu-dc").parent
    result = fedraft(cluster, "agent", "--config", str(cluster.config("gpu-dc")), "--endpoints",
                     all_endpoints(cluster), "--pool", "gpu-dc", "--inventory", "static", "--inventory-file",
                     str(node_dir / "inventory.toml"), "--region", "dc-east", "--tier", "gpu", "--once")
    assert ok(result).startswith("pool gpu-dc: report delivered"), result.stderr
    # An admin key is not a pool's node key: refused, one line, exit 1.
    assert_one_error(fedraft(cluster, "agent", "--pool", "hq", "--inventory", "none", "--once"), 1,
                     "PERMISSION_DENIED")
    # A node reports only for its own pool.
    assert_one_error(fedraft(cluster, "agent", "--config", str(cluster.config("gpu-dc")), "--endpoints",
                             all_endpoints(cluster), "--pool", "hq", "--inventory", "none", "--once"), 1,
                     "PERMISSION_DENIED")
    assert pools(cluster)["gpu-dc"]["gpus_total"] == 32


def test_agent_runs_until_ctrl_c(shared_cluster: Cluster) -> None:
    cluster = shared_cluster
    node_dir = cluster.config("cpu-branch").parent
    env = {k: v for k, v in os.environ.items() if k != "FEDRAFT_PROFILE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedraft", "agent", "--config", str(cluster.config("cpu-branch")), "--endpoints",
         all_endpoints(cluster), "--pool", "cpu-branch", "--inventory", "static", "--inventory-file",
         str(node_dir / "inventory.toml"), "--region", "branch-west", "--tier", "cpu", "--interval", "0.5"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        assert "reporting every 0.5 s" in proc.stdout.readline()
        before = pools(cluster)["cpu-branch"]["last_heartbeat_ms"]
        wait_for(lambda: pools(cluster)["cpu-branch"]["last_heartbeat_ms"] > before, timeout=30, interval=0.3,
                 what="a heartbeat of cpu-branch")
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.splitlines()[-1] == "interrupted", err
