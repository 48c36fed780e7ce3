"""What-if (issue 9): what the orchestrator would do if a pool failed, were drained, or a GPU failed —
computed by the real apply code on an overlay of the current state, never proposed.

`simulate(st, genesis, scenario)` runs, on an `OverlayTxn` over the read transaction `st` (so at its
applied index A, as entry A + 1 at the state's effective time):

    scenario   what is applied on the overlay (the same handlers the applier dispatches to)
    ---------  --------------------------------------------------------------------------------------
    pool P     P marked DOWN now by the health rule (health.check_health, as if its heartbeats had
               lapsed), then a Tick: failover, and whatever else that Tick would do
    drain P    the Drain command (PoolControl) as P's operator would send it, with its drain start set
               back by policy.drain_ms, then a Tick: the drain end moves P's work now
    gpu U      P's node reports its inventory with unit U unhealthy (a ReportInventory): the work on U
               moves at once (reason gpu-fault)

The answer lists every workload the run changed: where it was, where it goes (or PENDING and why).
Same index, same state, same code: when the failure then really happens as the next entry, apply does
exactly this. Later, the state or the index may have moved on; ties between equally scored pools are
broken by a hash of the index (SPEC §7), so a later failure may pick the other of two equal pools.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.consensus.handlers import RULES, ApplyContext, EntryScope
from fedraft.domain import commands as c
from fedraft.domain.genesis import Genesis
from fedraft.domain.placement import commands as pc
from fedraft.domain.placement import health
from fedraft.domain.placement.model import Inventory, Placement, Pool, Worker, Workload
from fedraft.errors import CallerError
from fedraft.storage import placement_schema as schema
from fedraft.storage.overlay import OverlayTxn
from fedraft.storage.state import M_TERM_START, StateTxn

KINDS = ("pool", "drain", "gpu")
SIMULATED_FAULT = "simulated failure (what-if)"


class UnknownTarget(CallerError):
    """The pool or GPU a what-if names does not exist."""


@dataclass(frozen=True)
class Scenario:
    kind: str     # one of KINDS
    target: str   # a pool id, or a GPU UUID

    def describe(self) -> str:
        return {"pool": f"pool {self.target} goes down", "drain": f"pool {self.target} is drained",
                "gpu": f"GPU {self.target} fails"}[self.kind]


@dataclass(frozen=True)
class Change:
    """One workload the what-if moved, re-queued or otherwise changed."""

    workload_id: str
    phase_before: str
    before: Placement | None
    phase: str
    after: Placement | None
    reason: str   # the move's rule (failover, gpu-fault, drain, preempted, retry, ...); "" when it did not move
    detail: str   # the workload's reason text (why it is pending, what failed)


@dataclass(frozen=True)
class WhatIf:
    scenario: Scenario
    applied_index: int   # the state it started from
    at_index: int        # the index it applied as
    effective_ms: int
    changes: tuple[Change, ...]   # sorted by workload id


def simulate(st: StateTxn, genesis: Genesis, scenario: Scenario) -> WhatIf:
    """Run the scenario on an overlay of `st`; raises UnknownTarget (nothing else on bad input)."""
    if scenario.kind not in KINDS:
        raise UnknownTarget(f"unknown what-if {scenario.kind!r} (one of: {', '.join(KINDS)})")
    overlay = OverlayTxn(st)
    applied = st.applied_index
    index, now, term_start = applied + 1, st.effective_ms, st.meta_int(M_TERM_START)
    scope = EntryScope()

    def run(command: c.Command, principal: pb.Principal) -> pb.Result:
        ctx = ApplyContext(overlay, genesis, index, 0, now, term_start, b"", b"what-if", principal, scope)
        return RULES[type(command)].apply(ctx, command)

    policy = schema.policy(st)
    if scenario.kind == "gpu":
        pool, inventory = _fail_gpu(st, scenario.target)
        run(pc.ReportInventory(pool.id, inventory, pool.region, pool.tier, pool.labels), _node_of(pool.id))
    else:
        pool = _pool(st, scenario.target)
        if scenario.kind == "pool":
            lapsed = replace(pool, status=replace(pool.status, last_heartbeat_ms=0))
            down = health.check_health(lapsed, now, 0, policy)
            schema.put_pool(overlay, replace(down, status=replace(down.status,
                                                                    last_heartbeat_ms=pool.status.last_heartbeat_ms)))
        else:
            if pool.drain_started_ms is None:
                run(pc.PoolControl(pool.id, "drain"), pb.Principal(pool=pool.id, role="operator", name="what-if"))
            drained = schema.get_pool(overlay, pool.id)
            assert drained is not None and drained.drain_started_ms is not None
            schema.put_pool(overlay, replace(drained, drain_started_ms=min(drained.drain_started_ms,
                                                                           now - policy.drain_ms)))
        run(c.Tick(now), _node_of(pool.id))
    changes = []
    for key in sorted(overlay.changed(schema.WORKLOADS)):
        before = schema.get_workload(st, key.decode())
        after = schema.get_workload(overlay, key.decode())
        if after is None or after == before:
            continue
        changes.append(_change(before, after))
    return WhatIf(scenario, applied, index, now, tuple(changes))


def _change(before: Workload | None, after: Workload) -> Change:
    moved = after.moves[-1] if after.moves and (before is None or after.moves != before.moves) else None
    reason = moved.reason if moved is not None else ""
    return Change(after.id, before.phase.value if before is not None else "", before.placement if before else None,
                  after.phase.value, after.placement, reason, after.reason)


def _node_of(pool_id: str) -> pb.Principal:
    return pb.Principal(pool=pool_id, role="node", name="what-if")


def _pool(st: StateTxn, pool_id: str) -> Pool:
    pool = schema.get_pool(st, pool_id)
    if pool is None:
        raise UnknownTarget(f"pool {pool_id} is not registered")
    return pool


def _fail_gpu(st: StateTxn, uuid: str) -> tuple[Pool, Inventory]:
    """The pool holding unit `uuid` and its inventory with that unit failed."""
    for pool in schema.pools(st):
        for w in pool.inventory.workers:
            if any(g.uuid == uuid for g in w.gpus):
                failed = tuple(replace(g, healthy=False, fault=SIMULATED_FAULT) if g.uuid == uuid else g
                               for g in w.gpus)
                workers = tuple(Worker(x.name, x.cpu_millis, x.ram_mb, failed) if x.name == w.name else x
                                for x in pool.inventory.workers)
                return pool, Inventory(workers)
    raise UnknownTarget(f"no pool reports a GPU {uuid}")


__all__ = ["KINDS", "Change", "Scenario", "UnknownTarget", "WhatIf", "simulate"]
