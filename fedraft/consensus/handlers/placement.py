"""Apply rules of the placement area (SPEC §5, §7): pool reports, pool control, workloads, Ticks.

The scheduler runs here, inside apply: every node makes the same decision from the same entry.

The FederationView is built from the state once and kept across entries in the store's process-local
cache (`StateStore.derived`, never persisted or replicated): each envelope that changes pools or
workloads writes the state and updates the view in step (`_save_pool`, `_save_workload`). It is used
only while nothing else wrote the databases it is built from (WATCHED) since it was last in step —
`Derived.writes` counts every write per database (a pairing, a replica, a policy, a Tick's moves, a
tool seeding the state) — and the store drops it on an aborted transaction, a snapshot install and a
reopen. So a node that kept its view and a node that just restarted and built one decide alike; with
FEDRAFT_CHECK_VIEW=1 (set for the test suite) every reuse is compared with a fresh build and a
difference raises InvariantBroken.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft._proto.fedraft.v1 import placement_pb2 as ppb
from fedraft.consensus.handlers.context import ApplyContext, EntryScope, Rule, TickContext
from fedraft.domain import commands as c
from fedraft.domain.outcome import Code
from fedraft.domain.placement import commands as pc
from fedraft.domain.placement import gpu_health, health, lifecycle, orchestration
from fedraft.domain.placement.model import Move, Phase, Policy, Pool, Workload
from fedraft.domain.roles import Role
from fedraft.domain.scheduler.explain import encode_explanation
from fedraft.domain.scheduler.stack import place
from fedraft.domain.scheduler.view import FederationView
from fedraft.errors import InvariantBroken
from fedraft.storage import catalog_schema as catalog
from fedraft.storage import governance_schema as gov
from fedraft.storage import placement_schema as schema
from fedraft.storage.state import StateTxn

_VIEW = "placement.view"
_STALE = "placement.view.stale"
CHECK_ENV = "FEDRAFT_CHECK_VIEW"


@dataclass
class _Cached:
    view: FederationView
    writes: int                                              # Derived.writes when last in step with the state
    policy: Policy | None = None                             # read from the state (a change is a write: rebuilt)
    flapping: tuple[int, Policy, frozenset[str]] | None = None  # (effective time, policy, pools) for Submit/Migrate

    def placement_policy(self, st: StateTxn) -> Policy:
        if self.policy is None:
            self.policy = schema.policy(st)
        return self.policy


def _build(st: StateTxn) -> FederationView:
    pairings = [(p.pool_a, p.pool_b, p.trust) for p in gov.pairings(st) if p.active]
    return FederationView.build(schema.pools(st), schema.workloads(st), pairings, catalog.replica_pairs(st))


def _holder(st: StateTxn, scope: EntryScope) -> dict[str, object]:
    """Where the view lives: the store's process-local cache, or the entry's scope for a transaction
    that has none (then it lives for one entry, as `forget_view` and the Tick keep it honest)."""
    return st.derived.caches if st.derived is not None else scope.caches


# What `_build` reads: a write to any of these that the view did not follow means rebuild.
WATCHED: tuple[bytes, ...] = (*schema.DBS, gov.PAIRINGS, gov.POLICY, *catalog.DBS)


def _writes(st: StateTxn) -> int:
    return st.derived.written(WATCHED) if st.derived is not None else 0


def _in_step(st: StateTxn, scope: EntryScope) -> _Cached | None:
    """The kept view if it still equals a fresh build of the state (nobody else wrote since), else None."""
    holder = _holder(st, scope)
    cached = holder.get(_VIEW)
    if not isinstance(cached, _Cached):
        return None
    if scope.caches.pop(_STALE, False) or cached.writes != _writes(st):
        del holder[_VIEW]
        return None
    return cached


def _cached(st: StateTxn, scope: EntryScope) -> _Cached:
    cached = _in_step(st, scope)
    if cached is None:
        cached = _Cached(_build(st), _writes(st))
        _holder(st, scope)[_VIEW] = cached
    elif os.environ.get(CHECK_ENV):
        check_view(st, cached.view)
        if cached.policy is not None and cached.policy != schema.policy(st):
            raise InvariantBroken(f"kept placement policy out of step with the state at index {st.applied_index}")
    return cached


def _view(st: StateTxn, scope: EntryScope) -> FederationView:
    return _cached(st, scope).view


def check_view(st: StateTxn, view: FederationView) -> None:
    """Raise InvariantBroken if `view` differs from a view built afresh from the state (determinism:
    a long-running node and a restarted one must decide alike)."""
    differs = view.differences(_build(st))
    if differs:
        raise InvariantBroken(f"placement view out of step with the state at applied index {st.applied_index}: "
                              f"{', '.join(differs)} differ")


def invalidate_placement_view(ctx: ApplyContext | TickContext) -> None:
    """Drop the kept view: the next envelope that needs one builds it from the state.

    Writes through `StateTxn.put`/`delete` already do this (they count in `Derived.writes`); call it
    when a change reaches what the view holds in any other way."""
    _holder(ctx.st, ctx.scope).pop(_VIEW, None)
    ctx.scope.caches.pop(_VIEW, None)


def forget_view(scope: EntryScope) -> None:
    """Another area changed what the view holds (replicas): the next envelope rebuilds it from the state."""
    scope.caches[_STALE] = True


def _flapping(ctx: ApplyContext, cached: _Cached, policy: Policy) -> frozenset[str]:
    """Pools not to place on: flapping (SPEC §7). A function of the pools, effective time and policy,
    so kept with the view until one of them changes."""
    if cached.flapping is not None:
        now, known, flapping = cached.flapping
        if now == ctx.now_ms and known is policy:
            return flapping
    flapping = health.flapping_pools(cached.view.pools(), ctx.now_ms, policy)
    cached.flapping = (ctx.now_ms, policy, flapping)
    return flapping


def _save_pool(ctx: ApplyContext | TickContext, pool: Pool) -> None:
    """Write the pool and, if the kept view was in step, keep it so."""
    cached = _in_step(ctx.st, ctx.scope)
    schema.put_pool(ctx.st, pool)
    if cached is not None:
        cached.view.set_pool(pool)
        cached.flapping = None
        cached.writes = _writes(ctx.st)


def _save_workload(ctx: ApplyContext | TickContext, before: Workload | None, after: Workload) -> None:
    """Write the workload and, if the kept view was in step, keep its bookings in step with the placement."""
    cached = _in_step(ctx.st, ctx.scope)
    schema.put_workload(ctx.st, after)
    if cached is None:
        return
    view = cached.view
    if before is not None and before.phase.holds_resources:
        view.release(before.id)
    if after.phase.holds_resources:
        view.book(after)
    cached.writes = _writes(ctx.st)


def _result(ctx: ApplyContext, w: Workload, preempted: tuple[str, ...] = ()) -> pb.Result:
    result = ctx.result()
    pr = ppb.PlacementResult(workload_id=w.id, phase=w.phase.value, preempted=list(preempted))
    if w.placement is not None:
        pr.pool, pr.worker, pr.gpus[:] = w.placement.pool, w.placement.worker, list(w.placement.gpus)
    result.placement.CopyFrom(pr)
    if w.phase is Phase.PENDING:
        result.message = w.reason
    return result


def _is(ctx: ApplyContext, *roles: Role) -> bool:
    try:
        return Role.parse(ctx.principal.role) in roles
    except ValueError:
        return False


def _own_pool(ctx: ApplyContext, pool_id: str) -> pb.Result | Pool:
    """The pool a node or agent reports for: it must be its own, and it must exist."""
    if ctx.principal.pool != pool_id:
        return ctx.refuse(Code.PERMISSION_DENIED, f"a node of pool {ctx.principal.pool} cannot report for {pool_id}")
    pool = schema.get_pool(ctx.st, pool_id)
    if pool is None:
        return ctx.refuse(Code.NOT_FOUND, f"pool {pool_id} is not registered")
    return pool


def _heartbeat(ctx: ApplyContext, command: c.Command) -> pb.Result:
    assert isinstance(command, pc.PoolHeartbeat)
    pool = _own_pool(ctx, command.pool)
    if isinstance(pool, pb.Result):
        return pool
    _save_pool(ctx, health.on_heartbeat(pool, ctx.now_ms, schema.policy(ctx.st)))
    return ctx.result()


def _inventory(ctx: ApplyContext, command: c.Command) -> pb.Result:
    assert isinstance(command, pc.ReportInventory)
    pool = _own_pool(ctx, command.pool)
    if isinstance(pool, pb.Result):
        return pool
    policy = schema.policy(ctx.st)
    changed = command.inventory != pool.inventory
    faults = gpu_health.record_inventory(pool, command.inventory, ctx.now_ms) if changed else pool.gpu_faults
    updated = replace(pool, inventory=command.inventory, region=command.region, tier=command.tier,
                      labels=command.labels, gpu_faults=faults)
    updated = health.on_heartbeat(updated, ctx.now_ms, policy)
    _save_pool(ctx, updated)
    if changed:
        _move_off_failed_units(ctx, updated, policy)
    return ctx.result()


def _move_off_failed_units(ctx: ApplyContext, pool: Pool, policy: Policy) -> None:
    """Work whose worker or GPU units the new inventory lost or reports unhealthy moves at once
    (orchestration.plan_gpu_failover: the failover rules, reason "gpu-fault")."""
    view = _view(ctx.st, ctx.scope)
    broken = tuple((w, why) for w in view.running_on(pool.id)
                   if (why := gpu_health.broken_reason(w, pool)) is not None)
    if not broken:
        return
    plan = orchestration.plan_gpu_failover(view, broken, ctx.now_ms, ctx.index, policy)
    for w in plan.workloads:
        schema.put_workload(ctx.st, w)
    invalidate_placement_view(ctx)  # the plan moved the view on its own: the next envelope rebuilds it


def _submit(ctx: ApplyContext, command: c.Command) -> pb.Result:
    assert isinstance(command, pc.Submit)
    if schema.get_workload(ctx.st, command.workload_id) is not None:
        return ctx.refuse(Code.ALREADY_EXISTS, f"workload {command.workload_id} exists")
    cached = _cached(ctx.st, ctx.scope)
    view = cached.view
    if view.pool(ctx.principal.pool) is None:  # the view holds exactly the registered pools
        return ctx.refuse(Code.FAILED_PRECONDITION, f"the submitter's pool {ctx.principal.pool} is not registered")
    policy = cached.placement_policy(ctx.st)
    workload = Workload(command.workload_id, command.spec, ctx.principal.pool, submitted_index=ctx.index)
    decision = place(view, workload, index=ctx.index, request_id=ctx.request_id, policy=policy,
                     avoid=_flapping(ctx, cached, policy))
    for victim_id in decision.preempted:
        victim = view.booked(victim_id)  # the stored record: the view is in step with the state (_cached)
        if victim is None:  # pragma: no cover - the view only knows stored workloads
            continue
        evicted = lifecycle.transition(victim, Phase.PENDING, f"preempted by {workload.id}")
        if isinstance(evicted, str):  # pragma: no cover - every resource-holding phase may go PENDING
            continue
        assert victim.placement is not None
        # as orchestration records it: the move's reason is the rule, the workload's reason names the winner
        evicted = lifecycle.record_move(evicted, Move(ctx.now_ms, ctx.index, victim.placement.pool, "",
                                                      orchestration.PREEMPTED))
        _save_workload(ctx, victim, evicted)
    explanation = encode_explanation(decision.explanation)
    if decision.placement is None:
        placed = replace(workload, reason="no pool fits", explanation=explanation, tried_ms=ctx.now_ms)
    else:
        moved = lifecycle.transition(workload, Phase.PLACED, "", decision.placement)
        assert not isinstance(moved, str)
        placed = replace(moved, home_pool=decision.placement.pool, placed_ms=ctx.now_ms, explanation=explanation)
    _save_workload(ctx, None, placed)
    return _result(ctx, placed, decision.preempted)


def _cancel(ctx: ApplyContext, command: c.Command) -> pb.Result:
    assert isinstance(command, pc.Cancel)
    w = schema.get_workload(ctx.st, command.workload_id)
    if w is None:
        return ctx.refuse(Code.NOT_FOUND, f"workload {command.workload_id} does not exist")
    if ctx.principal.pool != w.submitter_pool and not _is(ctx, Role.ADMIN):
        return ctx.refuse(Code.PERMISSION_DENIED, f"only pool {w.submitter_pool} or an admin may cancel {w.id}")
    after = lifecycle.transition(w, Phase.CANCELLED, f"cancelled by {ctx.principal.name or ctx.principal.pool}")
    if isinstance(after, str):
        return ctx.refuse(Code.FAILED_PRECONDITION, after)
    _save_workload(ctx, w, after)
    return _result(ctx, after)


def _report(ctx: ApplyContext, command: c.Command) -> pb.Result:
    assert isinstance(command, pc.ReportStatus)
    w = schema.get_workload(ctx.st, command.workload_id)
    if w is None:
        return ctx.refuse(Code.NOT_FOUND, f"workload {command.workload_id} does not exist")
    after = lifecycle.report(w, ctx.principal.pool, command.phase, command.message)
    if isinstance(after, str):
        return ctx.refuse(Code.FAILED_PRECONDITION, after)
    _save_workload(ctx, w, after)
    return _result(ctx, after)


def _migrate(ctx: ApplyContext, command: c.Command) -> pb.Result:
    assert isinstance(command, pc.Migrate)
    w = schema.get_workload(ctx.st, command.workload_id)
    if w is None:
        return ctx.refuse(Code.NOT_FOUND, f"workload {command.workload_id} does not exist")
    if w.placement is None or not w.phase.holds_resources:
        return ctx.refuse(Code.FAILED_PRECONDITION, f"workload {w.id} is {w.phase.value}, not placed")
    source = w.placement.pool
    if command.to_pool and schema.get_pool(ctx.st, command.to_pool) is None:
        return ctx.refuse(Code.NOT_FOUND, f"pool {command.to_pool} is not registered")
    if command.to_pool == source:
        return ctx.refuse(Code.INVALID_ARGUMENT, f"workload {w.id} already runs on {source}")
    if not _is(ctx, Role.ADMIN) and ctx.principal.pool not in (source, w.submitter_pool):
        return ctx.refuse(Code.PERMISSION_DENIED, f"an operator of {source} or {w.submitter_pool} may migrate {w.id}")
    cached = _cached(ctx.st, ctx.scope)
    view = cached.view
    policy = cached.placement_policy(ctx.st)
    others = frozenset(p.id for p in view.pools() if p.id != command.to_pool)
    avoid = (others if command.to_pool else frozenset({source})) | _flapping(ctx, cached, policy)
    view.release(w.id)
    decision = place(view, w, index=ctx.index, request_id=ctx.request_id, policy=policy, avoid=avoid)
    view.book(w)
    if decision.placement is None or decision.preempted:
        refusals = "; ".join(f"{pool}: {why}" for r in decision.explanation.refused for pool, why in r.examples[:2])
        return ctx.refuse(Code.RESOURCE_EXHAUSTED,
                          f"no room for {w.id} on {command.to_pool or 'another pool'}"
                          + (f" ({refusals})" if refusals else ""))
    to_phase = lifecycle.landing_phase(w.phase, source_down=False)
    after = lifecycle.transition(w, to_phase, f"migrated by {ctx.principal.name or ctx.principal.pool}",
                                 decision.placement)
    if isinstance(after, str):
        return ctx.refuse(Code.FAILED_PRECONDITION, after)
    after = lifecycle.record_move(after, Move(ctx.now_ms, ctx.index, source, decision.placement.pool, "migrate"))
    _save_workload(ctx, w, replace(after, explanation=encode_explanation(decision.explanation)))
    return _result(ctx, after)


def _pool_control(ctx: ApplyContext, command: c.Command) -> pb.Result:
    assert isinstance(command, pc.PoolControl)
    if not _is(ctx, Role.ADMIN) and ctx.principal.pool != command.pool:
        return ctx.refuse(Code.PERMISSION_DENIED, f"an operator of {command.pool} or an admin may {command.action} it")
    pool = schema.get_pool(ctx.st, command.pool)
    if pool is None:
        return ctx.refuse(Code.NOT_FOUND, f"pool {command.pool} is not registered")
    if command.action == "cordon":
        updated = replace(pool, cordoned=True)
    elif command.action == "uncordon":
        updated = replace(pool, cordoned=False, drain_started_ms=None)
    else:
        if pool.drain_started_ms is not None:
            return ctx.refuse(Code.ALREADY_EXISTS, f"pool {pool.id} is draining since {pool.drain_started_ms}")
        # A drained pool stays cordoned after its work has left, until an operator uncordons it.
        before = {w.id: w for w in schema.workloads(ctx.st)}
        drained, changed = orchestration.start_drain(pool, before.values(), ctx.now_ms)
        updated = replace(drained, cordoned=True)
        for w in changed:
            _save_workload(ctx, before[w.id], w)
    _save_pool(ctx, updated)
    return ctx.result()


def _tick(ctx: TickContext) -> None:
    policy = schema.policy(ctx.st)
    view = _view(ctx.st, ctx.scope)
    workloads = tuple(schema.workloads(ctx.st))
    plan = orchestration.plan_tick(view, workloads, ctx.now_ms, ctx.term_start_ms, ctx.index, policy)
    for pool in plan.pools:
        schema.put_pool(ctx.st, pool)
    for w in plan.workloads:
        schema.put_workload(ctx.st, w)
    invalidate_placement_view(ctx)  # the plan moved the view on its own: the next envelope rebuilds it


def _deadline(st: StateTxn, term_start_ms: int) -> int | None:
    return orchestration.next_deadline(tuple(schema.pools(st)), tuple(schema.workloads(st)), term_start_ms,
                                       schema.policy(st))


def _check(command: c.Command) -> str | None:
    return pc.static_problem(command)


RULES: dict[type[c.Command], Rule] = {
    pc.PoolHeartbeat: Rule(_heartbeat, _check),
    pc.ReportInventory: Rule(_inventory, _check),
    pc.Submit: Rule(_submit, _check),
    pc.Cancel: Rule(_cancel, _check),
    pc.ReportStatus: Rule(_report, _check),
    pc.Migrate: Rule(_migrate, _check),
    pc.PoolControl: Rule(_pool_control, _check),
}
TICKERS: tuple[Callable[[TickContext], None], ...] = (_tick,)
DEADLINES: tuple[Callable[[StateTxn, int], int | None], ...] = (_deadline,)

__all__ = ["DEADLINES", "RULES", "TICKERS", "Policy"]
