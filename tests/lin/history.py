"""Recording histories of registry operations from concurrent clients, for tests/lin/checker.py.

`History` is the thread-safe log of invocations and completions (monotonic clock). `Workload` runs
threads, each with its own fedraft Client, doing random put/get/cas/delete on a few shared keys; every
operation is recorded as ok (with its output), fail (definitely not applied) or info (unknown).
Writes carry unique values, so a read names the write it saw.

A thread whose operation ended in `info` continues as a new process (Jepsen's rule: a process with
an operation of unknown outcome never invokes another one).
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.client import Client, RequestFailed
from fedraft.domain.outcome import Code
from tests.lin.checker import Op


class History:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ops: list[Op] = []
        self._processes = itertools.count()

    def new_process(self) -> int:
        with self._lock:
            return next(self._processes)

    def invoke(self, process: int, kind: str, key: str, *, value: bytes | None = None,
               expected: int | None = None) -> Op:
        op = Op(process, kind, key, time.monotonic(), outcome="pending", value=value, expected=expected)
        with self._lock:
            op.id = len(self.ops)
            self.ops.append(op)
        return op

    @staticmethod
    def ok(op: Op, output: tuple[Any, ...]) -> None:
        op.complete, op.outcome, op.output = time.monotonic(), "ok", output

    @staticmethod
    def fail(op: Op) -> None:
        op.complete, op.outcome = time.monotonic(), "fail"

    @staticmethod
    def info(op: Op) -> None:
        op.complete, op.outcome = None, "info"

    def counts(self) -> dict[str, int]:
        with self._lock:
            out = {"ok": 0, "fail": 0, "info": 0, "pending": 0}  # pending: invoked, not completed yet
            for op in self.ops:
                out[op.outcome] += 1
            return out


def _current(record: pb.RegistryRecord | None) -> tuple[bytes, int] | None:
    if record is None or not record.version:
        return None
    return bytes(record.value), int(record.version)


def output_of(kind: str, result: pb.Result) -> tuple[Any, ...] | None:
    """The checker's output for an applied write result; None if the code says nothing definite."""
    code = Code(result.code) if result.code in Code._value2member_map_ else None
    if code == Code.OK:
        if kind == "delete":
            return ("ok", (bytes(result.deleted.value), int(result.deleted.version)))
        return ("ok", int(result.record.version))
    if code == Code.FAILED_PRECONDITION:
        return ("mismatch", _current(result.record if result.HasField("record") else None))
    if code == Code.NOT_FOUND and kind == "delete":
        return ("absent",)
    return None


# Refusals from the API that mean the request never reached the log.
DEFINITE = {"INVALID_ARGUMENT", "PERMISSION_DENIED", "UNAUTHENTICATED", "RESOURCE_EXHAUSTED"}


def perform(client: Client, history: History, process: int, kind: str, key: str, value: bytes | None,
            expected: int | None) -> Op:
    """Run one operation through `client` and record it."""
    op = history.invoke(process, kind, key, value=value, expected=expected)
    try:
        if kind == "get":
            got = client.get(key)
            History.ok(op, ("found", bytes(got.record.value), int(got.record.version)) if got.found else ("absent",))
            return op
        if kind == "put":
            assert value is not None
            result = client.put(key, value, check=False)
        elif kind == "cas":
            assert value is not None and expected is not None
            result = client.compare_and_set(key, value, expected, check=False)
        else:
            result = client.delete(key, expected, check=False)
    except RequestFailed as exc:
        code = getattr(exc.code, "name", str(exc.code))
        (History.fail if code in DEFINITE else History.info)(op)
        return op
    except Exception:  # Unavailable after retries, a deadline, a dropped connection: unknown
        History.info(op)
        return op
    output = output_of(kind, result)
    if output is None:
        History.info(op) if kind != "get" else History.fail(op)
    else:
        History.ok(op, output)
    return op


@dataclass
class Acked:
    """Writes the federation acknowledged, for the "no acknowledged write lost" check."""

    versions: dict[str, int] = field(default_factory=dict)  # key -> highest acknowledged version
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, key: str, version: int) -> None:
        with self.lock:
            self.versions[key] = max(version, self.versions.get(key, 0))


class Workload:
    """Concurrent clients: `threads` workers on `keys` (random ops), plus put-only durability keys.

    Every worker has its own Client built by `make_client`. Besides the checked keys, each worker
    writes its own append-only keys (`/routes/durable/<worker>/<n>`, puts only): every acknowledged
    one must be readable afterwards at a version at least the acknowledged one.
    """

    def __init__(self, make_client: Callable[[], Client], keys: list[str], *, threads: int = 4, seed: int = 0,
                 max_ops_per_key: int = 300, durable_every: int = 3, pause_s: float = 0.0) -> None:
        self.make_client = make_client
        self.keys = keys
        self.threads = threads
        self.seed = seed
        self.max_ops = max_ops_per_key * len(keys)
        self.durable_every = durable_every
        self.pause_s = pause_s
        self.history = History()
        self.acked = Acked()
        self.durable_unknown: set[str] = set()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        self._counter = itertools.count()
        self._issued = 0
        self._issued_lock = threading.Lock()

    def start(self) -> None:
        for w in range(self.threads):
            t = threading.Thread(target=self._run, args=(w,), name=f"lin-worker-{w}", daemon=True)
            t.start()
            self._workers.append(t)

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(timeout)
        alive = [t.name for t in self._workers if t.is_alive()]
        assert not alive, f"workers still running: {alive}"
        assert not self._errors, self._errors

    def wait_ops(self, count: int, timeout: float = 60.0) -> None:
        """Wait until `count` more operations completed (see `completed`) than when called."""
        start = self.completed()
        deadline = time.monotonic() + timeout
        while self.completed() < start + count:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {self.completed() - start} of {count} operations completed "
                                     f"in {timeout} s ({self.history.counts()})")
            self._stop.wait(0.05)

    def completed(self) -> int:
        """Operations completed with an output, on checked keys and acknowledged put-only writes."""
        with self.acked.lock:
            durable = len(self.acked.versions)
        return durable + sum(1 for op in list(self.history.ops) if op.outcome == "ok")

    def _take(self) -> bool:
        with self._issued_lock:
            if self._issued >= self.max_ops:
                return False
            self._issued += 1
            return True

    def _run(self, worker: int) -> None:
        rng = random.Random(self.seed * 1000 + worker)
        try:
            client = self.make_client()
        except BaseException as exc:  # surfaced by stop()
            self._errors.append(exc)
            return
        process = self.history.new_process()
        durable_n = 0
        try:
            for i in itertools.count():
                if self._stop.is_set():
                    break
                durable = bool(self.durable_every) and i % self.durable_every == self.durable_every - 1
                if durable or not self._take():
                    # Once the checked keys' budget is spent, only put-only keys: progress stays visible.
                    key = f"/routes/durable/{worker}/{durable_n}"
                    durable_n += 1
                    self._durable_put(client, key, f"w{worker}-{durable_n}".encode())
                    if self.pause_s:
                        self._stop.wait(rng.uniform(0, self.pause_s))
                    continue
                key = rng.choice(self.keys)
                kind = rng.choices(("get", "put", "cas", "delete"), (4, 3, 3, 1))[0]
                value = f"{worker}-{next(self._counter)}".encode() if kind in ("put", "cas") else None
                expected = None
                if kind == "cas":
                    expected = rng.randint(0, 3)
                elif kind == "delete" and rng.random() < 0.5:
                    expected = rng.randint(1, 3)
                op = perform(client, self.history, process, kind, key, value, expected)
                if op.outcome == "info":
                    process = self.history.new_process()
                if self.pause_s:
                    self._stop.wait(rng.uniform(0, self.pause_s))
        except BaseException as exc:
            self._errors.append(exc)
        finally:
            client.close()

    def _durable_put(self, client: Client, key: str, value: bytes) -> None:
        try:
            result = client.put(key, value, check=False)
        except Exception:
            self.durable_unknown.add(key)
            return
        if result.code == Code.OK:
            self.acked.note(key, int(result.record.version))
        else:
            self.durable_unknown.add(key)


def lost_writes(acked: Acked, read: Callable[[str], int]) -> list[str]:
    """Acknowledged keys whose version read now (0: missing) is below the acknowledged one."""
    lost = []
    for key, version in sorted(acked.versions.items()):
        got = read(key)
        if got < version:
            lost.append(f"{key}: acknowledged version {version}, read {got or 'nothing'}")
    return lost
