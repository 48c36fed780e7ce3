"""A real 3-node cluster whose peer links run through the fault proxy, and the checks every fault test makes.

Every node's `[peers]` addresses are rewritten to per-link proxy ports: link "a->b" is what node a
dials to reach node b (only the larger node id dials; the other direction's link stays idle). The
proxy forwards to b's real peer_listen; TLS passes through untouched.
"""

from __future__ import annotations

import re
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedraft.client import Client
from fedraft.crypto.keyfile import load_private_key
from fedraft.crypto.logfile import verify_log
from tests.faults.proxy import Proxy
from tests.integration.cluster import Cluster, wait_for
from tests.lin.checker import check
from tests.lin.history import Workload, lost_writes, perform

KEYS = [f"/routes/lin/{i}" for i in range(6)]
DURABLE_PREFIX = "/routes/durable/"  # the put-only keys of tests.lin.history.Workload


class FaultCluster(Cluster):
    def __init__(self, root: Path, raft: dict[str, int] | None = None) -> None:
        super().__init__(root, raft)
        self.proxy = Proxy()
        listen = {n: tomllib.loads(self.config(n).read_text())["peer_listen"] for n in self.node_ids}
        for a in self.node_ids:
            path = self.config(a)
            text = path.read_text()
            for b in self.node_ids:
                if a == b:
                    continue
                link = self.proxy.add(f"{a}->{b}", listen[b])
                text, count = re.subn(rf'^("{re.escape(b)}" = )"[^"]*"$', rf'\1"{link.address}"', text, count=1,
                                      flags=re.MULTILINE)
                assert count == 1, f"no [peers] entry for {b} in {path}"
            path.write_text(text)
            assert tomllib.loads(text)["peers"] == {b: self.proxy.links[f"{a}->{b}"].address
                                                    for b in self.node_ids if b != a}

    def links_of(self, node: str) -> list[str]:
        return [name for name in self.proxy.links if node in name.split("->")]

    def isolate(self, node: str, mode: str = "blackhole") -> None:
        self.proxy.set(self.links_of(node), mode)

    def heal(self) -> None:
        self.proxy.heal()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.proxy.close()

    def worker_client(self, timeout: float = 20.0) -> Client:
        # Each worker has its own client; a write retries with the same request id for up to `timeout`.
        return self.client(timeout=timeout, attempt_timeout=2)

    def node_client(self, node: str) -> Client:
        """A client of this one node only (STALE reads served by it)."""
        c = Client([self.endpoint(node)], load_private_key(self.layout.admins[0].key), self.layout.ca_cert.read_bytes(),
                   self.layout.cluster_id, timeout=30)
        self._clients.append(c)
        return c

    def leader_other_than(self, old: str, timeout: float = 60.0) -> str:
        others = [n for n in self.node_ids if n != old and n in self.procs]
        return self.leader(timeout, among=others)

    def converged(self, timeout: float = 90.0) -> int:
        """Wait until every running node applied the same index with the same state digest."""
        nodes = list(self.procs)

        def same() -> int | None:
            statuses = [self.status(n, digest=True) for n in nodes]
            indexes = {s.applied_index for s in statuses}
            digests = {bytes(s.state_digest) for s in statuses}
            return statuses[0].applied_index if len(indexes) == 1 and len(digests) == 1 else None

        return wait_for(same, timeout, 0.2, "every node at the same index with the same digest")


@dataclass
class Figures:
    """What a fault test reports (docs/reliability.md)."""

    name: str
    faults: int
    operations: int
    ok: int
    unknown: int
    acked_writes: int
    lost: int
    seconds: float
    terms: int = 0  # how many terms the fault cost (new elections)

    def line(self) -> str:
        return (f"FAULT-FIGURES {self.name}: faults={self.faults} operations={self.operations} ok={self.ok} "
                f"unknown={self.unknown} acked_writes={self.acked_writes} lost={self.lost} "
                f"terms={self.terms} seconds={self.seconds:.1f}")


def run_with_workload(cluster: FaultCluster, name: str, fault: Callable[[Workload], int], *,
                      threads: int = 4, before_ops: int = 20, after_ops: int = 30, seed: int = 0,
                      keys: list[str] = KEYS, client_timeout: float = 20.0, pause_s: float = 0.0) -> Figures:
    """Start clients, inject `fault` (it returns the number of faults it injected and waits for its own
    conditions), let clients make progress afterwards, then check the history and that no
    acknowledged write was lost (on the leader, linearizable, and on every node, stale)."""
    started = time.monotonic()
    term_before = cluster.status(cluster.leader()).term
    workload = Workload(lambda: cluster.worker_client(client_timeout), keys, threads=threads, seed=seed,
                        pause_s=pause_s)
    workload.start()
    try:
        workload.wait_ops(before_ops, timeout=60)
        faults = fault(workload)
        workload.wait_ops(after_ops, timeout=120)
    finally:
        workload.stop(timeout=60)
    history = workload.history
    # A final linearizable read of every checked key joins the history: a write lost after the fault
    # makes it non-linearizable even if no worker read that key again.
    final = cluster.client(timeout=30)
    process = history.new_process()
    for key in keys:
        op = perform(final, history, process, "get", key, None, None)
        assert op.outcome == "ok", f"final read of {key} failed"
    counts = history.counts()
    result = check(history.ops)
    assert result.ok, result.explain()

    reader = cluster.client(timeout=30)

    def versions(client: Client, stale: bool) -> dict[str, int]:
        return {r.key: int(r.version) for r in client.list("registry", prefix=DURABLE_PREFIX, stale=stale)}

    # Linearizable on the leader, then (after convergence) STALE on every node.
    now = versions(reader, False)
    lost = lost_writes(workload.acked, lambda key: now.get(key, 0))
    assert not lost, lost
    cluster.converged()
    for node in cluster.procs:
        here = versions(cluster.node_client(node), True)
        lost_here = lost_writes(workload.acked, lambda key, h=here: h.get(key, 0))
        assert not lost_here, (node, lost_here)
    # The log the fault left behind verifies offline (signatures, D10, gaps, chain).
    report = verify_log(b"".join(reader.export_log()), cluster.layout.cluster_id)
    assert report.ok, [str(p) for p in report.problems]
    figures = Figures(name, faults, result.operations, counts["ok"], counts["info"], len(workload.acked.versions)
                      + sum(1 for op in history.ops if op.outcome == "ok" and op.kind != "get"
                            and op.output is not None and op.output[0] == "ok"),
                      0, time.monotonic() - started, cluster.status(cluster.leader()).term - term_before)
    print(figures.line())
    return figures
