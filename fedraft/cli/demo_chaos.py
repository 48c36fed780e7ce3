"""`fedraft demo --chaos`: the demo federation, then a node killed with SIGKILL and restarted, live.

A round kills the leader: how long until a new leader is elected; the dead node's pool goes DOWN
after its missed heartbeats (SPEC D7) and its workloads are re-placed by the scheduler on the
survivors; the node restarts, rejoins and catches up. A second round kills a follower: the leader
keeps committing with two of three nodes; the follower restarts and catches up. With `--once` one
leader round and one follower round run and the demo exits; otherwise the rounds repeat until Ctrl-C.

Every milestone is one line starting "chaos:" (plain text when piped, so scripts and CI can follow).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

T = TypeVar("T")

POLL_S = 0.2
ROUND_PAUSE_S = 10.0
HOLDS = ("placed", "running", "draining", "migrating")


class Stopped(Exception):
    """Ctrl-C (or SIGTERM) during a chaos round."""


class Chaos:
    def __init__(self, console: Any, cluster: Any, client: Any, stop: threading.Event, timeout: float) -> None:
        self.console = console
        self.cluster = cluster
        self.client = client
        self.stop = stop
        self.timeout = timeout
        self.endpoint: dict[str, str] = {}  # node id -> API endpoint
        self.pool: dict[str, str] = {}      # node id -> pool
        for endpoint in client.endpoints:
            s = self._wait(functools.partial(client.status, endpoint, signed=False, timeout=1.0),
                           "every node to answer")
            self.endpoint[s.node_id], self.pool[s.node_id] = endpoint, s.pool

    # ----- helpers -----
    def _say(self, text: str) -> None:
        self.console.print(f"[bold magenta]chaos:[/] {text}", highlight=False, soft_wrap=True)

    def _wait(self, probe: Callable[[], T | None], what: str, timeout: float | None = None,
              status: Callable[[float], str] | None = None) -> T:
        """Poll `probe` until it returns something; a live status line on a terminal; Ctrl-C stops."""
        started = time.monotonic()
        deadline = started + (timeout or self.timeout)
        with self.console.status(f"waiting for {what}…") as live:
            while True:
                if self.stop.is_set():
                    raise Stopped
                with contextlib.suppress(grpc.RpcError):
                    value = probe()
                    if value:
                        return value
                now = time.monotonic()
                if now > deadline:
                    raise TimeoutError(f"no {what} within {deadline - started:.0f} s; "
                                       f"see {self.cluster.dir}/<node>/node.log")
                live.update(status(now - started) if status else f"waiting for {what}… {now - started:.0f} s")
                self.stop.wait(POLL_S)

    def _status(self, node: str) -> Any:
        return self.client.status(self.endpoint[node], signed=False, timeout=1.0)

    def _leader(self, among: list[str], above_term: int = 0) -> Any:
        for node in among:
            with contextlib.suppress(grpc.RpcError):
                s = self._status(node)
                if s.role == "leader" and not s.lockdown and s.term > above_term:
                    return s
        return None

    def _holding(self, pool: str) -> list[str]:
        return sorted(w.id for w in self.client.list("workloads", stale=True)
                      if w.phase in HOLDS and w.placement.pool == pool)

    # ----- rounds -----
    def kill_leader(self) -> None:
        leader = self._wait(lambda: self._leader(list(self.endpoint)), "a leader")
        victim, pool = leader.node_id, self.pool[leader.node_id]
        on_pool = self._holding(pool)
        self.cluster.kill(victim)
        killed_at = time.monotonic()
        self._say(f"killed the leader {victim} (SIGKILL, term {leader.term}); its pool {pool} holds "
                  f"{len(on_pool)} workload(s): {', '.join(on_pool) or 'none'}")
        survivors = [n for n in self.endpoint if n != victim]
        new = self._wait(lambda: self._leader(survivors, leader.term), "a new leader")
        self._say(f"new leader {new.node_id} elected after {time.monotonic() - killed_at:.1f} s (term {new.term})")
        if on_pool:
            self._replaced(pool, on_pool, killed_at)
        self._restart(victim)

    def _replaced(self, pool: str, on_pool: list[str], killed_at: float) -> None:
        from rich.table import Table

        def moved() -> dict[str, Any] | None:
            pools = {p.id: p for p in self.client.list("pools")}
            if pools[pool].health != "down":
                return None
            ws = {w.id: w for w in self.client.list("workloads") if w.id in on_pool}
            return ws if all(w.placement.pool != pool or w.phase not in HOLDS for w in ws.values()) else None

        def waiting(seconds: float) -> str:
            return (f"pool {pool}: waiting for 3 missed heartbeats (SPEC D7), then the scheduler re-places "
                    f"its work… {seconds:.0f} s")

        ws = self._wait(moved, f"pool {pool} to be declared DOWN and its workloads re-placed",
                        timeout=self.timeout + 60, status=waiting)
        placed = sum(1 for name in on_pool if ws[name].phase in HOLDS)
        self._say(f"pool {pool} is DOWN; the scheduler re-placed its {len(on_pool)} workload(s) "
                  f"{time.monotonic() - killed_at:.1f} s after the kill: {placed} placed elsewhere, "
                  f"{len(on_pool) - placed} queued until a pool fits")
        table = Table(title=f"workloads that were on {pool}")
        for col in ("workload", "now on", "phase", "move"):
            table.add_column(col)
        for name in on_pool:
            w = ws[name]
            move = w.moves[-1] if w.moves else None
            table.add_row(name, w.placement.pool or "-", w.phase,
                          f"{move.from_pool} → {move.to_pool or '(queued)'} ({move.reason})" if move else "-")
        self.console.print(table)

    def kill_follower(self) -> None:
        leader = self._wait(lambda: self._leader(list(self.endpoint)), "a leader")
        victim = sorted(n for n in self.endpoint if n != leader.node_id)[0]
        self.cluster.kill(victim)
        self._say(f"killed the follower {victim} (SIGKILL); the leader {leader.node_id} keeps its term {leader.term}")
        result = self._wait(lambda: self.client.put("/settings/chaos-probe", str(time.time()).encode()),
                            "a write with 2 of 3 nodes")
        self._say(f"a write committed with 2 of 3 nodes up (index {result.index})")
        self._restart(victim)

    def _restart(self, node: str) -> None:
        self.cluster.start_node(node)
        started = time.monotonic()
        self._say(f"restarted {node}")

        def caught_up() -> Any:
            leader = self._leader([n for n in self.endpoint if n != node])
            if leader is None:
                leader = self._leader([node])
            s = self._status(node)
            return s if leader is not None and s.applied_index >= leader.commit_index else None

        s = self._wait(caught_up, f"{node} to rejoin and catch up")
        self._say(f"{node} rejoined and caught up (applied index {s.applied_index}, {s.role}) "
                  f"{time.monotonic() - started:.1f} s after its restart")


def run_chaos(console: Any, cluster: Any, client: Any, stop: threading.Event, timeout: float, once: bool) -> int:
    """Leader round, follower round; again every ROUND_PAUSE_S until Ctrl-C unless `once`."""
    try:
        chaos = Chaos(console, cluster, client, stop, timeout)
        while True:
            chaos.kill_leader()
            chaos.kill_follower()
            if once:
                console.print("[bold magenta]chaos:[/] done: every node is back and caught up", highlight=False,
                              soft_wrap=True)
                return 0
            console.print(f"[dim]next round in {ROUND_PAUSE_S:.0f} s; Ctrl-C stops the federation[/]")
            if stop.wait(ROUND_PAUSE_S):
                return 0
    except Stopped:  # Ctrl-C: the caller stops every node
        return 0
    except TimeoutError as exc:
        console.print(f"[red]chaos: {exc}[/]")
        return 1
