"""etcd on the same machine: 3 members on loopback, clients doing puts through the v3 HTTP/JSON gateway.

Same shape as the fedraft benchmark: each client is a thread with its own keep-alive HTTP connection
to the leader's client URL, in a spawned load-generator process, one `POST /v3/kv/put` of a 256-byte
value at a time. etcd fsyncs its WAL before it acknowledges a put. Plain HTTP (no TLS) and no
authentication: fedraft's clients pay TLS and two Ed25519 signatures per request, etcd's do not.
Timing: `--heartbeat-interval 100 --election-timeout 1000` (fedraft: heartbeat 100 ms, election 1-2 s).

Needs the `etcd` binary (Debian: `apt-get install etcd-server`); skipped with a note when it is missing.
"""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import procs
from bench.load import Factory, run_processes, summarize_run

MEMBERS = ("m0", "m1", "m2")


def _post(conn: http.client.HTTPConnection, path: str, doc: dict[str, Any]) -> dict[str, Any]:
    conn.request("POST", path, body=json.dumps(doc), headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    body = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"etcd {path}: HTTP {resp.status}: {body[:200]!r}")
    return json.loads(body)  # type: ignore[no-any-return]


def client_factory(url: str, value_size: int) -> Factory:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    value = base64.b64encode(b"v" * value_size).decode()

    def make(_idx: int) -> tuple[Callable[[str], None], Callable[[], None]]:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)

        def op(key: str) -> None:
            _post(conn, "/v3/kv/put", {"key": base64.b64encode(key.encode()).decode(), "value": value})

        return op, conn.close

    return make


class EtcdCluster:
    def __init__(self, root: Path, exe: str) -> None:
        self.root = root
        self.exe = exe
        self.procs: list[subprocess.Popen[bytes]] = []
        self.client_urls: list[str] = []

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        base = procs.free_ports(tuple(range(6)))
        self.client_urls = [f"http://127.0.0.1:{base + 2 * i}" for i in range(3)]
        peer_urls = [f"http://127.0.0.1:{base + 2 * i + 1}" for i in range(3)]
        initial = ",".join(f"{m}={u}" for m, u in zip(MEMBERS, peer_urls, strict=True))
        token = f"fedraft-bench-{base}-{time.time_ns()}"
        for m, client, peer in zip(MEMBERS, self.client_urls, peer_urls, strict=True):
            self.procs.append(procs.start(
                [self.exe, "--name", m, "--data-dir", str(self.root / m), "--listen-client-urls", client,
                 "--advertise-client-urls", client, "--listen-peer-urls", peer,
                 "--initial-advertise-peer-urls", peer, "--initial-cluster", initial,
                 "--initial-cluster-state", "new", "--initial-cluster-token", token,
                 "--heartbeat-interval", "100", "--election-timeout", "1000", "--logger", "zap",
                 "--log-level", "warn"],
                self.root / f"{m}.log"))

    def status(self, i: int) -> dict[str, Any]:
        host, port = self.client_urls[i].removeprefix("http://").rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=2)
        try:
            return _post(conn, "/v3/maintenance/status", {})
        finally:
            conn.close()

    def leader(self, timeout: float = 60.0) -> int:
        def find() -> int | None:
            for i, p in enumerate(self.procs):
                if p.poll() is not None:
                    raise procs.ChildExited(f"etcd {MEMBERS[i]} exited with {p.returncode}:\n"
                                       f"{procs.tail(self.root / f'{MEMBERS[i]}.log')}")
            for i in range(3):
                try:
                    s = self.status(i)
                except (OSError, RuntimeError, ValueError):
                    continue
                if s.get("leader") and s["leader"] == s["header"]["member_id"]:
                    return i + 1
            return None

        return procs.wait_for(find, timeout, "an etcd leader", 0.1) - 1

    def stop(self) -> dict[int, int | None]:
        codes = procs.stop_all(self.procs)
        self.procs = []
        return codes


def run(params: dict[str, Any], work: Path, log: Callable[[str], None]) -> dict[str, Any]:
    exe = shutil.which("etcd")
    if exe is None:
        note = "etcd not installed (Debian: apt-get install etcd-server); skipped"
        log(f"etcd: {note}")
        return {"system": "etcd", "skipped": note, "levels": []}
    cluster = EtcdCluster(work / "etcd", exe)
    result: dict[str, Any] = {"system": "etcd", "levels": [],
                              "config": {"heartbeat_ms": 100, "election_ms": 1000, "api": "HTTP/JSON gateway"}}
    try:
        t0 = time.monotonic()
        cluster.start()
        leader = cluster.leader()
        result["startup_s"] = round(time.monotonic() - t0, 2)
        log(f"etcd: leader {MEMBERS[leader]} after {result['startup_s']} s")
        for level in params["levels"]:
            clients = level["clients"]
            leader = cluster.leader()
            before = cluster.status(leader)
            ref = ("bench.commit_etcd", "client_factory",
                   {"url": cluster.client_urls[leader], "value_size": params["value_size"]})
            cpu = procs.CpuWindow(cluster.procs)
            raw = run_processes(ref, clients=clients, procs=params.get("client_procs", 1) or 1, ops=level["ops"],
                                warmup=params["warmup"], max_seconds=params["max_seconds"],
                                key_prefix=f"bench/c{clients}", on_start=cpu.start)
            cpu.stop()
            after = cluster.status(leader)
            row = summarize_run(raw, clients, cpu.nodes, list(MEMBERS), cpu.machine)
            row["leader"] = MEMBERS[leader]
            if after["raftTerm"] != before["raftTerm"]:
                row["term_changed"] = {"before": before["raftTerm"], "after": after["raftTerm"]}
            result["levels"].append(row)
            log(f"etcd: {clients:>3} clients: {row.get('ops_per_s', 0):>8.1f} ops/s "
                f"p50 {row.get('p50_ms', 0):.2f} ms p99 {row.get('p99_ms', 0):.2f} ms errors {row['errors']}")
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["log_tails"] = {m: procs.tail(cluster.root / f"{m}.log") for m in MEMBERS}
        log(f"etcd: FAILED {result['error']}")
    finally:
        result["exit_codes"] = list(cluster.stop().values())
        shutil.rmtree(cluster.root, ignore_errors=True)
    return result
