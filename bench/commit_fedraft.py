"""fedraft commit benchmark: 3 `fedraft node` processes on loopback, clients doing registry puts.

Each put is an Ed25519-signed envelope sent in a signed gRPC request over TLS, batched by the leader
into a signed log entry, replicated, fsynced by a majority and applied to LMDB before the client is
answered. The clients are threads, each with its own
`fedraft.client.Client`, in spawned load-generator processes (never the node processes).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import procs
from bench.load import Factory, run_processes, summarize_run

NODE_IDS = ("hq", "gpu-dc", "cpu-branch")
PORT_OFFSETS = (0, 1, 10, 11, 20, 21)  # node i: API on BASE+10*i, peers on BASE+10*i+1 (`fedraft init`)


def client_factory(profile: str, value_size: int) -> Factory:
    from fedraft.client import Client

    value = b"v" * value_size

    def make(_idx: int) -> tuple[Callable[[str], None], Callable[[], None]]:
        client = Client.from_profile(profile)

        def op(key: str) -> None:
            client.put(key, value)

        return op, client.close

    return make


class Federation:
    """A throwaway 3-node federation made with `fedraft init` and run as `fedraft node` processes."""

    def __init__(self, root: Path, raft: dict[str, int] | None = None) -> None:
        """`raft`: settings written into each node.toml's [raft] table (fedraft.config.RaftTuning)."""
        self.root = root
        self.raft = raft or {}
        self.dir = root / "fed"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.profile = self.dir / "admins" / "hq.profile.toml"
        self._client: Any = None
        self.endpoints: dict[str, str] = {}

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        base = procs.free_ports(PORT_OFFSETS)
        out = subprocess.run([sys.executable, "-m", "fedraft", "init", "--dir", str(self.dir), "--nodes", "3",
                              "--base-port", str(base), "-o", "json"], capture_output=True, text=True, timeout=120,
                             cwd=self.root, env=procs.child_env())
        if out.returncode != 0:
            raise RuntimeError(f"fedraft init failed: {out.stderr.strip() or out.stdout.strip()}")
        for node in NODE_IDS:
            cfg = self.dir / node / "node.toml"
            if self.raft:  # [raft] is the last table `fedraft init` writes
                with cfg.open("a") as f:
                    f.writelines(f"{key} = {value}\n" for key, value in sorted(self.raft.items()))
            self.procs.append(procs.start([sys.executable, "-m", "fedraft", "node", "--config", str(cfg)],
                                          self.root / f"{node}.log"))
        from fedraft.client import Client

        self._client = Client.from_profile(self.profile)
        self.endpoints = dict(zip(NODE_IDS, self._client.endpoints, strict=True))

    def status(self, node: str) -> Any:
        return self._client.status(self.endpoints[node], timeout=2.0)

    def leader(self, timeout: float = 60.0) -> str:
        def find() -> str | None:
            for p, node in zip(self.procs, NODE_IDS, strict=True):
                if p.poll() is not None:
                    raise procs.ChildExited(f"node {node} exited with {p.returncode}:\n{self.log_tail(node)}")
            for node in NODE_IDS:
                try:
                    s = self.status(node)
                except Exception:
                    continue
                if s.role == "leader" and not s.lockdown and s.has_quorum:
                    return node
            return None

        return procs.wait_for(find, timeout, "a fedraft leader", 0.1)

    def terms(self) -> dict[str, int]:
        out = {}
        for node in NODE_IDS:
            try:
                out[node] = int(self.status(node).term)
            except Exception:
                out[node] = -1
        return out

    def log_tail(self, node: str) -> str:
        return procs.tail(self.root / f"{node}.log")

    def stop(self) -> dict[int, int | None]:
        if self._client is not None:
            self._client.close()
            self._client = None
        codes = procs.stop_all(self.procs)
        self.procs = []
        return codes


def client_processes(clients: int, configured: int) -> int:
    """How many load-generator processes carry `clients` threads (`configured` 0 means the default)."""
    return max(1, min(configured, clients)) if configured > 0 else 1


def run(params: dict[str, Any], work: Path, log: Callable[[str], None]) -> dict[str, Any]:
    fed = Federation(work / "fedraft")
    result: dict[str, Any] = {"system": "fedraft", "levels": []}
    try:
        t0 = time.monotonic()
        fed.start()
        leader = fed.leader()
        result["startup_s"] = round(time.monotonic() - t0, 2)
        log(f"fedraft: leader {leader} after {result['startup_s']} s")
        ref = ("bench.commit_fedraft", "client_factory",
               {"profile": str(fed.profile), "value_size": params["value_size"]})
        for level in params["levels"]:
            clients = level["clients"]
            nprocs = level.get("client_procs") or client_processes(clients, params.get("client_procs", 0))
            leader = fed.leader()
            terms_before = fed.terms()
            cpu = procs.CpuWindow(fed.procs)
            commit0: list[int] = []

            def on_start(leader: str = leader, cpu: procs.CpuWindow = cpu, commit0: list[int] = commit0) -> None:
                commit0.append(int(fed.status(leader).commit_index))
                cpu.start()

            raw = run_processes(ref, clients=clients, procs=nprocs, ops=level["ops"], warmup=params["warmup"],
                                max_seconds=params["max_seconds"], key_prefix=f"/settings/bench/c{clients}p{nprocs}",
                                on_start=on_start)
            cpu.stop()
            entries = int(fed.status(leader).commit_index) - commit0[0]
            row = summarize_run(raw, clients, cpu.nodes, list(NODE_IDS), cpu.machine)
            row["leader"] = leader
            threads = clients // nprocs
            row["layout"] = (f"{nprocs} process{'es' if nprocs > 1 else ''} x "
                             f"{threads} thread{'s' if threads > 1 else ''}{' each' if nprocs > 1 else ''}")
            if level.get("extra"):
                row["extra"] = True  # a layout comparison, not one of the main concurrency levels
            # Raft log entries committed in the measured window: the leader batches envelopes into entries.
            row["log_entries"] = entries
            row["envelopes_per_entry"] = round(row["ops"] / entries, 2) if entries > 0 else None
            terms_after = fed.terms()
            if terms_after != terms_before:
                row["term_changed"] = {"before": terms_before, "after": terms_after}
            result["levels"].append(row)
            log(f"fedraft: {clients:>3} clients x {nprocs} proc: {row.get('ops_per_s', 0):>8.1f} ops/s "
                f"p50 {row.get('p50_ms', 0):.2f} ms p99 {row.get('p99_ms', 0):.2f} ms errors {row['errors']}")
        statuses = {n: fed.status(n) for n in NODE_IDS}
        result["final_status"] = {n: {"term": int(s.term), "commit_index": int(s.commit_index),
                                      "applied_index": int(s.applied_index)} for n, s in statuses.items()}
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["log_tails"] = {n: fed.log_tail(n) for n in NODE_IDS}
        log(f"fedraft: FAILED {result['error']}")
    finally:
        result["exit_codes"] = list(fed.stop().values())
        shutil.rmtree(fed.root, ignore_errors=True)
    return result
