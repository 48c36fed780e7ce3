"""Feasibility (SPEC §7): the filters a pool must pass to take one workload, in pipeline order.

Each filter is a small named function `(view, request, pool) -> None | refusal reason`; the first
one that refuses names why a pool was left out. FILTERS below is the whole rule set, top to bottom.

`narrow` applies the pool-level filters through the view's set indexes (same results, a few C-level
set operations instead of a Python loop over every pool); `worker_fit` is the capacity check that
needs a worker: GPUs, CPU and RAM all on one worker, whole GPUs by UUID.

GPU choice (documented contract): on a pool, the worker that fits with the fewest sufficient free
GPUs wins (best fit, then least free CPU, then RAM, then name); on it, the units are the smallest
sufficient ones by memory (best fit by memory), ties by UUID. Big GPUs stay free for big jobs.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, replace
from typing import cast

from fedraft.domain.placement.model import Gpu, Health, Policy, Pool, Trust, Workload, WorkloadSpec
from fedraft.domain.scheduler.view import FederationView

EXAMPLES = 3  # refused pools named per filter (lowest ids); the rest are counted
MEMO_LIMIT = 1_024  # memoized pool-level filter results kept in a view


@dataclass(frozen=True)
class Request:
    """One placement question, with what every filter needs precomputed."""

    workload_id: str
    spec: WorkloadSpec
    submitter: str
    origin_region: str | None          # the submitter pool's region; None when that pool is unknown
    trust_floor: Trust                 # other pools need at least this (never below STANDARD)
    exclude: frozenset[str]
    avoid: frozenset[str]
    policy: Policy

    @classmethod
    def of(cls, view: FederationView, workload: Workload, policy: Policy, avoid: frozenset[str]) -> Request:
        origin = view.pool(workload.submitter_pool)
        spec = workload.spec
        if min(spec.gpus, spec.gpu_memory_mb, spec.cpu_millis, spec.ram_mb) < 0:  # apply never raises: clamp
            spec = replace(spec, gpus=max(0, spec.gpus), gpu_memory_mb=max(0, spec.gpu_memory_mb),
                           cpu_millis=max(0, spec.cpu_millis), ram_mb=max(0, spec.ram_mb))
        return cls(
            workload_id=workload.id,
            spec=spec,
            submitter=workload.submitter_pool,
            origin_region=origin.region if origin is not None else None,
            trust_floor=max(spec.min_trust, Trust.STANDARD),
            exclude=frozenset(spec.exclude_pools),
            avoid=avoid,
            policy=policy,
        )

    @property
    def gpu_work(self) -> bool:
        return self.spec.gpus > 0

    def latency_to(self, region: str) -> int | None:
        if self.origin_region is None:
            return None
        return self.policy.latency_ms(self.origin_region, region)


@dataclass(frozen=True)
class Fit:
    """Where on a pool the workload goes."""

    worker: str
    gpus: tuple[str, ...]              # UUIDs, sorted


Check = Callable[[FederationView, Request, Pool], "str | None"]


def health(view: FederationView, req: Request, pool: Pool) -> str | None:
    return None if pool.status.health is Health.UP else "pool is down"


def state(view: FederationView, req: Request, pool: Pool) -> str | None:
    if pool.cordoned:
        return "cordoned"
    if pool.drain_started_ms is not None:
        return "draining"
    return None


def excluded(view: FederationView, req: Request, pool: Pool) -> str | None:
    if pool.id in req.exclude:
        return "excluded by the workload"
    if pool.id in req.avoid:
        return "avoided (moving away or flapping)"
    return None


def trust(view: FederationView, req: Request, pool: Pool) -> str | None:
    """Zero default trust: only the submitter's own pool and pools paired at the needed level."""
    if pool.id == req.submitter:
        return None
    level = view.trust(req.submitter, pool.id)
    if level is Trust.NONE:
        return f"not paired with {req.submitter}"
    if level < req.trust_floor:
        return f"trust {level.label} < {req.trust_floor.label}"
    return None


def labels(view: FederationView, req: Request, pool: Pool) -> str | None:
    missing = [label for label in req.spec.labels if label not in pool.labels]
    return f"missing labels {','.join(missing)}" if missing else None


def latency(view: FederationView, req: Request, pool: Pool) -> str | None:
    limit = req.spec.max_latency_ms
    if not limit:
        return None
    ms = req.latency_to(pool.region)
    if ms is None:
        return f"latency {req.origin_region or '?'}->{pool.region or '?'} unknown"
    return f"latency {ms} ms > {limit} ms" if ms > limit else None


def gpus(view: FederationView, req: Request, pool: Pool) -> str | None:
    """A worker with `spec.gpus` free usable units of at least `spec.gpu_memory_mb` each (of MIG profile
    `spec.mig_profile` when one is asked for)."""
    found = worker_fit(view, req, pool.id)
    return found[1] if isinstance(found, tuple) and found[0] == "gpus" else None


def cpu(view: FederationView, req: Request, pool: Pool) -> str | None:
    """Of the workers that pass `gpus`, one also has the CPU free."""
    found = worker_fit(view, req, pool.id)
    return found[1] if isinstance(found, tuple) and found[0] == "cpu" else None


def ram(view: FederationView, req: Request, pool: Pool) -> str | None:
    """Of the workers that pass `gpus` and `cpu`, one also has the RAM free."""
    found = worker_fit(view, req, pool.id)
    return found[1] if isinstance(found, tuple) and found[0] == "ram" else None


FILTERS: tuple[tuple[str, Check], ...] = (
    ("health", health),        # pool UP
    ("state", state),          # not cordoned, not draining
    ("excluded", excluded),    # spec.exclude_pools, and the caller's avoid set
    ("trust", trust),          # own pool, or paired at >= max(min_trust, standard)
    ("labels", labels),        # required labels all present
    ("latency", latency),      # from the submitter's region, policy table (unknown with a limit: refused)
    ("gpus", gpus),            # worker-level capacity from here on
    ("cpu", cpu),
    ("ram", ram),
)
FILTER_NAMES: tuple[str, ...] = tuple(name for name, _ in FILTERS)
_CHECKS = dict(FILTERS)


def first_refusal(view: FederationView, req: Request, pool: Pool) -> tuple[str, str] | None:
    """The first filter that refuses the pool, with its reason (the plain, one-pool reading of FILTERS)."""
    for name, check in FILTERS:
        reason = check(view, req, pool)
        if reason is not None:
            return name, reason
    return None


# -- the same pool-level filters through the view's indexes ------------------------------------


def _keep_health(view: FederationView, req: Request, ids: set[str]) -> set[str]:
    return ids & view.up_ids()


def _keep_state(view: FederationView, req: Request, ids: set[str]) -> set[str]:
    closed = view.closed_ids()
    return ids - closed if closed else ids


def _keep_excluded(view: FederationView, req: Request, ids: set[str]) -> set[str]:
    out = req.exclude | req.avoid
    return ids - out if out else ids


def _keep_trust(view: FederationView, req: Request, ids: set[str]) -> set[str]:
    return ids & view.trusted_by(req.submitter, req.trust_floor)


def _keep_labels(view: FederationView, req: Request, ids: set[str]) -> set[str]:
    for label in req.spec.labels:
        ids = ids & view.label_ids(label)
    return ids


def _keep_latency(view: FederationView, req: Request, ids: set[str]) -> set[str]:
    limit = req.spec.max_latency_ms
    if not limit:
        return ids
    near: set[str] = set()
    for region in view.regions():
        ms = req.latency_to(region)
        if ms is not None and ms <= limit:
            near |= view.region_ids(region)
    return ids & near


_INDEXED: tuple[tuple[str, Callable[[FederationView, Request, set[str]], set[str]]], ...] = (
    ("health", _keep_health),
    ("state", _keep_state),
    ("excluded", _keep_excluded),
    ("trust", _keep_trust),
    ("labels", _keep_labels),
    ("latency", _keep_latency),
)


@dataclass(frozen=True)
class Refused:
    """How many pools one filter left out, with the lowest ids as examples (pool, reason)."""

    filter: str
    count: int
    examples: tuple[tuple[str, str], ...]


def narrow(view: FederationView, req: Request) -> tuple[frozenset[str], tuple[Refused, ...]]:
    """The pools that pass every pool-level filter, and per filter what it refused.

    Equal to running FILTERS[:6] over every pool (tests hold the two readings together). These
    depend on pools and trust only, not on bookings, so the result is memoized in the view until
    its next set_pool.
    """
    spec = req.spec
    key = ("narrow", req.submitter, req.origin_region, req.trust_floor, req.exclude, req.avoid, spec.labels,
           spec.max_latency_ms, req.policy.latencies if spec.max_latency_ms else ())
    found = view.memo.get(key)
    if found is not None:
        return cast(tuple[frozenset[str], tuple[Refused, ...]], found)
    ids = view.all_ids()
    refused: list[Refused] = []
    for name, keep in _INDEXED:
        kept = keep(view, req, ids)
        if len(kept) != len(ids):
            refused.append(_refused(view, req, name, ids - kept))
        ids = kept
    result = (frozenset(ids), tuple(refused))
    if len(view.memo) >= MEMO_LIMIT:  # a view kept across entries must not grow without bound
        view.memo.clear()
    view.memo[key] = result
    return result


def with_free_units(view: FederationView, req: Request, ids: frozenset[str]) -> tuple[Set[str], Refused | None]:
    """Quick capacity cut: drop pools where no worker has `spec.gpus` free units of any memory.

    The kept pools may be the view's own index set (when `ids` holds every pool): read only, and only
    until the view next changes."""
    if not req.gpu_work:
        return ids, None
    fitting = view.ids_with_free_units(req.spec.gpus)
    # `ids` are pools of the view: when they are all of them, the cut is the index itself (no intersection)
    kept = fitting if len(ids) == len(view.all_ids()) else ids & fitting
    short = len(ids) - len(kept)
    if not short:
        return kept, None
    # The refused pools are counted, and only their lowest few named: no set of them is built.
    return kept, _refused(view, req, "gpus", ids, short, view.lowest_ids_without(ids, kept, EXAMPLES, short))


def _refused(view: FederationView, req: Request, name: str, ids: Set[str], count: int | None = None,
             lowest: list[str] | None = None) -> Refused:
    """Refused(name) for the pools `ids` (or, given `count` and `lowest`, that many, the lowest named)."""
    check = _CHECKS[name]
    examples = []
    for pool_id in view.lowest_ids(ids, EXAMPLES) if lowest is None else lowest:
        pool = view.pool(pool_id)
        assert pool is not None
        examples.append((pool_id, check(view, req, pool) or "refused"))
    return Refused(name, len(ids) if count is None else count, tuple(examples))


FITS = Fit("", ())  # worker_fit(..., locate=False): the pool fits (where was not asked)


def worker_fit(view: FederationView, req: Request, pool_id: str, *, locate: bool = True) -> Fit | tuple[str, str]:
    """The worker and GPUs for the workload on this pool, or (refusing filter, reason). With
    `locate=False` a fitting pool gives FITS: the same verdict, without choosing the units."""
    spec = req.spec
    want, floor = spec.gpus, spec.gpu_memory_mb
    best: tuple[int, int, int, str] | None = None
    most = 0
    gpu_ok = cpu_ok = False
    profile = spec.mig_profile
    for w in view.worker_capacity(pool_id):
        name, free_cpu, free_ram, free = w.name, w.cpu, w.ram, w.free
        if not want:
            units = 0
        elif profile:
            units = len(fitting_units(free, floor, profile, w.gpus))
        else:
            units = len(free) - bisect_left(free, (floor, ""))
        if units < want:
            most = max(most, units)
            continue
        gpu_ok = True
        if free_cpu < spec.cpu_millis:
            continue
        cpu_ok = True
        if free_ram < spec.ram_mb:
            continue
        key = (units, free_cpu, free_ram, name)
        if best is None or key < best:
            best = key
    if best is None:
        if not gpu_ok:
            if not want:
                return "cpu", "no workers reported"
            size = f" of >= {floor} MiB" if floor else ""
            kind = f"free MIG {profile} instances" if profile else "free GPUs"
            return "gpus", f"no worker has {want} {kind}{size} (most {most})"
        if not cpu_ok:
            return "cpu", f"no worker with the GPUs has {spec.cpu_millis}m CPU free"
        return "ram", f"no worker with the GPUs and CPU has {spec.ram_mb} MiB RAM free"
    if not locate:
        return FITS
    worker = best[3]
    free = view.free_gpus_on(pool_id, worker)
    if profile:
        units_of = next(w.gpus for w in view.worker_capacity(pool_id) if w.name == worker)
        return Fit(worker, tuple(sorted(uuid for _, uuid in fitting_units(free, floor, profile, units_of)[:want])))
    start = bisect_left(free, (floor, ""))
    return Fit(worker, tuple(sorted(uuid for _, uuid in free[start:start + want])))


def fitting_units(free: list[tuple[int, str]], floor: int, profile: str,
                  units: Mapping[str, Gpu]) -> list[tuple[int, str]]:
    """The free units (sorted (memory, uuid)) of at least `floor` MiB, and of MIG profile `profile` when
    one is asked for (only MIG instances carry a profile, so such work never gets a whole GPU)."""
    start = bisect_left(free, (floor, ""))
    if not profile:
        return free[start:]
    return [u for u in free[start:] if units[u[1]].profile == profile]
