"""The placement area's values: pools, their inventory, workloads and where they run (SPEC §5, §7).

Everything here is a frozen dataclass with sorted tuples instead of sets or dicts, so two nodes that
build the same values iterate them in the same order. Times are effective milliseconds (SPEC D6);
memory is MiB, CPU is millicores: all integers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntEnum


class Trust(IntEnum):
    """SPEC §5: none < standard < high < max. A pool trusts itself at MAX."""

    NONE = 0
    STANDARD = 1
    HIGH = 2
    MAX = 3

    @classmethod
    def parse(cls, text: str) -> Trust:
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(f"unknown trust level {text!r} (one of: none, standard, high, max)") from None

    @property
    def label(self) -> str:
        return self.name.lower()


class Health(Enum):
    UP = "up"
    DOWN = "down"


class Phase(Enum):
    """A workload's lifecycle (see lifecycle.py for the allowed transitions)."""

    PENDING = "pending"
    PLACED = "placed"
    RUNNING = "running"
    DRAINING = "draining"
    MIGRATING = "migrating"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (Phase.COMPLETED, Phase.FAILED, Phase.CANCELLED)

    @property
    def holds_resources(self) -> bool:
        return self in (Phase.PLACED, Phase.RUNNING, Phase.DRAINING, Phase.MIGRATING)


@dataclass(frozen=True, order=True)
class Gpu:
    """One schedulable unit: a whole GPU, or a MIG instance (then `parent` is the card's UUID)."""

    uuid: str
    model: str
    memory_mb: int
    healthy: bool = True
    parent: str = ""                   # MIG: the UUID of the GPU this instance is carved from
    profile: str = ""                  # MIG: the instance profile, e.g. "1g.10gb"; "" for a whole GPU
    fault: str = ""                    # why it is unhealthy (the health signal), "" when healthy


@dataclass(frozen=True, order=True)
class Worker:
    name: str
    cpu_millis: int
    ram_mb: int
    gpus: tuple[Gpu, ...] = ()  # sorted by uuid


@dataclass(frozen=True)
class Inventory:
    """What a pool reported it has (capacity and health, not moment-to-moment use)."""

    workers: tuple[Worker, ...] = ()  # sorted by name

    @property
    def gpu_count(self) -> int:
        return sum(1 for w in self.workers for g in w.gpus if g.healthy)


@dataclass(frozen=True)
class PoolHealth:
    """Heartbeat bookkeeping (SPEC D7) and flap history (SPEC §7 anti-flap)."""

    health: Health = Health.UP
    last_heartbeat_ms: int = 0
    changed_ms: int = 0                 # when `health` last changed
    down_events_ms: tuple[int, ...] = ()  # when it went DOWN, recent ones only (within hysteresis)


@dataclass(frozen=True, order=True)
class GpuFault:
    """A GPU unit that failed (reported unhealthy or no longer reported) and takes no new work until it
    has been reported healthy for the hysteresis window (see gpu_health.py)."""

    uuid: str
    worker: str                        # where it was when it failed
    reason: str                        # the health signal, or "no longer reported"
    since_ms: int                      # when it failed (last time reported failing)
    healthy_since_ms: int | None = None  # reported healthy again since then; usable at this + hysteresis


@dataclass(frozen=True)
class Pool:
    id: str
    region: str = ""
    tier: str = ""                     # "gpu", "cpu", "hq", ... (specialty scoring)
    labels: tuple[str, ...] = ()       # sorted
    voter: bool = False
    status: PoolHealth = field(default_factory=PoolHealth)
    inventory: Inventory = field(default_factory=Inventory)
    cordoned: bool = False
    drain_started_ms: int | None = None  # graceful drain in progress since then
    gpu_faults: tuple[GpuFault, ...] = ()  # sorted by uuid: units that take no new work (gpu_health.py)


@dataclass(frozen=True)
class WorkloadSpec:
    gpus: int = 0
    gpu_memory_mb: int = 0             # floor per GPU
    cpu_millis: int = 0
    ram_mb: int = 0
    priority: int = 0                  # higher wins; preemption per policy
    min_trust: Trust = Trust.STANDARD  # for pools other than the submitter's own
    labels: tuple[str, ...] = ()       # required pool labels, sorted
    exclude_pools: tuple[str, ...] = ()  # sorted
    preferred_region: str = ""
    model: str = ""                    # catalog model name: pools with a replica score data locality
    max_latency_ms: int = 0            # 0: no limit; else from the submitter's region (policy table)
    mig_profile: str = ""              # only MIG instances of this profile (e.g. "1g.10gb"); "": any unit


@dataclass(frozen=True, order=True)
class Placement:
    pool: str
    worker: str
    gpus: tuple[str, ...] = ()         # GPU UUIDs, sorted


@dataclass(frozen=True)
class Move:
    """One recorded change of where a workload runs."""

    at_ms: int
    index: int
    from_pool: str
    to_pool: str
    reason: str                        # failover, return, drain, rebalance, migrate, preempted, ...


@dataclass(frozen=True)
class Workload:
    id: str
    spec: WorkloadSpec
    submitter_pool: str
    phase: Phase = Phase.PENDING
    placement: Placement | None = None
    home_pool: str = ""                # where it was first placed (sticky return)
    submitted_index: int = 0
    placed_ms: int = 0
    last_load_move_ms: int | None = None  # for "moves at most once per hysteresis for load reasons"
    moves: tuple[Move, ...] = ()       # most recent last, capped by the applier
    reason: str = ""                   # why it is pending / failed / cancelled
    explanation: bytes = b""           # compact, see scheduler/explain.py
    tried_ms: int | None = None        # last placement attempt that found no pool (orchestration retry pacing)


@dataclass(frozen=True)
class Latency:
    region_a: str
    region_b: str
    ms: int


@dataclass(frozen=True)
class Weights:
    """Integer score weights (SPEC §7), replicated in policy."""

    free_capacity: int = 4
    preferred_region: int = 3
    data_locality: int = 3
    latency: int = 2
    specialty: int = 2
    spread: int = 1


@dataclass(frozen=True)
class Policy:
    """Replicated placement policy (changed by SetPolicy, SPEC §5). Defaults are SPEC's numbers."""

    heartbeat_ms: int = 10_000
    missed_heartbeats: int = 3
    hysteresis_ms: int = 300_000
    return_window_ms: int = 60_000
    drain_ms: int = 60_000
    rebalance_threshold_pct: int = 20
    max_moves_per_tick: int = 8
    tick_interval_ms: int = 1_000
    preemption: bool = True
    weights: Weights = field(default_factory=Weights)
    latencies: tuple[Latency, ...] = ()

    @property
    def down_after_ms(self) -> int:
        return self.heartbeat_ms * self.missed_heartbeats

    def latency_ms(self, a: str, b: str) -> int | None:
        if a == b:
            return 0
        for lat in self.latencies:
            if {lat.region_a, lat.region_b} == {a, b}:
                return lat.ms
        return None
