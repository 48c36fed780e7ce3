"""One node at a time: kill -9, wipe, restart (plain or --rejoin) a benchmark federation's nodes.

Used by the failover and recovery benchmarks. The nodes are the same `fedraft node` processes as in the
commit benchmark (bench.commit_fedraft.Federation), with default Raft timing unless `raft` overrides it.
"""

from __future__ import annotations

import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench import procs
from bench.commit_fedraft import NODE_IDS, Federation


class ControlledFederation(Federation):
    """A Federation whose nodes the benchmark kills and restarts; `down` holds the nodes it killed."""

    def __init__(self, root: Path, raft: dict[str, int] | None = None) -> None:
        super().__init__(root, raft)
        self.down: set[str] = set()

    def up(self) -> list[str]:
        return [n for n in NODE_IDS if n not in self.down]

    def data_dir(self, node: str) -> Path:
        return self.dir / node / "data"  # `fedraft init` writes data_dir = "data"

    def _check_alive(self) -> None:
        for node in self.up():
            p = self.procs[NODE_IDS.index(node)]
            if p.poll() is not None:
                raise procs.ChildExited(f"node {node} exited with {p.returncode}:\n{self.log_tail(node)}")

    def leader(self, timeout: float = 60.0) -> str:
        """The node that reports itself leader with a quorum and no lockdown, among the nodes up."""

        def find() -> str | None:
            self._check_alive()
            for node in self.up():
                try:
                    s = self.status(node)
                except Exception:
                    continue
                if s.role == "leader" and not s.lockdown and s.has_quorum:
                    return node
            return None

        return procs.wait_for(find, timeout, "a fedraft leader", 0.05)

    def kill(self, node: str) -> float:
        """SIGKILL the node; returns the monotonic time taken just before the signal was sent."""
        p = self.procs[NODE_IDS.index(node)]
        t0 = time.monotonic()
        p.send_signal(signal.SIGKILL)
        p.wait()
        self.down.add(node)
        return t0

    def wipe(self, node: str) -> None:
        """Delete the node's data directory (a lost disk); it must then start with --rejoin (SPEC D5)."""
        if node not in self.down:
            raise RuntimeError(f"wipe {node}: kill it first")
        data = self.data_dir(node)
        shutil.rmtree(data)
        data.mkdir(mode=0o700)

    def restart(self, node: str, *, rejoin: bool = False) -> float:
        """Start the killed node again; returns the monotonic time just before the process was started."""
        if node not in self.down:
            raise RuntimeError(f"restart {node}: it is running")
        cfg = self.dir / node / "node.toml"
        argv = [sys.executable, "-m", "fedraft", "node", "--config", str(cfg), *(["--rejoin"] if rejoin else [])]
        t0 = time.monotonic()
        self.procs[NODE_IDS.index(node)] = procs.start(argv, self.root / f"{node}.log")
        self.down.discard(node)
        return t0

    def wait_caught_up(self, node: str, timeout: float = 60.0) -> Any:
        """Wait until `node` follows the leader and has applied the leader's commit index; its last status."""

        def caught_up() -> Any:
            self._check_alive()
            leader = self.leader(timeout)
            target = int(self.status(leader).commit_index)
            s = self.status(node)
            return s if s.leader_id == leader and int(s.applied_index) >= target else None

        return procs.wait_for(caught_up, timeout, f"{node} to catch up with the leader", 0.05)
