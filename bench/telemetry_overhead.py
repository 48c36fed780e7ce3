"""A/B of OpenTelemetry tracing cost: two 3-node federations on this machine, one with `[telemetry]`
off (the default) and one exporting every span and metric with the console exporter (into node.log),
measured in alternating windows of signed, durable puts so background load hits both alike.

    python -m bench.telemetry_overhead [--windows 4] [--ops 200] [--clients 1]

Also times the hooks a disabled node and a client without a recording span pay per call. Prints a
summary; nothing is asserted (docs/decisions/0014-telemetry.md quotes a run).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import timeit
from pathlib import Path
from typing import Any

from fedraft.cli.demo_cmd import DemoCluster, _free_base_port
from fedraft.client import Client

ON = '\n[telemetry]\nexporter = "console"\nmetrics_interval_ms = 10000\n'


def _cluster(root: Path, start_port: int, telemetry: bool) -> DemoCluster:
    cluster = DemoCluster(root, _free_base_port(start_port))
    if telemetry:
        for config in cluster.layout.node_configs.values():
            config.write_text(config.read_text() + ON)
    cluster.start()
    return cluster


def _leader_client(cluster: DemoCluster) -> Client:
    client = Client.from_profile(cluster.layout.profiles["hq"], timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            client.put("/settings/bench-warmup", b"x")
            return client
        except Exception:
            time.sleep(0.5)
    raise RuntimeError("no leader")


def _window(client: Client, ops: int, clients: int, tag: str) -> tuple[list[float], float]:
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(n: int, k: int) -> None:
        mine = []
        for i in range(n):
            started = time.perf_counter()
            client.put(f"/settings/bench-{tag}-{k}-{i % 50}", b"v")
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(ops // clients, k)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, len(latencies) / (time.perf_counter() - started)


def _hook_costs() -> dict[str, float]:
    from fedraft.telemetry import client_span, trace_headers

    def span() -> None:
        with client_span("Propose"):
            pass

    n = 20_000
    return {"trace_headers_us": timeit.timeit(trace_headers, number=n) / n * 1e6,
            "client_span_us": timeit.timeit(span, number=n) / n * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--ops", type=int, default=200)
    parser.add_argument("--clients", type=int, default=1)
    args = parser.parse_args()
    print("client hooks without a recording span (per call):",
          ", ".join(f"{k} {v:.2f}" for k, v in _hook_costs().items()))
    with tempfile.TemporaryDirectory(prefix="fedraft-otel-bench-") as tmp:
        off = _cluster(Path(tmp) / "off", 21000, telemetry=False)
        on = _cluster(Path(tmp) / "on", 23000, telemetry=True)
        results: dict[str, dict[str, list[Any]]] = {m: {"lat": [], "rate": []} for m in ("off", "on")}
        try:
            clients = {"off": _leader_client(off), "on": _leader_client(on)}
            for w in range(args.windows):
                for mode in ("off", "on") if w % 2 == 0 else ("on", "off"):
                    lat, rate = _window(clients[mode], args.ops, args.clients, f"{mode}{w}")
                    results[mode]["lat"].extend(lat)
                    results[mode]["rate"].append(rate)
                    print(f"window {w} {mode:>3}: p50 {statistics.median(lat) * 1000:.2f} ms, {rate:.0f} puts/s")
            for c in clients.values():
                c.close()
        finally:
            off.stop()
            on.stop()
    for mode, r in results.items():
        lat = sorted(r["lat"])
        print(f"{mode:>3}: {len(lat)} puts, {args.clients} client(s): p50 {statistics.median(lat) * 1000:.2f} ms, "
              f"p99 {lat[int(len(lat) * 0.99) - 1] * 1000:.2f} ms, "
              f"median window {statistics.median(r['rate']):.0f} puts/s")


if __name__ == "__main__":
    main()
