"""GPU faults (issue 9): which units of a pool take no new work, and which placements an inventory breaks.

A pool's `gpu_faults` hold the units that failed. The rules, in effective time (SPEC D6):

    event                                              the unit's fault record
    -------------------------------------------------  ------------------------------------------------------
    ReportInventory at t lists the unit unhealthy      since = t, reason = its health signal, not healthy yet
    ReportInventory at t no longer lists the unit      since = t, reason "no longer reported" (the worker's
      (or no longer lists its whole worker)              name when the worker went); kept while it is absent
    ReportInventory at t lists a faulted unit healthy  healthy_since = t (unless already set)
    Tick at t >= healthy_since + policy.hysteresis_ms  dropped: the unit takes new work again

A faulted unit is not schedulable (the view leaves it out), so "reported healthy for the hysteresis
window" is the only way back. Work whose placement a new inventory breaks — its worker is gone, or one
of its units is gone or unhealthy — is moved at once by the ReportInventory handler (the same
orchestration as a failover, reason "gpu-fault"); `broken_reason` says why.

Records of units that stay absent are kept (a unit that comes back must wait out the window), at most
MAX_FAULTS per pool, the oldest dropped first.
"""

from __future__ import annotations

from dataclasses import replace

from fedraft.domain.placement.model import Gpu, GpuFault, Inventory, Policy, Pool, Workload

__all__ = ["MAX_FAULTS", "broken_reason", "clear_recovered", "fault_deadline", "record_inventory"]

MAX_FAULTS = 512
_REASON_CHARS = 160


def _units(inventory: Inventory) -> dict[str, tuple[str, Gpu]]:
    return {g.uuid: (w.name, g) for w in inventory.workers for g in w.gpus}


def _signal(gpu: Gpu) -> str:
    return (gpu.fault or "reported unhealthy")[:_REASON_CHARS]


def record_inventory(pool: Pool, inventory: Inventory, now_ms: int) -> tuple[GpuFault, ...]:
    """The pool's fault records once `inventory` (reported at `now_ms`) replaces its current one."""
    before = _units(pool.inventory)
    after = _units(inventory)
    workers_after = {w.name for w in inventory.workers}
    faults = {f.uuid: f for f in pool.gpu_faults}
    for uuid, (worker, gpu) in after.items():
        known = faults.get(uuid)
        if not gpu.healthy:
            reason = _signal(gpu)
            if known is None or known.healthy_since_ms is not None:
                faults[uuid] = GpuFault(uuid, worker, reason, now_ms)
            elif known.reason != reason or known.worker != worker:
                faults[uuid] = replace(known, worker=worker, reason=reason)
        elif known is not None and known.healthy_since_ms is None:
            faults[uuid] = replace(known, worker=worker, healthy_since_ms=now_ms)
    for uuid, (worker, _gpu) in before.items():
        if uuid in after:
            continue
        known = faults.get(uuid)
        if known is None or known.healthy_since_ms is not None:
            why = "no longer reported" if worker in workers_after else f"worker {worker} no longer reported"
            faults[uuid] = GpuFault(uuid, worker, why, now_ms)
    kept = sorted(faults.values(), key=lambda f: (-f.since_ms, f.uuid))[:MAX_FAULTS]
    return tuple(sorted(kept))


def clear_recovered(pool: Pool, now_ms: int, policy: Policy) -> Pool:
    """The pool with the faults whose units have been healthy for the hysteresis dropped (same object
    when none is due)."""
    kept = tuple(f for f in pool.gpu_faults
                 if f.healthy_since_ms is None or now_ms < f.healthy_since_ms + policy.hysteresis_ms)
    return pool if len(kept) == len(pool.gpu_faults) else replace(pool, gpu_faults=kept)


def fault_deadline(pool: Pool, policy: Policy) -> int | None:
    """When the first of the pool's recovering units takes work again (a Tick is due then)."""
    due = [f.healthy_since_ms + policy.hysteresis_ms for f in pool.gpu_faults if f.healthy_since_ms is not None]
    return min(due) if due else None


def broken_reason(w: Workload, pool: Pool) -> str | None:
    """Why the workload's placement on `pool` no longer holds (its worker or a unit is gone or
    unhealthy), or None when it holds."""
    placement = w.placement
    if placement is None or placement.pool != pool.id:
        return None
    worker = next((x for x in pool.inventory.workers if x.name == placement.worker), None)
    if worker is None:
        return f"worker {placement.worker} no longer reported"
    units = {g.uuid: g for g in worker.gpus}
    for uuid in placement.gpus:
        gpu = units.get(uuid)
        if gpu is None:
            return f"GPU {uuid} no longer reported"
        if not gpu.healthy:
            return f"GPU {uuid} unhealthy: {_signal(gpu)}"
    return None
