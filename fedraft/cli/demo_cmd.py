"""`fedraft demo`: a local 3-node federation (HQ, GPU datacenter, CPU branch) on embedded defaults.

It writes a federation directory (keys, CA, certificates, genesis, configs, sample static inventories),
starts the three nodes as real processes, waits for a leader, writes sample registry entries through
the signed log, pairs the three pools, submits sample workloads that the GPU-aware scheduler places
inside apply, and shows the cluster. `--once` stops everything and exits; otherwise it runs until Ctrl-C.
`--chaos` then kills and restarts nodes, showing the failover live (fedraft.cli.demo_chaos).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

EXAMPLE = """example:
  fedraft demo --once                 # start, write, show, stop (what the README runs)
  fedraft demo                        # keep running until Ctrl-C
  fedraft demo --dir ./demo-fed       # keep the federation directory for later use
  fedraft demo --chaos                # then kill the leader, later a follower (SIGKILL), restart them, live
  fedraft demo --chaos --once         # one leader round and one follower round, then stop (CI)
"""

# (workload id, gpus, GPU memory floor MiB, CPU millicores, RAM MiB, priority, preferred region)
SAMPLE_WORKLOADS = [
    ("llm-finetune", 8, 80_000, 16_000, 65_536, 5, ""),
    ("vision-inference", 1, 20_000, 2_000, 8_192, 3, "hq"),
    ("embedding-batch", 2, 40_000, 4_000, 16_384, 1, ""),
    ("etl-nightly", 0, 0, 8_000, 16_384, 0, ""),
    ("report-builder", 0, 0, 2_000, 4_096, 0, "branch-west"),
]
PAIRINGS = [("hq", "gpu-dc"), ("hq", "cpu-branch"), ("gpu-dc", "cpu-branch")]

SAMPLE_ENTRIES = [
    ("/routes/inference", b"gpu-dc:8443"),
    ("/routes/batch", b"cpu-branch:9000"),
    ("/routes/portal", b"hq:443"),
    ("/settings/placement-mode", b"gpu-first"),
    ("/settings/maintenance-window", b"sun 02:00-04:00 UTC"),
]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="run a local 3-node federation with sample data",
                              description=__doc__, epilog=EXAMPLE,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", type=Path, default=None, help="federation directory (default: a temporary one)")
    p.add_argument("--base-port", type=int, default=0, help="first port (default: find free ports)")
    p.add_argument("--once", action="store_true", help="stop the nodes and exit after showing the cluster")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a leader (default 60)")
    p.add_argument("--chaos", action="store_true",
                   help="kill (SIGKILL) and restart the leader, then a follower, showing the failover")
    p.set_defaults(func=run)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_base_port(first: int = 17400, last: int = 32700) -> int:
    """A free block of ports below Linux's ephemeral range, starting the search at a random block so
    that two demos started at once (or one restarting a node another's search just found free) rarely
    pick the same ports."""
    slots = list(range(first, last, 100))
    start = random.randrange(len(slots))
    for base in slots[start:] + slots[:start]:
        if all(_port_free(base + 10 * i + j) for i in range(3) for j in range(3)):
            return base
    raise OSError("no free ports found for the demo")


class DemoCluster:
    def __init__(self, directory: Path, base_port: int) -> None:
        from fedraft.federation_files import create_federation

        self.dir = directory
        self.layout = create_federation(directory, nodes=3, base_port=base_port, force=True,
                                        raft={"election_min_ms": 1500, "election_max_ms": 3000},
                                        sample_inventory=True)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        for node_id in sorted(self.layout.node_configs):
            self.start_node(node_id)

    def start_node(self, node_id: str) -> None:
        config = self.layout.node_configs[node_id]
        with open(config.parent / "node.log", "ab") as log:  # the child keeps its own descriptor
            self.procs[node_id] = subprocess.Popen(
                [sys.executable, "-m", "fedraft", "node", "--config", str(config)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def kill(self, node_id: str) -> None:
        """SIGKILL, as a crash would (the chaos demo); the node's data stays for its restart."""
        proc = self.procs[node_id]
        proc.kill()
        proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def dead(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is not None]


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(stderr=False)
    owns_dir = args.dir is None
    directory = Path(tempfile.mkdtemp(prefix="fedraft-demo-")) if owns_dir else args.dir
    base = args.base_port or _free_base_port()
    cluster = DemoCluster(directory, base)
    console.print(f"[bold]fedraft demo[/] — federation in {directory} (cluster id "
                  f"{cluster.layout.cluster_id.hex()[:16]}…), ports {base}-{base + 22}")
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    cluster.start()
    try:
        return _drive(console, cluster, args, stop)
    finally:
        with console.status("stopping the nodes"):
            cluster.stop()
        console.print("all nodes stopped")
        if owns_dir and args.once:
            import shutil

            shutil.rmtree(directory, ignore_errors=True)


def _drive(console: Any, cluster: DemoCluster, args: argparse.Namespace, stop: threading.Event) -> int:
    from rich.table import Table

    from fedraft.client import Client

    profile = cluster.layout.profiles["hq"]
    with Client.from_profile(profile, timeout=args.timeout) as client:
        leader = _wait_for_leader(console, cluster, client, args.timeout)
        if leader is None:
            return 1
        console.print(f"leader elected: [bold green]{leader}[/]")
        table = Table(title="registry writes (signed by the HQ admin, fsynced on a quorum)")
        for col in ("key", "value", "version", "index", "ms"):
            table.add_column(col)
        for key, value in SAMPLE_ENTRIES:
            started = time.monotonic()
            result = client.put(key, value)
            table.add_row(key, value.decode(), str(result.record.version), str(result.index),
                          f"{(time.monotonic() - started) * 1000:.1f}")
        console.print(table)
        read = client.get("/routes/inference")
        console.print(f"linearizable read of /routes/inference → {read.record.value.decode()!r} "
                      f"(applied index {read.applied_index}, served by {read.served_by})")
        index = _place_samples(console, cluster, client, args.timeout)
        if index is None:
            return 1
        _wait_caught_up(client, max(index, read.applied_index))
        _show_status(console, client)
        if args.chaos:
            from fedraft.cli.demo_chaos import run_chaos

            code = run_chaos(console, cluster, client, stop, args.timeout, args.once)
            if code == 0 and not stop.is_set():
                _show_status(console, client)
            return code
        if args.once:
            return 0
        console.print("[dim]running; Ctrl-C stops the federation. Try: "
                      f"FEDRAFT_PROFILE={profile} fedraft status[/]")
        while not stop.wait(1.0):
            if cluster.dead():
                console.print(f"[red]node(s) exited: {', '.join(cluster.dead())}[/]")
                return 1
    return 0


def _place_samples(console: Any, cluster: DemoCluster, client: Any, timeout: float) -> int | None:
    """Wait for every pool's inventory, pair the pools, submit the sample workloads, show placements."""
    from rich.table import Table

    from fedraft.client import Client
    from fedraft.domain.placement.model import Trust, WorkloadSpec

    deadline = time.monotonic() + timeout
    with console.status("waiting for the three pools to report their inventories…"):
        while True:
            pools = client.list("pools")
            if len(pools) == 3 and all(p.workers for p in pools):
                break
            if time.monotonic() > deadline:
                console.print("[red]the pools did not report their inventories in time; see node.log[/]")
                return None
            time.sleep(0.2)
    for a, b in PAIRINGS:
        profiles = cluster.layout.profiles
        with Client.from_profile(profiles[a]) as offerer, Client.from_profile(profiles[b]) as acceptor:
            offerer.pair_offer(b, Trust.HIGH)
            acceptor.pair_accept(a)
    console.print("pools paired (each pairing offered by one admin and accepted by the other): "
                  + ", ".join(f"{a}↔{b}" for a, b in PAIRINGS))
    table = Table(title="workloads placed by the scheduler inside apply (same decision on every node)")
    for col in ("workload", "gpus", "pool", "worker", "GPU units", "phase"):
        table.add_column(col)
    index = 0
    for name, gpus, mem, cpu, ram, prio, region in SAMPLE_WORKLOADS:
        spec = WorkloadSpec(gpus=gpus, gpu_memory_mb=mem, cpu_millis=cpu, ram_mb=ram, priority=prio,
                            preferred_region=region)
        result = client.submit(name, spec)
        p = result.placement
        index = max(index, result.index)
        units = f"{p.gpus[0]} … {p.gpus[-1]}" if len(p.gpus) > 2 else ", ".join(p.gpus)
        table.add_row(name, str(gpus), p.pool or "-", p.worker or "-", units or "-",
                      p.phase + (f" ({result.message})" if result.message else ""))
    console.print(table)
    return index


def _wait_for_leader(console: Any, cluster: DemoCluster, client: Any, timeout: float) -> str | None:
    import grpc

    deadline = time.monotonic() + timeout
    with console.status("starting 3 nodes and electing a leader…"):
        while time.monotonic() < deadline:
            if cluster.dead():
                console.print(f"[red]node(s) exited during start-up: {', '.join(cluster.dead())}; "
                              f"see {cluster.dir}/<node>/node.log[/]")
                return None
            for endpoint in client.endpoints:
                with contextlib.suppress(grpc.RpcError):
                    status = client.status(endpoint, timeout=0.5)
                    if status.role == "leader" and not status.lockdown:
                        return str(status.node_id)
            time.sleep(0.2)
    console.print(f"[red]no leader within {timeout:.0f} s; see {cluster.dir}/<node>/node.log[/]")
    return None


def _wait_caught_up(client: Any, index: int, timeout: float = 10.0) -> None:
    """Let the followers apply what the leader did, so the digests shown compare like for like."""
    import grpc

    deadline = time.monotonic() + timeout
    pending = list(client.endpoints)
    while pending and time.monotonic() < deadline:
        with contextlib.suppress(grpc.RpcError):
            if client.status(pending[0], signed=False, timeout=0.5).applied_index >= index:
                pending.pop(0)
                continue
        time.sleep(0.05)


def _show_status(console: Any, client: Any) -> None:
    import grpc
    from rich.table import Table

    table = Table(title="cluster status")
    for col in ("node", "address", "role", "term", "commit", "applied", "state digest"):
        table.add_column(col)
    for endpoint in client.endpoints:
        try:
            s = client.status(endpoint, include_digest=True)
        except grpc.RpcError as exc:
            table.add_row("?", endpoint, f"unreachable ({exc.code().name})", "", "", "", "")
            continue
        table.add_row(s.node_id, endpoint, s.role, str(s.term), str(s.commit_index), str(s.applied_index),
                      s.state_digest.hex()[:16])
    console.print(table)


