"""A federation made the multi-host way (decision 0015) in three separate host directories, run as processes.

Each "host" directory gets its own keys from `fedraft keygen --node`; only the `*.public.json` files go to
the assembler's directory; `fedraft init --from-public` writes the bundles, and each host copies only its
own bundle. No directory ever holds another node's private key.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from fedraft.cli.main import main as fedraft
from fedraft.client import Client
from tests.integration.cluster import SLOW_RAFT, free_base_port, wait_for

NODES = ("alpha", "beta", "gamma")


class MultiHost:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.hosts = {n: root / f"host-{n}" for n in NODES}
        self.assembler = root / "assembler"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._clients: list[Client] = []
        base = free_base_port()
        public = self.assembler / "public"
        public.mkdir(parents=True)
        for i, n in enumerate(NODES):
            assert fedraft(["keygen", "--node", n, "--out", str(self.hosts[n]),
                            "--base-port", str(base + 10 * i)]) == 0
            shutil.copy(self.hosts[n] / f"{n}.public.json", public)
        assert fedraft(["init", "--from-public", str(public), "--dir", str(self.assembler / "out")]) == 0
        for n in NODES:
            for item in (self.assembler / "out" / n).iterdir():
                target = self.hosts[n] / item.name
                if item.is_dir():
                    shutil.copytree(item, target)
                else:
                    shutil.copy2(item, target)
            with (self.hosts[n] / "node.toml").open("a") as f:  # operators tune timing in the config
                f.write("".join(f"{k} = {v}\n" for k, v in SLOW_RAFT.items()))
        self.profile = self.hosts["alpha"] / "alpha-admin.profile.toml"

    def config(self, node_id: str) -> Path:
        return self.hosts[node_id] / "node.toml"

    def start(self, node_id: str) -> None:
        log = open(self.hosts[node_id] / "node.log", "ab")  # noqa: SIM115
        self.procs[node_id] = subprocess.Popen(
            [sys.executable, "-m", "fedraft", "node", "--config", str(self.config(node_id))],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def start_all(self) -> None:
        for n in NODES:
            self.start(n)

    def reload(self, node_id: str) -> None:
        self.procs[node_id].send_signal(signal.SIGHUP)

    def client(self, profile: Path | None = None) -> Client:
        c = Client.from_profile(profile or self.profile)
        self._clients.append(c)
        return c

    def log(self, node_id: str) -> str:
        path = self.hosts[node_id] / "node.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_log(self, node_id: str, text: str, timeout: float = 30.0, count: int = 1) -> None:
        wait_for(lambda: self.log(node_id).count(text) >= count, timeout, 0.1, f"{node_id} logs {text!r}")

    def leader(self, timeout: float = 60.0) -> str:
        client = self.client()

        def find() -> str | None:
            for endpoint in client.endpoints:
                status = client.status(endpoint, timeout=2.0)
                if status.role == "leader" and not status.lockdown:
                    return status.node_id
            return None

        return wait_for(find, timeout, 0.2, "a leader")

    def close(self) -> None:
        for c in self._clients:
            c.close()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self.procs.clear()

    def logs(self) -> str:
        return "\n".join(f"--- {n} ---\n{self.log(n)[-6000:]}" for n in NODES)
