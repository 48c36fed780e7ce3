"""pysyncobj baseline: 3 processes each running `pysyncobj.SyncObj` with its own TCP transport and file
journal, holding a `ReplDict`; the clients are threads in the leader's process calling
`d.set(key, value, sync=True)`.

pysyncobj has no client protocol, so its clients skip the client-to-leader RPC hop that fedraft's
pay, and nothing is signed. Its file journal (pysyncobj/journal.py, 0.3.17) writes entries into an
mmap and never calls msync/fsync while running (`FileJournal.flush` exists but nothing calls it;
only `_destroy` msyncs at shutdown); its meta file (term, vote, commit index) is written with
`flush()` + rename, without fsync. An acknowledged write survives kill -9, not a power cut.

Timing matches fedraft's defaults (fedraft.config.RaftTuning): election 1.0-2.0 s, heartbeat
(appendEntriesPeriod) 0.1 s, tick 0.02 s, compaction after 5000 entries or 600 s, no fork.
Two variants run: `appendEntriesUseBatch=True` (pysyncobj's default: the leader sends new entries
with the next heartbeat, at most every appendEntriesPeriod) and `False` (entries are sent at once,
as fedraft configures its engine).

Run as `python -m bench.commit_pysyncobj --self ADDR --peers A,B --dir D --batch 0|1`, a node reads
one JSON command per line on stdin and answers one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import procs
from bench.load import run_threads, summarize_run

VARIANTS = (("pysyncobj", True), ("pysyncobj-nobatch", False))
TIMING = {"autoTickPeriod": 0.02, "raftMinTimeout": 1.0, "raftMaxTimeout": 2.0, "appendEntriesPeriod": 0.1,
          "connectionTimeout": 3.5, "leaderFallbackTimeout": 2.0, "logCompactionMinEntries": 5000,
          "logCompactionMinTime": 600}


# ----- the node process -----
def node_main(argv: list[str]) -> None:
    from pysyncobj import SyncObj, SyncObjConf
    from pysyncobj.batteries import ReplDict

    ap = argparse.ArgumentParser(prog="bench.commit_pysyncobj")
    ap.add_argument("--self", dest="self_addr", required=True)
    ap.add_argument("--peers", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--batch", type=int, choices=(0, 1), required=True)
    args = ap.parse_args(argv)
    data = Path(args.dir)
    data.mkdir(parents=True, exist_ok=True)
    conf = SyncObjConf(journalFile=str(data / "journal.bin"), fullDumpFile=str(data / "dump.bin"),
                       appendEntriesUseBatch=bool(args.batch), useFork=False, dynamicMembershipChange=False,
                       **TIMING)
    d = ReplDict()
    obj = SyncObj(args.self_addr, args.peers.split(","), conf=conf, consumers=[d])

    def factory(value_size: int) -> Callable[[int], tuple[Callable[[str], None], Callable[[], None]]]:
        value = b"v" * value_size

        def make(_idx: int) -> tuple[Callable[[str], None], Callable[[], None]]:
            def op(key: str) -> None:
                d.set(key, value, sync=True, timeout=30)
            return op, lambda: None
        return make

    def status() -> dict[str, Any]:
        s = obj.getStatus()
        return {"leader": bool(obj._isLeader()), "ready": bool(obj.isReady()), "term": int(s["raft_term"]),
                "commit_index": int(s["commit_idx"]), "has_quorum": bool(obj.hasQuorum)}

    out = sys.stdout
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "status":
            reply: dict[str, Any] = status()
        elif cmd["cmd"] == "run":
            def gate() -> None:  # tell the benchmark the measured window starts (it samples CPU then)
                out.write('{"started": true}\n')
                out.flush()

            reply = run_threads(factory(cmd["value_size"]), clients=cmd["clients"], first_index=0,
                                ops_per_client=cmd["ops_per_client"], warmup=cmd["warmup"],
                                max_seconds=cmd["max_seconds"], key_prefix=cmd["key_prefix"], gate=gate)
        elif cmd["cmd"] == "stop":
            break
        else:
            reply = {"error": f"unknown command {cmd['cmd']!r}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    obj.destroy()


# ----- the benchmark side -----
class Cluster:
    def __init__(self, root: Path, batch: bool) -> None:
        self.root = root
        self.batch = batch
        self.procs: list[subprocess.Popen[bytes]] = []
        self.addrs: list[str] = []

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        base = procs.free_ports((0, 1, 2))
        self.addrs = [f"127.0.0.1:{base + i}" for i in range(3)]
        for i, addr in enumerate(self.addrs):
            peers = ",".join(a for a in self.addrs if a != addr)
            self.procs.append(procs.start(
                [sys.executable, "-m", "bench.commit_pysyncobj", "--self", addr, "--peers", peers,
                 "--dir", str(self.root / f"n{i}"), "--batch", str(int(self.batch))],
                self.root / f"n{i}.log", stdin=subprocess.PIPE, stdout=subprocess.PIPE))

    def ask(self, i: int, cmd: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        p = self.procs[i]
        assert p.stdin is not None
        p.stdin.write((json.dumps(cmd) + "\n").encode())
        p.stdin.flush()
        return self.answer(i, cmd["cmd"], timeout)

    def answer(self, i: int, what: str, timeout: float) -> dict[str, Any]:
        p = self.procs[i]
        assert p.stdout is not None
        ready, _, _ = select.select([p.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"pysyncobj node {i} did not answer {what!r} within {timeout:.0f} s")
        line = p.stdout.readline()
        if not line:
            raise procs.ChildExited(f"pysyncobj node {i} exited ({p.poll()}):\n{procs.tail(self.root / f'n{i}.log')}")
        return json.loads(line)  # type: ignore[no-any-return]

    def leader(self, timeout: float = 60.0) -> int:
        def find() -> int | None:
            for i in range(3):
                s = self.ask(i, {"cmd": "status"})
                if s["leader"] and s["ready"] and s["has_quorum"]:
                    return i + 1  # truthy
            return None

        return procs.wait_for(find, timeout, "a pysyncobj leader", 0.1) - 1

    def stop(self) -> dict[int, int | None]:
        for p in self.procs:
            if p.poll() is None and p.stdin is not None:
                try:
                    p.stdin.write(b'{"cmd": "stop"}\n')
                    p.stdin.close()
                except OSError:
                    pass
        deadline = time.monotonic() + 5.0
        for p in self.procs:  # give each node the chance to destroy its SyncObj and exit by itself
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(0.0, deadline - time.monotonic()))
        codes = procs.stop_all(self.procs)
        for p in self.procs:
            if p.stdout is not None:
                p.stdout.close()
        self.procs = []
        return codes


def run_variant(name: str, batch: bool, params: dict[str, Any], work: Path,
                log: Callable[[str], None]) -> dict[str, Any]:
    cluster = Cluster(work / name, batch)
    result: dict[str, Any] = {"system": name, "config": {"appendEntriesUseBatch": batch, **TIMING}, "levels": []}
    try:
        t0 = time.monotonic()
        cluster.start()
        leader = cluster.leader()
        result["startup_s"] = round(time.monotonic() - t0, 2)
        log(f"{name}: leader n{leader} after {result['startup_s']} s")
        for level in params["levels"]:
            clients = level["clients"]
            leader = cluster.leader()
            before = cluster.ask(leader, {"cmd": "status"})
            cluster.ask(leader, {"cmd": "run", "clients": clients, "ops_per_client": max(1, level["ops"] // clients),
                                 "warmup": params["warmup"], "max_seconds": params["max_seconds"],
                                 "key_prefix": f"bench/c{clients}", "value_size": params["value_size"]},
                        timeout=300)  # the first answer comes once the warm-up is done
            cpu = procs.CpuWindow(cluster.procs)
            cpu.start()
            raw = cluster.answer(leader, "run", params["max_seconds"] + 60)
            cpu.stop()
            after = cluster.ask(leader, {"cmd": "status"})
            raw["cpu_s"] = 0.0  # the clients run inside the leader: its CPU below includes theirs
            row = summarize_run(raw, clients, cpu.nodes, [f"n{i}" + ("*" if i == leader else "") for i in range(3)],
                                cpu.machine)
            row["cpu"]["loadgen_cores"] = None
            row["cpu"]["note"] = "clients are threads in the leader (*), whose CPU includes theirs"
            row["leader"] = f"n{leader}"
            if after["term"] != before["term"]:
                row["term_changed"] = {"before": before["term"], "after": after["term"]}
            result["levels"].append(row)
            log(f"{name}: {clients:>3} clients: {row.get('ops_per_s', 0):>8.1f} ops/s "
                f"p50 {row.get('p50_ms', 0):.2f} ms p99 {row.get('p99_ms', 0):.2f} ms errors {row['errors']}")
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["log_tails"] = {f"n{i}": procs.tail(cluster.root / f"n{i}.log") for i in range(3)}
        log(f"{name}: FAILED {result['error']}")
    finally:
        result["exit_codes"] = list(cluster.stop().values())
        shutil.rmtree(cluster.root, ignore_errors=True)
    return result


def run(params: dict[str, Any], work: Path, log: Callable[[str], None]) -> list[dict[str, Any]]:
    return [run_variant(name, batch, params, work, log) for name, batch in VARIANTS]


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    node_main(sys.argv[1:])
