"""The physical limits beside the commit numbers: disk sync latency and Ed25519 speed (one core).

fsync: append 256 bytes to a file in the benchmark's data directory (same filesystem as the nodes'
data) and `os.fsync` it, N times (a write-ahead log's pattern); fdatasync: overwrite 256 bytes in
place and `os.fdatasync` (LMDB's pattern for its pages). Ed25519: PyNaCl sign and verify of 256-byte
messages in a loop on one thread.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.machine import machine_busy_seconds
from bench.stats import ms, percentile, rate


def sync_latency(directory: Path, n: int, *, append: bool) -> dict[str, Any]:
    path = directory / f"fsync-probe-{os.getpid()}-{int(append)}.bin"
    block = os.urandom(256)
    samples: list[int] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, block)
        os.fsync(fd)
        sync = os.fsync if append else os.fdatasync
        clock = time.perf_counter_ns
        for _ in range(n):
            t0 = clock()
            if append:
                os.write(fd, block)
            else:
                os.pwrite(fd, block, 0)
            sync(fd)
            samples.append(clock() - t0)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    samples.sort()
    return {"n": n, "p50_ms": ms(percentile(samples, 50)), "p99_ms": ms(percentile(samples, 99)),
            "max_ms": ms(samples[-1]), "per_s_sequential": rate(n, sum(samples))}


def _ops_per_second(fn: Callable[[], object], min_seconds: float) -> dict[str, Any]:
    count = 0
    start = time.perf_counter_ns()
    stop = start + int(min_seconds * 1e9)
    while True:
        for _ in range(200):
            fn()
        count += 200
        now = time.perf_counter_ns()
        if now >= stop:
            break
    per_s = rate(count, now - start)
    return {"ops": count, "ops_per_s": per_s, "us_per_op": round(1e6 / per_s, 2) if per_s else None}


def ed25519(min_seconds: float) -> dict[str, Any]:
    from nacl.signing import SigningKey

    key = SigningKey.generate()
    verify_key = key.verify_key
    message = os.urandom(256)
    signed = key.sign(message)
    signature, body = signed.signature, signed.message
    return {
        "message_bytes": 256,
        "sign": _ops_per_second(lambda: key.sign(message), min_seconds),
        "verify": _ops_per_second(lambda: verify_key.verify(body, signature), min_seconds),
    }


def run(params: dict[str, Any], work: Path, log: Callable[[str], None]) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    n = params["fsync_n"]
    busy0, own0, t0 = machine_busy_seconds(), _own_cpu(), time.monotonic()
    f = sync_latency(work, n, append=True)
    d = sync_latency(work, n, append=False)
    e = ed25519(params["crypto_seconds"])
    wall = max(time.monotonic() - t0, 1e-9)
    # Other processes' CPU meanwhile (they may also be syncing the same disk): a warning sign.
    other = round(max(0.0, (machine_busy_seconds() - busy0) - (_own_cpu() - own0)) / wall, 2)
    log(f"physical: fsync p50 {f['p50_ms']} ms p99 {f['p99_ms']} ms; fdatasync p50 {d['p50_ms']} ms "
        f"p99 {d['p99_ms']} ms; Ed25519 sign {e['sign']['ops_per_s']:.0f}/s verify {e['verify']['ops_per_s']:.0f}/s")
    return {"system": "physical", "fsync_append": f, "fdatasync_overwrite": d, "ed25519": e, "other_cores": other}


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system
