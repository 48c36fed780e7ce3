"""The placement area's commands (SPEC §5): inventory and health reports, pool control, workloads."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from fedraft.domain.commands import ANY_HUMAN, NODE_ONLY, OPERATOR_UP, Command
from fedraft.domain.placement.model import Inventory, Phase, WorkloadSpec
from fedraft.domain.roles import Role

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_PROFILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,31}$")  # MIG profiles: 1g.10gb, 3g.40gb, 1g.10gb+me
MAX_GPUS_PER_WORKLOAD = 64
MAX_LIST_ITEMS = 32
POOL_ACTIONS = ("drain", "cordon", "uncordon")
REPORTABLE = (Phase.RUNNING, Phase.COMPLETED, Phase.FAILED)


def name_problem(what: str, value: str) -> str | None:
    if not _NAME.match(value):
        return f"{what} {value!r} must be 1-63 characters of a-z, 0-9, '.', '_' or '-', starting alphanumeric"
    return None


@dataclass(frozen=True)
class PoolHeartbeat(Command):
    NAME: ClassVar[str] = "pool_heartbeat"
    ROLES: ClassVar[frozenset[Role]] = NODE_ONLY
    pool: str


@dataclass(frozen=True)
class ReportInventory(Command):
    NAME: ClassVar[str] = "report_inventory"
    ROLES: ClassVar[frozenset[Role]] = NODE_ONLY
    pool: str
    inventory: Inventory
    region: str = ""
    tier: str = ""
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class Submit(Command):
    NAME: ClassVar[str] = "submit"
    ROLES: ClassVar[frozenset[Role]] = ANY_HUMAN
    workload_id: str
    spec: WorkloadSpec


@dataclass(frozen=True)
class Cancel(Command):
    NAME: ClassVar[str] = "cancel"
    ROLES: ClassVar[frozenset[Role]] = ANY_HUMAN
    workload_id: str


@dataclass(frozen=True)
class ReportStatus(Command):
    NAME: ClassVar[str] = "report_status"
    ROLES: ClassVar[frozenset[Role]] = NODE_ONLY
    workload_id: str
    phase: Phase
    message: str = ""


@dataclass(frozen=True)
class Migrate(Command):
    NAME: ClassVar[str] = "migrate"
    ROLES: ClassVar[frozenset[Role]] = OPERATOR_UP
    workload_id: str
    to_pool: str = ""  # empty: the scheduler picks any pool but the current one


@dataclass(frozen=True)
class PoolControl(Command):
    NAME: ClassVar[str] = "pool_control"
    ROLES: ClassVar[frozenset[Role]] = OPERATOR_UP
    pool: str
    action: str  # drain, cordon, uncordon


def _spec_problem(spec: WorkloadSpec) -> str | None:
    if not 0 <= spec.gpus <= MAX_GPUS_PER_WORKLOAD:
        return f"gpus must be 0..{MAX_GPUS_PER_WORKLOAD}"
    if spec.gpus == 0 and spec.gpu_memory_mb:
        return "gpu memory given for a workload that asks for no GPU"
    if spec.gpus == 0 and spec.mig_profile:
        return "a MIG profile given for a workload that asks for no GPU"
    if spec.mig_profile and not _PROFILE.match(spec.mig_profile):
        return f"MIG profile {spec.mig_profile!r} must be 1-32 characters of A-Z, a-z, 0-9, '.', '+', '_' or '-'"
    if spec.gpus == 0 and spec.cpu_millis == 0:
        return "a workload must ask for at least one GPU or some CPU"
    if min(spec.gpu_memory_mb, spec.cpu_millis, spec.ram_mb, spec.max_latency_ms) < 0:
        return "resource amounts must not be negative"
    for what, items in (("labels", spec.labels), ("exclude_pools", spec.exclude_pools)):
        if len(items) > MAX_LIST_ITEMS:
            return f"at most {MAX_LIST_ITEMS} {what}"
        for item in items:
            problem = name_problem(what.rstrip("s"), item)
            if problem is not None:
                return problem
    for what, value in (("preferred region", spec.preferred_region), ("model", spec.model)):
        if value and (problem := name_problem(what, value)) is not None:
            return problem
    return None


def static_problem(command: Command) -> str | None:
    """What is wrong with a placement command regardless of state."""
    if isinstance(command, PoolHeartbeat | ReportInventory | PoolControl):
        problem = name_problem("pool", command.pool)
        if problem is None and isinstance(command, PoolControl) and command.action not in POOL_ACTIONS:
            problem = f"pool action must be one of {', '.join(POOL_ACTIONS)}"
        if problem is None and isinstance(command, ReportInventory):
            problem = _inventory_problem(command)
        return problem
    if isinstance(command, Submit | Cancel | ReportStatus | Migrate):
        problem = name_problem("workload id", command.workload_id)
        if problem is None and isinstance(command, Submit):
            problem = _spec_problem(command.spec)
        if problem is None and isinstance(command, ReportStatus) and command.phase not in REPORTABLE:
            problem = "a pool reports running, completed or failed"
        if problem is None and isinstance(command, Migrate) and command.to_pool:
            problem = name_problem("pool", command.to_pool)
        return problem
    return None


def _inventory_problem(command: ReportInventory) -> str | None:
    workers = command.inventory.workers
    if [w.name for w in workers] != sorted({w.name for w in workers}):
        return "workers must be sorted by name and unique"
    uuids = [g.uuid for w in workers for g in w.gpus]
    if len(uuids) != len(set(uuids)):
        return "a GPU UUID appears twice"
    if any([g.uuid for g in w.gpus] != sorted(g.uuid for g in w.gpus) for w in workers):
        return "GPUs must be sorted by UUID"
    listed = set(uuids)
    for gpu in (g for w in workers for g in w.gpus):
        if bool(gpu.parent) != bool(gpu.profile):
            return f"MIG instance {gpu.uuid} needs both a parent GPU and a profile"
        if gpu.parent in listed:
            return f"GPU {gpu.parent} is listed whole and as the parent of MIG instance {gpu.uuid}"
        if gpu.healthy and gpu.fault:
            return f"GPU {gpu.uuid} is healthy but names a fault"
    if list(command.labels) != sorted(set(command.labels)):
        return "labels must be sorted and unique"
    return None
