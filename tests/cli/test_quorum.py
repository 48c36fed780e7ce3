"""quorum-status without a cluster: the summary and exit codes from what nodes answer, usage errors (64)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fedraft._proto.fedraft.v1 import api_pb2 as api
from fedraft._proto.fedraft.v1 import placement_pb2 as ppb
from fedraft.cli import quorum
from fedraft.cli.main import main as fedraft_main
from fedraft.cli.quorum import COLUMNS, Probe, summarize, summary_line, table_rows

REPO = Path(__file__).resolve().parents[2]
NODES = {"hq": "10.0.0.1:7400", "gpu-dc": "10.0.0.2:7410", "cpu-branch": "10.0.0.3:7420"}


def _status(node: str, role: str = "follower", leader: str = "hq", *, lockdown: bool = False, quorum_: bool = True,
            applied: int = 50, down: tuple[str, ...] = ()) -> api.StatusResponse:
    s = api.StatusResponse(node_id=node, role=role, leader_id=leader, term=4, commit_index=applied,
                           applied_index=applied, has_quorum=quorum_, lockdown=lockdown, version="0.1.0", pool=node,
                           voters=3, db_used_bytes=5 << 20, db_map_bytes=16 << 30)
    for peer, address in NODES.items():
        if peer != node:
            up = peer not in down
            s.peers.add(node_id=peer, address=address, connected=up, last_contact_ms=40 if up else 9000)
    return s


def _probe(node: str, status: api.StatusResponse | None, error: str = "") -> Probe:
    return Probe(NODES[node], status, signed=status is not None, errors=[error] if error else [])


POOLS = [ppb.PoolRecord(id="gpu-dc", workers=[ppb.WorkerInfo(gpus=[ppb.GpuUnit(healthy=True), ppb.GpuUnit()])])]


def test_healthy_cluster() -> None:
    report = summarize([_probe("hq", _status("hq", "leader")), _probe("gpu-dc", _status("gpu-dc", applied=48)),
                        _probe("cpu-branch", _status("cpu-branch"))], POOLS)
    s = report["summary"]
    assert (s["exit_code"], s["state"], s["leader"], s["term"]) == (0, "healthy", "hq", 4)
    assert (s["voters_up"], s["voters_total"], s["quorum"], s["failure_tolerance"]) == (3, 3, True, 1)
    rows = {r["node"]: r for r in report["nodes"]}
    assert rows["gpu-dc"]["lag"] == 2 and rows["hq"]["lag"] == 0
    assert (rows["gpu-dc"]["gpus_healthy"], rows["gpu-dc"]["gpus_total"]) == (1, 2)
    assert rows["hq"]["last_contact_ms"] == 40
    assert summary_line(s) == "HEALTHY: leader hq, term 4, voters up 3/3, quorum yes, failure tolerance 1"
    table = table_rows(report)
    assert len(table[0]) == len(COLUMNS) and table[1][9] == "1/2" and table[0][8] == "5.0 MiB/16.0 GiB"


def test_leader_dead_is_degraded_and_names_the_dead_node() -> None:
    down = ("hq",)
    report = summarize([_probe("hq", None, "UNAVAILABLE: connection refused"),
                        _probe("gpu-dc", _status("gpu-dc", "leader", "gpu-dc", down=down)),
                        _probe("cpu-branch", _status("cpu-branch", leader="gpu-dc", down=down))])
    s = report["summary"]
    assert (s["exit_code"], s["leader"], s["voters_up"], s["quorum"], s["failure_tolerance"]) == (1, "gpu-dc", 2,
                                                                                                  True, 0)
    dead = report["nodes"][0]
    assert (dead["node"], dead["role"], dead["last_contact_ms"]) == ("hq", "unreachable", 9000)
    assert dead["errors"] == ["UNAVAILABLE: connection refused"]


def test_during_the_election_the_survivors_still_count_as_a_quorum() -> None:
    down = ("hq",)
    report = summarize([_probe("hq", None, "DEADLINE_EXCEEDED"),
                        _probe("gpu-dc", _status("gpu-dc", leader="", down=down)),
                        _probe("cpu-branch", _status("cpu-branch", leader="", down=down))])
    assert report["summary"]["exit_code"] == 1 and report["summary"]["leader"] == ""
    assert "none (election in progress" in summary_line(report["summary"])


def test_one_node_answering_speaks_for_the_others() -> None:
    report = summarize([_probe("cpu-branch", _status("cpu-branch"))])
    s = report["summary"]
    assert (s["exit_code"], s["voters_up"], s["voters_total"], s["quorum"]) == (0, 3, 3, True)
    assert {r["node"] for r in report["nodes"]} == {"cpu-branch", "hq", "gpu-dc"}  # the others: "not asked"
    assert {r["role"] for r in report["nodes"][1:]} == {"not asked"}


def test_two_nodes_down_is_no_quorum() -> None:
    down = ("hq", "gpu-dc")
    report = summarize([_probe("hq", None, "UNAVAILABLE"), _probe("gpu-dc", None, "UNAVAILABLE"),
                        _probe("cpu-branch", _status("cpu-branch", leader="", lockdown=True, quorum_=False,
                                                     down=down))])
    s = report["summary"]
    assert (s["exit_code"], s["state"], s["quorum"], s["voters_up"], s["failure_tolerance"]) == (2, "no quorum", False,
                                                                                                 1, 0)
    assert "lockdown" in "; ".join(report["nodes"][2]["errors"])


def test_no_node_answering_is_unreachable() -> None:
    report = summarize([_probe(n, None, "UNAVAILABLE") for n in NODES])
    s = report["summary"]
    assert (s["exit_code"], s["state"], s["voters_up"], s["voters_total"]) == (3, "unreachable", 0, 3)
    assert [r["node"] for r in report["nodes"]] == ["?", "?", "?"]


def test_unsigned_answers_give_the_basic_fields() -> None:
    unsigned = [Probe(NODES[n], api.StatusResponse(node_id=n, role="leader" if n == "hq" else "follower",
                                                   leader_id="hq", term=2, has_quorum=True, voters=3))
                for n in NODES]
    report = summarize(unsigned)
    assert report["summary"]["exit_code"] == 0 and report["summary"]["signed"] is False
    assert all(r["db_used_bytes"] is None and r["last_contact_ms"] is None for r in report["nodes"])


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "quorum-status"), *args], capture_output=True,
                          text=True, timeout=60, env=env, cwd=REPO)


@pytest.mark.parametrize("args", [["-o", "xml"], ["--timeout", "0", "--endpoints", "a:1", "--ca", "x"],
                                  ["--bogus"], [], ["--endpoints", "nohost", "--ca", "x"],
                                  ["--profile", "/nonexistent.toml"]])
def test_usage_errors_exit_64(args: list[str], monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("FEDRAFT_PROFILE", raising=False)
    assert quorum.main(args) == 64
    assert "error:" in capsys.readouterr().err
    assert _verb(*args) == 64  # the fedraft verb too (2 would read as "no quorum")


def _verb(*args: str) -> int | str | None:
    try:
        return fedraft_main(["quorum-status", *args])
    except SystemExit as exc:  # argparse's errors
        return exc.code


def test_the_script_runs_from_the_repo_and_reports_unreachable_as_json(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = _run("--endpoints", "127.0.0.1:1,127.0.0.1:2", "--ca", str(ca), "--timeout", "1", "-o", "json", env=env)
    assert done.returncode == 3, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    assert doc["summary"]["state"] == "unreachable" and len(doc["nodes"]) == 2
    assert _run("--help", env=env).returncode == 0
    assert _run("-o", "xml", env=env).returncode == 64
