"""Wire forms of the placement area (proto/fedraft/v1/placement.proto): commands and stored records.

FROM_PB maps the name of a field of `PlacementCommand`'s oneof to a decoder; TO_PB maps a domain
command class to an encoder filling `envelope.placement`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft._proto.fedraft.v1 import placement_pb2 as ppb
from fedraft.domain.commands import Command
from fedraft.domain.placement import commands as pc
from fedraft.domain.placement.model import (
    Gpu,
    GpuFault,
    Health,
    Inventory,
    Move,
    Phase,
    Placement,
    Pool,
    PoolHealth,
    Trust,
    Worker,
    Workload,
    WorkloadSpec,
)
from fedraft.errors import DecodeError
from fedraft.wire import catalog

E = TypeVar("E", Phase, Health)


def _enum(kind: type[E], value: str, what: str) -> E:
    try:
        return kind(value)
    except ValueError:
        raise DecodeError(f"unknown {what} {value!r}") from None


def workers_from_pb(workers: Iterable[ppb.WorkerInfo]) -> tuple[Worker, ...]:
    return tuple(Worker(w.name, w.cpu_millis, w.ram_mb,
                        tuple(Gpu(g.uuid, g.model, g.memory_mb, g.healthy, g.parent, g.profile, g.fault)
                              for g in w.gpus))
                 for w in workers)


def workers_to_pb(workers: tuple[Worker, ...]) -> list[ppb.WorkerInfo]:
    return [ppb.WorkerInfo(name=w.name, cpu_millis=w.cpu_millis, ram_mb=w.ram_mb,
                           gpus=[ppb.GpuUnit(uuid=g.uuid, model=g.model, memory_mb=g.memory_mb, healthy=g.healthy,
                                                 parent=g.parent, profile=g.profile, fault=g.fault)
                                 for g in w.gpus])
            for w in workers]


def spec_from_pb(s: ppb.WorkloadSpec) -> WorkloadSpec:
    try:
        trust = Trust.parse(s.min_trust) if s.min_trust else Trust.STANDARD
    except ValueError as exc:
        raise DecodeError(str(exc)) from None
    return WorkloadSpec(gpus=s.gpus, gpu_memory_mb=s.gpu_memory_mb, cpu_millis=s.cpu_millis, ram_mb=s.ram_mb,
                        priority=s.priority, min_trust=trust, labels=tuple(s.labels),
                        exclude_pools=tuple(s.exclude_pools), preferred_region=s.preferred_region, model=s.model,
                        max_latency_ms=s.max_latency_ms, mig_profile=s.mig_profile)


def spec_to_pb(s: WorkloadSpec) -> ppb.WorkloadSpec:
    return ppb.WorkloadSpec(gpus=s.gpus, gpu_memory_mb=s.gpu_memory_mb, cpu_millis=s.cpu_millis, ram_mb=s.ram_mb,
                            priority=s.priority, min_trust=s.min_trust.label, labels=list(s.labels),
                            exclude_pools=list(s.exclude_pools), preferred_region=s.preferred_region,
                            model=s.model, max_latency_ms=s.max_latency_ms, mig_profile=s.mig_profile)


# ---- commands ----

def _inventory(env: pb.Envelope) -> Command:
    r = env.placement.report_inventory
    return pc.ReportInventory(r.pool, Inventory(workers_from_pb(r.workers)), r.region, r.tier, tuple(r.labels))


def _status(env: pb.Envelope) -> Command:
    r = env.placement.report_status
    return pc.ReportStatus(r.workload_id, _enum(Phase, r.phase, "workload phase"), r.message)


FROM_PB: dict[str, Callable[[pb.Envelope], Command]] = {
    "pool_heartbeat": lambda env: pc.PoolHeartbeat(env.placement.pool_heartbeat.pool),
    "report_inventory": _inventory,
    "submit": lambda env: pc.Submit(env.placement.submit.workload_id, spec_from_pb(env.placement.submit.spec)),
    "cancel": lambda env: pc.Cancel(env.placement.cancel.workload_id),
    "report_status": _status,
    "migrate": lambda env: pc.Migrate(env.placement.migrate.workload_id, env.placement.migrate.to_pool),
    "pool_control": lambda env: pc.PoolControl(env.placement.pool_control.pool, env.placement.pool_control.action),
    **catalog.FROM_PB,
}


def _to(cmd: Command, env: pb.Envelope) -> None:
    p = env.placement
    if isinstance(cmd, pc.PoolHeartbeat):
        p.pool_heartbeat.pool = cmd.pool
    elif isinstance(cmd, pc.ReportInventory):
        p.report_inventory.CopyFrom(ppb.ReportInventory(
            pool=cmd.pool, region=cmd.region, tier=cmd.tier, labels=list(cmd.labels),
            workers=workers_to_pb(cmd.inventory.workers)))
    elif isinstance(cmd, pc.Submit):
        p.submit.CopyFrom(ppb.Submit(workload_id=cmd.workload_id, spec=spec_to_pb(cmd.spec)))
    elif isinstance(cmd, pc.Cancel):
        p.cancel.workload_id = cmd.workload_id
    elif isinstance(cmd, pc.ReportStatus):
        p.report_status.CopyFrom(ppb.ReportStatus(workload_id=cmd.workload_id, phase=cmd.phase.value,
                                                  message=cmd.message))
    elif isinstance(cmd, pc.Migrate):
        p.migrate.CopyFrom(ppb.Migrate(workload_id=cmd.workload_id, to_pool=cmd.to_pool))
    elif isinstance(cmd, pc.PoolControl):
        p.pool_control.CopyFrom(ppb.PoolControl(pool=cmd.pool, action=cmd.action))
    else:  # pragma: no cover - TO_PB lists exactly the classes above
        raise TypeError(type(cmd).__name__)


TO_PB: dict[type[Command], Callable[[Command, pb.Envelope], None]] = {
    cls: _to for cls in (pc.PoolHeartbeat, pc.ReportInventory, pc.Submit, pc.Cancel, pc.ReportStatus,
                         pc.Migrate, pc.PoolControl)
} | catalog.TO_PB


# ---- stored records ----

def pool_to_pb(p: Pool) -> ppb.PoolRecord:
    rec = ppb.PoolRecord(id=p.id, region=p.region, tier=p.tier, labels=list(p.labels), voter=p.voter,
                         health=p.status.health.value, last_heartbeat_ms=p.status.last_heartbeat_ms,
                         changed_ms=p.status.changed_ms, down_events_ms=list(p.status.down_events_ms),
                         workers=workers_to_pb(p.inventory.workers), cordoned=p.cordoned,
                         gpu_faults=[_fault_to_pb(f) for f in p.gpu_faults])
    if p.drain_started_ms is not None:
        rec.drain_started_ms = p.drain_started_ms
    return rec


def pool_from_pb(r: ppb.PoolRecord) -> Pool:
    status = PoolHealth(_enum(Health, r.health, "pool health"), r.last_heartbeat_ms, r.changed_ms,
                        tuple(r.down_events_ms))
    return Pool(r.id, r.region, r.tier, tuple(r.labels), r.voter, status, Inventory(workers_from_pb(r.workers)),
                r.cordoned, r.drain_started_ms if r.HasField("drain_started_ms") else None,
                tuple(GpuFault(f.uuid, f.worker, f.reason, f.since_ms,
                               f.healthy_since_ms if f.HasField("healthy_since_ms") else None)
                      for f in r.gpu_faults))


def _fault_to_pb(f: GpuFault) -> ppb.GpuFaultRecord:
    rec = ppb.GpuFaultRecord(uuid=f.uuid, worker=f.worker, reason=f.reason, since_ms=f.since_ms)
    if f.healthy_since_ms is not None:
        rec.healthy_since_ms = f.healthy_since_ms
    return rec


def workload_to_pb(w: Workload) -> ppb.WorkloadRecord:
    rec = ppb.WorkloadRecord(
        id=w.id, spec=spec_to_pb(w.spec), submitter_pool=w.submitter_pool, phase=w.phase.value,
        home_pool=w.home_pool, submitted_index=w.submitted_index, placed_ms=w.placed_ms,
        moves=[ppb.MoveRecord(at_ms=m.at_ms, index=m.index, from_pool=m.from_pool, to_pool=m.to_pool,
                              reason=m.reason) for m in w.moves],
        reason=w.reason, explanation=w.explanation)
    if w.placement is not None:
        rec.placement.CopyFrom(ppb.PlacementRecord(pool=w.placement.pool, worker=w.placement.worker,
                                                   gpus=list(w.placement.gpus)))
    if w.last_load_move_ms is not None:
        rec.last_load_move_ms = w.last_load_move_ms
    if w.tried_ms is not None:
        rec.tried_ms = w.tried_ms
    return rec


def workload_from_pb(r: ppb.WorkloadRecord) -> Workload:
    placement = (Placement(r.placement.pool, r.placement.worker, tuple(r.placement.gpus))
                 if r.HasField("placement") else None)
    return Workload(
        id=r.id, spec=spec_from_pb(r.spec), submitter_pool=r.submitter_pool,
        phase=_enum(Phase, r.phase, "workload phase"), placement=placement, home_pool=r.home_pool,
        submitted_index=r.submitted_index, placed_ms=r.placed_ms,
        last_load_move_ms=r.last_load_move_ms if r.HasField("last_load_move_ms") else None,
        moves=tuple(Move(m.at_ms, m.index, m.from_pool, m.to_pool, m.reason) for m in r.moves),
        reason=r.reason, explanation=r.explanation, tried_ms=r.tried_ms if r.HasField("tried_ms") else None)


def gpu_units(pool: ppb.PoolRecord) -> tuple[int, int]:
    """(units that take new work, all units) of a stored pool: a unit counts when it is reported healthy
    and has no fault record (a recovering unit waits out the hysteresis, decision 0011)."""
    faulted = {f.uuid for f in pool.gpu_faults}
    units = [g for w in pool.workers for g in w.gpus]
    return sum(1 for g in units if g.healthy and g.uuid not in faulted), len(units)

