"""Small builders for scheduler tests: pools, workers, GPUs and workloads with readable defaults."""

from __future__ import annotations

from dataclasses import replace

from fedraft.domain.placement.model import (
    Gpu,
    Health,
    Inventory,
    Phase,
    Placement,
    Pool,
    PoolHealth,
    Trust,
    Worker,
    Workload,
    WorkloadSpec,
)
from fedraft.domain.scheduler.view import FederationView


def gpus(prefix: str, *memory_mb: int, unhealthy: tuple[int, ...] = ()) -> tuple[Gpu, ...]:
    return tuple(Gpu(f"{prefix}-g{i}", "A100", m, i not in unhealthy) for i, m in enumerate(memory_mb))


def worker(name: str, *memory_mb: int, cpu: int = 64_000, ram: int = 256_000, prefix: str = "",
           unhealthy: tuple[int, ...] = ()) -> Worker:
    return Worker(name, cpu, ram, gpus(prefix or name, *memory_mb, unhealthy=unhealthy))


def pool(pool_id: str, *workers: Worker, region: str = "eu", tier: str = "gpu", labels: tuple[str, ...] = (),
         down: bool = False, cordoned: bool = False, draining: bool = False) -> Pool:
    ws = workers or (worker("w0", 80_000, 80_000, prefix=pool_id),)
    return Pool(pool_id, region=region, tier=tier, labels=tuple(sorted(labels)),
                status=PoolHealth(health=Health.DOWN if down else Health.UP), inventory=Inventory(ws),
                cordoned=cordoned, drain_started_ms=5 if draining else None)


def workload(wid: str, submitter: str = "home", *, placement: Placement | None = None, index: int = 1,
             **spec: object) -> Workload:
    phase = Phase.RUNNING if placement is not None else Phase.PENDING
    return Workload(wid, WorkloadSpec(**spec), submitter, phase=phase, placement=placement,  # type: ignore[arg-type]
                    submitted_index=index)


def placed(w: Workload, p: Placement) -> Workload:
    return replace(w, phase=Phase.PLACED, placement=p)


def view(*pools: Pool, workloads: tuple[Workload, ...] = (), trust: dict[str, Trust] | None = None,
         submitter: str = "home", replicas: tuple[tuple[str, str], ...] = ()) -> FederationView:
    """A view in which `submitter` is paired with every other pool at STANDARD unless `trust` says otherwise."""
    levels = {p.id: Trust.STANDARD for p in pools if p.id != submitter}
    levels.update(trust or {})
    pairings = [(submitter, p, level) for p, level in sorted(levels.items()) if level is not Trust.NONE]
    return FederationView.build(pools, workloads, pairings, replicas)
