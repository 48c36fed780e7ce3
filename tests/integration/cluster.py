"""A real 3-node federation for integration tests: `fedraft node` processes on loopback."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc

from fedraft._proto.fedraft.v1 import api_pb2 as api
from fedraft.client import Client
from fedraft.federation_files import FederationLayout, create_federation

T = TypeVar("T")

# On 2 cores three node processes compete with the test for CPU: raise election timeouts.
SLOW_RAFT = {"election_min_ms": 1500, "election_max_ms": 3000, "heartbeat_ms": 150}


def wait_for(condition: Callable[[], T], timeout: float = 30.0, interval: float = 0.05, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except (grpc.RpcError, OSError) as exc:
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}; last error: {last_exc}")


def free_base_port() -> int:
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base > 60000:
            continue
        ok = True
        for i in range(3):
            for j in range(3):
                with socket.socket() as probe:
                    try:
                        probe.bind(("127.0.0.1", base + 10 * i + j))
                    except OSError:
                        ok = False
        if ok:
            return base
    raise RuntimeError("no free ports")


class Cluster:
    def __init__(self, root: Path, raft: dict[str, int] | None = None, *, sample_inventory: bool = False) -> None:
        """`sample_inventory`: each node reports its pool's sample static inventory (as `fedraft demo` does)."""
        self.root = root
        self.layout: FederationLayout = create_federation(root / "fed", nodes=3, base_port=free_base_port(),
                                                          raft={**SLOW_RAFT, **(raft or {})},
                                                          sample_inventory=sample_inventory)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.node_ids = [n.node_id for n in self.layout.nodes]
        self.profile = self.layout.profiles["hq"]
        self._clients: list[Client] = []

    def config(self, node_id: str) -> Path:
        return self.layout.node_configs[node_id]

    def endpoint(self, node_id: str) -> str:
        return self.client().endpoints[self.node_ids.index(node_id)]

    def start(self, node_id: str, *extra: str, env: dict[str, str] | None = None) -> None:
        """`env`: extra environment variables for this node process (e.g. FEDRAFT_FAILPOINTS)."""
        log = open(self.config(node_id).parent / "node.log", "ab")  # noqa: SIM115
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.procs[node_id] = subprocess.Popen(
            [sys.executable, "-m", "fedraft", "node", "--config", str(self.config(node_id)), *extra],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)

    def start_all(self) -> None:
        for n in self.node_ids:
            self.start(n)

    def kill(self, node_id: str) -> None:
        proc = self.procs.pop(node_id)
        proc.kill()
        proc.wait()

    def terminate(self, node_id: str, timeout: float = 15.0) -> int:
        proc = self.procs.pop(node_id)
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout)

    def pause(self, node_id: str) -> None:
        self.procs[node_id].send_signal(signal.SIGSTOP)

    def resume(self, node_id: str) -> None:
        self.procs[node_id].send_signal(signal.SIGCONT)

    def wipe(self, node_id: str) -> None:
        data = self.config(node_id).parent / "data"
        shutil.rmtree(data)
        data.mkdir()

    def client(self, **kw: Any) -> Client:
        c = Client.from_profile(self.profile, **kw)
        self._clients.append(c)
        return c

    def status(self, node_id: str, digest: bool = False) -> api.StatusResponse:
        return self.client().status(self.endpoint(node_id), include_digest=digest, timeout=2.0)

    def leader(self, timeout: float = 45.0, among: list[str] | None = None) -> str:
        nodes = among or [n for n in self.node_ids if n in self.procs]

        def find() -> str | None:
            for n in nodes:
                with contextlib.suppress(grpc.RpcError):
                    s = self.status(n)
                    if s.role == "leader" and not s.lockdown:
                        return n
            return None

        return wait_for(find, timeout, 0.1, "a leader")

    def wait_applied(self, index: int, nodes: list[str] | None = None, timeout: float = 45.0) -> None:
        for n in nodes or list(self.procs):
            wait_for(lambda n=n: self.status(n).applied_index >= index, timeout, 0.1, f"{n} applied {index}")

    def close(self) -> None:
        for c in self._clients:
            c.close()
        for n in list(self.procs):
            proc = self.procs[n]
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            proc.wait()
        self.procs.clear()

    def logs(self) -> str:
        out = []
        for n in self.node_ids:
            path = self.config(n).parent / "node.log"
            if path.exists():
                out.append(f"--- {n} ---\n" + path.read_text(errors="replace")[-8000:])
        return "\n".join(out)
