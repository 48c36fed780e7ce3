"""Closed-loop load: each client is a thread with its own connection and one request in flight.

`run_threads` drives the clients of one process: every thread makes its client, does its warm-up
operations, then all start together on one signal and run until their share of the operations is
done or the time cap is reached. `run_processes` spreads the clients over spawned worker processes
(threads inside each) that start together through a cross-process barrier, so that the load
generator is never a process of the system under test and, if asked, not bound by one GIL.

A client factory is named by (module, function, kwargs) so that spawned workers can import it;
it returns `(op, close)` where `op(key)` does one acknowledged write of the key.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing as mp
import os
import queue
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

Op = Callable[[str], None]
Factory = Callable[[int], tuple[Op, Callable[[], None]]]
FactoryRef = tuple[str, str, dict[str, Any]]

SETUP_TIMEOUT_S = 120.0


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def run_threads(factory: Factory, *, clients: int, first_index: int, ops_per_client: int, warmup: int,
                max_seconds: float, key_prefix: str, gate: Callable[[], None] | None = None) -> dict[str, Any]:
    ready = threading.Barrier(clients + 1)
    go = threading.Event()
    deadline = [0.0]
    per_thread: list[dict[str, Any]] = [{} for _ in range(clients)]

    def client(k: int) -> None:
        idx = first_index + k
        out = per_thread[k]
        out.update(latencies=[], errors=0, warmup_errors=0, first_error=None, end_ns=0)
        close: Callable[[], None] = lambda: None  # noqa: E731
        try:
            op, close = factory(idx)
            for s in range(warmup):
                try:
                    op(f"{key_prefix}/w{idx}-{s}")
                except Exception as exc:
                    out["warmup_errors"] += 1
                    out["first_error"] = out["first_error"] or f"warm-up: {type(exc).__name__}: {exc}"
        except Exception as exc:
            out["errors"] += 1
            out["first_error"] = f"setup: {type(exc).__name__}: {exc}"
            ready.wait()
            return
        ready.wait()
        go.wait()
        lat = out["latencies"]
        clock = time.perf_counter_ns
        s = 0
        try:
            while s < ops_per_client and time.monotonic() < deadline[0]:
                key = f"{key_prefix}/{idx}-{s}"
                t0 = clock()
                try:
                    op(key)
                except Exception as exc:
                    out["errors"] += 1
                    out["first_error"] = out["first_error"] or f"{type(exc).__name__}: {exc}"
                else:
                    lat.append(clock() - t0)
                s += 1
        finally:
            out["end_ns"] = time.monotonic_ns()
            with contextlib.suppress(Exception):
                close()

    threads = [threading.Thread(target=client, args=(k,), name=f"bench-client-{first_index + k}", daemon=True)
               for k in range(clients)]
    for t in threads:
        t.start()
    ready.wait(timeout=SETUP_TIMEOUT_S)
    if gate is not None:
        gate()
    cpu0 = _cpu_seconds()
    start_ns = time.monotonic_ns()
    deadline[0] = time.monotonic() + max_seconds
    go.set()
    for t in threads:
        t.join()
    cpu1 = _cpu_seconds()
    latencies = [x for out in per_thread for x in out["latencies"]]
    return {
        "latencies_ns": latencies,
        "start_ns": start_ns,
        "end_ns": max((out["end_ns"] for out in per_thread), default=start_ns),
        "errors": sum(out["errors"] for out in per_thread),
        "warmup_errors": sum(out["warmup_errors"] for out in per_thread),
        "first_error": next((out["first_error"] for out in per_thread if out["first_error"]), None),
        "cpu_s": cpu1 - cpu0,
        "threads": clients,
    }


def resolve(ref: FactoryRef) -> Factory:
    module, name, kwargs = ref
    make = getattr(importlib.import_module(module), name)
    return make(**kwargs)  # type: ignore[no-any-return]


def _worker(ref: FactoryRef, barrier: Any, results: Any, kwargs: dict[str, Any]) -> None:
    try:
        out = run_threads(resolve(ref), gate=lambda: barrier.wait(SETUP_TIMEOUT_S), **kwargs)
    except BaseException:
        barrier.abort()
        results.put({"crash": traceback.format_exc()})
        return
    results.put(out)


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "latencies_ns": [x for p in parts for x in p["latencies_ns"]],
        "start_ns": min(p["start_ns"] for p in parts),
        "end_ns": max(p["end_ns"] for p in parts),
        "errors": sum(p["errors"] for p in parts),
        "warmup_errors": sum(p["warmup_errors"] for p in parts),
        "first_error": next((p["first_error"] for p in parts if p["first_error"]), None),
        "cpu_s": sum(p["cpu_s"] for p in parts),
        "threads": sum(p["threads"] for p in parts),
    }


def run_processes(ref: FactoryRef, *, clients: int, procs: int, ops: int, warmup: int, max_seconds: float,
                  key_prefix: str, on_start: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run `clients` closed-loop clients as threads spread over `procs` spawned processes.

    `on_start` runs in this process once every worker is warmed up, just before the measured window.
    """
    procs = max(1, min(procs, clients))
    ctx = mp.get_context("spawn")  # never fork a process that may hold gRPC threads
    barrier = ctx.Barrier(procs + 1)
    results = ctx.Queue()
    shares = [clients // procs + (1 if p < clients % procs else 0) for p in range(procs)]
    per_client = max(1, ops // clients)
    workers = []
    first = 0
    for share in shares:
        kwargs = {"clients": share, "first_index": first, "ops_per_client": per_client, "warmup": warmup,
                  "max_seconds": max_seconds, "key_prefix": key_prefix}
        first += share
        w = ctx.Process(target=_worker, args=(ref, barrier, results, kwargs), daemon=True)
        w.start()
        workers.append(w)
    parts: list[dict[str, Any]] = []
    try:
        with contextlib.suppress(threading.BrokenBarrierError):  # a worker crashed or timed out: it says why
            barrier.wait(SETUP_TIMEOUT_S)
        if on_start is not None:
            on_start()
        limit = time.monotonic() + max_seconds + SETUP_TIMEOUT_S
        while len(parts) < procs:
            try:
                part = results.get(timeout=max(0.1, limit - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"load workers did not report within {max_seconds + SETUP_TIMEOUT_S:.0f} s") \
                    from None
            if "crash" in part:
                raise RuntimeError("load worker failed:\n" + part["crash"])
            parts.append(part)
    finally:
        for w in workers:
            w.join(timeout=10)
            if w.is_alive():
                w.kill()
                w.join()
    out = merge(parts)
    out["processes"] = procs
    return out


def summarize_run(raw: dict[str, Any], clients: int, node_cpu_s: list[float] | None,
                  node_names: list[str] | None = None, machine_busy_s: float | None = None) -> dict[str, Any]:
    """One concurrency level's row: throughput, latency, errors and where the CPU went."""
    from bench.stats import summarize

    wall_ns = raw["end_ns"] - raw["start_ns"]
    wall_s = max(wall_ns / 1e9, 1e-9)
    row: dict[str, Any] = {"clients": clients, **summarize(raw["latencies_ns"], wall_ns),
                           "errors": raw["errors"], "warmup_errors": raw["warmup_errors"]}
    if raw["first_error"]:
        row["first_error"] = raw["first_error"][:300]
    cpu: dict[str, Any] = {"loadgen_cores": round(raw["cpu_s"] / wall_s, 2),
                           "loadgen_processes": raw.get("processes", 0)}
    if node_cpu_s is not None:
        names = node_names or [f"node{i}" for i in range(len(node_cpu_s))]
        cpu["node_cores"] = {n: round(c / wall_s, 2) for n, c in zip(names, node_cpu_s, strict=True)}
        cpu["total_cores"] = round((raw["cpu_s"] + sum(node_cpu_s)) / wall_s, 2)
        if machine_busy_s is not None:
            # Everything else the machine did meanwhile: other users' processes, kernel work, our own parent.
            cpu["machine_busy_cores"] = round(machine_busy_s / wall_s, 2)
            cpu["other_cores"] = round(max(0.0, machine_busy_s - raw["cpu_s"] - sum(node_cpu_s)) / wall_s, 2)
    row["cpu"] = cpu
    return row
