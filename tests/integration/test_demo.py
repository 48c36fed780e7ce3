"""`fedraft demo` end to end as a user runs it (real node processes): the bounded demo, the chaos demo's
failover milestones, and Ctrl-C stopping every node it started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

from tests.integration.cluster import wait_for

DEMO = [sys.executable, "-m", "fedraft", "demo"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}


def _node_processes(directory: Path) -> list[int]:
    """Processes whose command line names the demo's federation directory (its nodes)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(directory) in cmdline and " node " in cmdline:
            found.append(int(entry.name))
    return found


def test_demo_once_writes_places_and_stops(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    done = subprocess.run([*DEMO, "--once", "--dir", str(directory)], capture_output=True, text=True,
                          timeout=240, env=ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "leader elected:" in done.stdout and "cluster status" in done.stdout
    assert "workloads placed by the scheduler" in done.stdout and "all nodes stopped" in done.stdout
    assert _node_processes(directory) == []


def test_chaos_once_kills_the_leader_then_a_follower_and_everything_recovers(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    done = subprocess.run([*DEMO, "--chaos", "--once", "--dir", str(directory)], capture_output=True, text=True,
                          timeout=420, env=ENV)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    chaos = [line for line in out.splitlines() if line.startswith("chaos:")]
    killed = re.search(r"^chaos: killed the leader (\S+) \(SIGKILL, term (\d+)\)", out, re.M)
    assert killed, chaos
    victim, term = killed.group(1), int(killed.group(2))
    elected = re.search(r"^chaos: new leader (\S+) elected after ([\d.]+) s \(term (\d+)\)", out, re.M)
    assert elected and elected.group(1) != victim and int(elected.group(3)) > term, chaos
    # every sample pool holds some of the sample workloads, so the dead leader's pool always has work to move
    assert re.search(r"^chaos: pool \S+ is DOWN; the scheduler re-placed its \d+ workload", out, re.M), chaos
    assert re.search(rf"^chaos: {re.escape(victim)} rejoined and caught up \(applied index \d+", out, re.M), chaos
    follower = re.search(r"^chaos: killed the follower (\S+) \(SIGKILL\)", out, re.M)
    assert follower and follower.group(1) != elected.group(1), chaos
    assert re.search(r"^chaos: a write committed with 2 of 3 nodes up", out, re.M), chaos
    assert re.search(rf"^chaos: {re.escape(follower.group(1))} rejoined and caught up", out, re.M), chaos
    assert chaos[-1] == "chaos: done: every node is back and caught up"
    # in this order
    order = ["killed the leader", "new leader", "is DOWN", f"{victim} rejoined", "killed the follower",
             "a write committed", f"{follower.group(1)} rejoined", "done"]
    at = -1
    for step in order:
        at = next((i for i, line in enumerate(chaos) if i > at and step in line), len(chaos))
        assert at < len(chaos), (step, chaos)
    assert "all nodes stopped" in out
    assert _node_processes(directory) == []


def test_ctrl_c_during_chaos_stops_every_node(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    proc = subprocess.Popen([*DEMO, "--chaos", "--dir", str(directory)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=ENV)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()
    try:
        # mid-round: the leader is dead and a new one was elected; the dead node is not restarted yet
        wait_for(lambda: any(line.startswith("chaos: new leader") for line in lines), timeout=240,
                 what="the chaos demo to kill its leader")
        assert len(_node_processes(directory)) == 2
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    assert "all nodes stopped" in "".join(lines)
    assert _node_processes(directory) == []
