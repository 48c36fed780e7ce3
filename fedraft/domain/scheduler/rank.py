"""Ranking (SPEC §7): integer score parts per pool, weighted by policy; higher total is better.

Every part is 0..100 and the total is the weighted sum, so the explanation can show both.

| part      | 100 when                                       | falls with                          |
|-----------|------------------------------------------------|-------------------------------------|
| free      | the pool stays empty after this placement       | share of its GPUs (CPU work: CPU) used |
| region    | pool.region == spec.preferred_region            | 0 otherwise or no preference        |
| locality  | the pool holds a replica of spec.model          | 0 otherwise or no model             |
| latency   | same region as the submitter pool               | 100 * H // (H + ms), 0 when unknown |
| specialty | GPU work on tier "gpu", CPU-only work on "cpu"  | 0 otherwise                         |
| spread    | the submitter has nothing running there         | 100 // (1 + its workloads there)    |
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Set
from heapq import heappop, heappush

from fedraft.domain.placement.model import Weights
from fedraft.domain.scheduler.feasible import Request
from fedraft.domain.scheduler.view import FederationView, Shape

PARTS: tuple[str, ...] = ("free", "region", "locality", "latency", "specialty", "spread")
LATENCY_HALF_MS = 50  # a pool this far away scores half of a same-region pool


def weight_vector(weights: Weights) -> tuple[int, ...]:
    return (weights.free_capacity, weights.preferred_region, weights.data_locality, weights.latency,
            weights.specialty, weights.spread)


def free_capacity(view: FederationView, req: Request, pool_id: str) -> int:
    if req.gpu_work:
        total, free, want = view.total_units(pool_id), view.free_units(pool_id), req.spec.gpus
    else:
        total, free, want = view.cpu_total(pool_id), view.cpu_free(pool_id), req.spec.cpu_millis
    return max(0, free - want) * 100 // total if total > 0 else 0


def preferred_region(req: Request, region: str) -> int:
    return 100 if req.spec.preferred_region and region == req.spec.preferred_region else 0


def data_locality(view: FederationView, req: Request, pool_id: str) -> int:
    return 100 if req.spec.model and pool_id in view.replica_pools(req.spec.model) else 0


def latency(req: Request, region: str) -> int:
    ms = req.latency_to(region)
    return 100 * LATENCY_HALF_MS // (LATENCY_HALF_MS + max(0, ms)) if ms is not None else 0


def specialty(req: Request, tier: str) -> int:
    return 100 if tier == ("gpu" if req.gpu_work else "cpu") else 0


def spread(view: FederationView, req: Request, pool_id: str) -> int:
    return 100 // (1 + view.submitter_count(req.submitter, pool_id))


class Scorer:
    """Scores pools for one request; the parts that depend only on region and tier are computed once."""

    def __init__(self, view: FederationView, req: Request, weights: Weights) -> None:
        self.view = view
        self.req = req
        self.weights = weight_vector(weights)
        self._static: dict[tuple[str, str], tuple[int, int, int]] = {}

    def parts(self, pool_id: str) -> tuple[int, ...]:
        pool = self.view.capacity(pool_id).pool
        region, region_latency, tier = self._fixed(pool.region, pool.tier)
        return (
            free_capacity(self.view, self.req, pool_id),
            region,
            data_locality(self.view, self.req, pool_id),
            region_latency,
            tier,
            spread(self.view, self.req, pool_id),
        )

    def total(self, pool_id: str) -> int:
        return sum(w * p for w, p in zip(self.weights, self.parts(pool_id), strict=True))

    def _fixed(self, region: str, tier: str) -> tuple[int, int, int]:
        """The parts fixed by region and tier: (region, latency, specialty), cached."""
        key = (region, tier)
        found = self._static.get(key)
        if found is None:
            found = (preferred_region(self.req, region), latency(self.req, region), specialty(self.req, tier))
            self._static[key] = found
        return found

    def _base(self, region: str, tier: str) -> int:
        """The weighted parts fixed by region and tier."""
        _, w_region, _, w_latency, w_specialty, _ = self.weights
        region_part, latency_part, specialty_part = self._fixed(region, tier)
        return w_region * region_part + w_latency * latency_part + w_specialty * specialty_part

    def ranked(self, ids: Set[str]) -> Iterator[tuple[int, list[str]]]:
        """`ids` in groups of equal total, best total first, each total once, computed lazily.

        The view keeps pools bucketed by shape (region, tier, free capacity). In a GPU shape only
        spread varies, so its pools are scored in bulk, one set per count of the submitter's workloads
        there, fewest first (best first); CPU shapes are scored pool by pool when opened. A heap holds
        exact groups and not-yet-scored work keyed by the best total it can still give (a bucket: spread
        100, and for CPU work the free part before this placement; a GPU bucket's next count: exact).
        At equal keys unscored work comes first, so a total is yielded only once nothing unseen can
        still tie with or beat it. Member order inside a group is unspecified: callers sort.
        """
        view, req = self.view, self.req
        w_free, _, w_locality, _, _, w_spread = self.weights
        gpu_work = req.gpu_work
        replicas = view.replica_pools(req.spec.model) if req.spec.model and w_locality else frozenset()
        mine = view.submitter_pools(req.submitter) if w_spread else set()
        counts = view.submitter_counts(req.submitter)
        levels = sorted(view.submitter_levels(req.submitter).items()) if w_spread else []
        want = req.spec.cpu_millis
        capacity = view.capacity
        shapes = view.shapes(gpu_work)
        inside_shapes: Iterable[tuple[Shape, Set[str]]]
        if len(ids) < len(shapes):          # few pools: group them by shape rather than cut every shape
            grouped: dict[Shape, set[str]] = {}
            for pool_id in ids:
                cap = capacity(pool_id)
                key = cap.gpu_key if gpu_work else cap.cpu_key
                assert key is not None
                grouped.setdefault(key, set()).add(pool_id)
            inside_shapes = grouped.items()
        else:
            inside_shapes = ((shape, members & ids) for shape, members in shapes.items())
        heap: list[tuple[int, bool, int, _Entry]] = []   # (-key, exact, seq, data): unscored work first at a key
        seq = 0

        def push(key: int, exact: bool, data: _Entry) -> None:
            nonlocal seq
            seq += 1
            heappush(heap, (-key, exact, seq, data))

        for shape, inside in inside_shapes:  # the heap orders them: iteration order cannot matter
            if not inside:
                continue
            region, tier, a, b = shape
            free = (max(0, a - req.spec.gpus) * 100 // b if b > 0 else 0) if gpu_work else a
            bound = self._base(region, tier) + w_free * free + w_spread * 100
            if replicas:
                near = inside & replicas
                if near:
                    push(bound + w_locality * 100, False, _Bucket(shape, True, near))
                    inside = inside - near
            if inside:
                push(bound, False, _Bucket(shape, False, inside))
        while heap:
            negative, exact, _, data = heap[0]
            if exact:
                group: list[str] = []
                while heap and heap[0][0] == negative:  # only exact groups are left at this key
                    found = heappop(heap)[3]
                    assert isinstance(found, tuple)
                    group.extend(found)
                yield -negative, group
                continue
            heappop(heap)
            if isinstance(data, _Bucket):
                (region, tier, _, _), has_replica, members = data.shape, data.has_replica, data.members
                if gpu_work:
                    # Free part exact per shape: only spread varies, by how much the submitter runs there.
                    plain = members - mine if mine else members
                    if plain:
                        push(-negative, True, tuple(plain))
                    rest = len(members) - len(plain)
                    if rest and levels:
                        base = -negative - w_spread * 100
                        if rest > len(levels):   # many pools: one set operation per count, when needed
                            push(base + w_spread * (100 // (1 + levels[0][0])), False, _Level(members, 0, base))
                            continue
                        by_total: dict[int, list[str]] = {}   # few: look each one's count up
                        for pool_id in members:
                            n = counts.get(pool_id, 0)
                            if n:
                                by_total.setdefault(base + w_spread * (100 // (1 + n)), []).append(pool_id)
                        for total, at_total in by_total.items():
                            push(total, True, tuple(at_total))
                    continue
                fixed = self._base(region, tier) + (w_locality * 100 if has_replica else 0)
                scored: dict[int, list[str]] = {}
                for pool_id in members:
                    cap = capacity(pool_id)
                    total = fixed + w_spread * (100 // (1 + counts.get(pool_id, 0)))
                    if cap.cpu_total > 0 and cap.cpu_free > want:
                        total += w_free * ((cap.cpu_free - want) * 100 // cap.cpu_total)
                    scored.setdefault(total, []).append(pool_id)
                for total, pools in scored.items():
                    push(total, True, tuple(pools))
                continue
            assert isinstance(data, _Level)              # a GPU bucket's pools at the next count
            at = data.at
            hit = data.members & levels[at][1]
            if hit:
                push(-negative, True, tuple(hit))
            if at + 1 < len(levels):
                push(data.base + w_spread * (100 // (1 + levels[at + 1][0])), False, _Level(data.members, at + 1,
                                                                                              data.base))


class _Bucket:
    """Pools of one shape (and replica holding) not scored yet."""

    __slots__ = ("has_replica", "members", "shape")

    def __init__(self, shape: Shape, has_replica: bool, members: Set[str]) -> None:
        self.shape, self.has_replica, self.members = shape, has_replica, members


class _Level:
    """A GPU bucket's pools where the submitter runs `levels[at]` workloads, not intersected yet."""

    __slots__ = ("at", "base", "members")

    def __init__(self, members: Set[str], at: int, base: int) -> None:
        self.members, self.at, self.base = members, at, base


_Entry = tuple[str, ...] | _Bucket | _Level
