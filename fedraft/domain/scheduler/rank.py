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

from collections.abc import Iterator, Set
from heapq import heappop, heappush

from fedraft.domain.placement.model import Weights
from fedraft.domain.scheduler.feasible import Request
from fedraft.domain.scheduler.view import FederationView, Shape

PARTS: tuple[str, ...] = ("free", "region", "locality", "latency", "specialty", "spread")
LATENCY_HALF_MS = 50  # a pool this far away scores half of a same-region pool

# A lazy part of a total: (pools, narrow them to the candidates and split by replica, holds a replica,
# pools to leave out); `_Pending`: total -> (pools scored one by one, lazy parts).
_Part = tuple[Set[str], bool, bool, Set[str] | None]
_Pending = dict[int, tuple[list[str], list[_Part]]]


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
        self._replicas = view.replica_pools(req.spec.model) if req.spec.model else frozenset()

    def parts(self, pool_id: str) -> tuple[int, ...]:
        """The six parts, as free_capacity, preferred_region, data_locality, latency, specialty and
        spread compute them (inlined: the explanation asks for them pool by pool)."""
        cap = self.view.capacity(pool_id)
        pool = cap.pool
        region, region_latency, tier = self._fixed(pool.region, pool.tier)
        if self.req.gpu_work:
            total, free, want = cap.total_units, cap.free_units, self.req.spec.gpus
        else:
            total, free, want = cap.cpu_total, cap.cpu_free, self.req.spec.cpu_millis
        return (
            max(0, free - want) * 100 // total if total > 0 else 0,
            region,
            100 if pool_id in self._replicas else 0,
            region_latency,
            tier,
            100 // (1 + self.view.submitter_count(self.req.submitter, pool_id)),
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

        The view keeps pools bucketed by shape (region, tier, free capacity). A bucket's bound is the
        best total any of its pools can have (spread 100, and for CPU work the free part before this
        placement). In a GPU shape only spread varies: the view keeps, per submitter, the shape's pools
        by count of its workloads there (`submitter_spread`), so a reached shape is split into exact
        totals without touching its pools, and a part is narrowed to `ids` only when its total is the
        best one left. In a CPU shape the free part is only bounded (free CPU percent before this
        placement), so its pools are scored one by one; but when it is reached it is first split the same
        way by the submitter's count there (`submitter_spread(..., gpu_work=False)`), each part bounded
        with its exact spread, and a part is scored only when its own bound is reached (once the
        submitter runs work on most pools, a bound assuming spread 100 reached nearly every shape).
        A total is yielded only once every bucket whose bound reaches it has been split or scored, so
        nothing unseen can still tie with or beat it.
        """
        view, req = self.view, self.req
        w_free, _, w_locality, _, _, w_spread = self.weights
        gpu_work = req.gpu_work
        replicas = view.replica_pools(req.spec.model) if req.spec.model and w_locality else frozenset()
        mine = view.submitter_pools(req.submitter) if w_spread else set()
        counts = view.submitter_counts(req.submitter)
        capacity = view.capacity
        spec_gpus = req.spec.gpus
        bases: dict[tuple[str, str], int] = {}

        def bound_of(shape: Shape) -> int:  # Scorer._bound, with the region/tier part looked up once per call
            region, tier, a, b = shape
            base = bases.get((region, tier))
            if base is None:
                base = bases[(region, tier)] = self._base(region, tier) + w_spread * 100
            if not gpu_work:
                return base + w_free * a
            return base + w_free * (max(0, a - spec_gpus) * 100 // b if b > 0 else 0)

        # (bound, shape, holds a replica, pools, cut): `cut` buckets still have to be narrowed to `ids` (and
        # split by replica) when they are reached — most are never reached, so most shapes are never cut.
        buckets: list[tuple[int, Shape, bool, Set[str], bool]] = []
        members: Set[str]
        shapes = view.shapes(gpu_work)
        if len(ids) < len(shapes):   # few pools (a preemption's candidates): group them rather than cut every shape
            grouped: dict[Shape, set[str]] = {}
            for pool_id in ids:
                cap = capacity(pool_id)
                key = cap.gpu_key if gpu_work else cap.cpu_key
                assert key is not None
                grouped.setdefault(key, set()).add(pool_id)
            for shape, inside in grouped.items():
                bound = bound_of(shape)
                if replicas:
                    near = inside & replicas
                    if near:
                        buckets.append((bound + w_locality * 100, shape, True, near, False))
                        inside -= near
                if inside:
                    buckets.append((bound, shape, False, inside, False))
        else:
            for shape, of_shape in shapes.items():  # sorted below: order cannot matter
                bound = bound_of(shape)
                if replicas:
                    buckets.append((bound + w_locality * 100, shape, True, of_shape, True))
                buckets.append((bound, shape, False, of_shape, True))
        buckets.sort(key=lambda b: (-b[0], b[1], b[2]))
        # A lazy part is materialized only when its total is the best one left.
        pending: _Pending = {}
        spread_of = view.submitter_spread(req.submitter) if gpu_work and w_spread else {}
        cpu_spread = view.submitter_spread(req.submitter, False) if not gpu_work and w_spread else None
        # CPU shapes split by spread count when reached, a heap of (-bound, seq, shape, has_replica, pools,
        # pools to leave out): each is narrowed to `ids` and scored when its bound is reached.
        split: list[tuple[int, int, Shape, bool, Set[str], Set[str] | None]] = []
        seq = 0
        n_buckets = len(buckets)
        i = 0
        while True:
            while True:
                if i < n_buckets:
                    bound = buckets[i][0]
                    from_split = bool(split) and -split[0][0] > bound
                    if from_split:
                        bound = -split[0][0]
                elif split:
                    bound, from_split = -split[0][0], True
                else:
                    break
                if pending and bound < max(pending):
                    break
                if from_split:
                    _, _, shape, has_replica, members, leave_out = heappop(split)
                    members = members & ids
                    if leave_out:
                        members = members - leave_out
                    if replicas:
                        members = members & replicas if has_replica else members - replicas
                    if members:
                        self._score_cpu(pending, shape, has_replica, members, counts)
                    continue
                bound, shape, has_replica, members, cut = buckets[i]
                i += 1
                if gpu_work:
                    # Free part exact per shape: only spread varies, by how much the submitter runs there.
                    if cut:  # exact (shape, n) buckets from the view: nothing is intersected before it is the top
                        by_count = spread_of.get(shape)
                        if not by_count:
                            _slot(pending, bound)[1].append((members, True, has_replica, None))
                            continue
                        if sum(len(at) for at in by_count.values()) < len(members):
                            _slot(pending, bound)[1].append((members, True, has_replica, mine))
                        for count, at in by_count.items():
                            total = bound - w_spread * 100 + w_spread * (100 // (1 + count))
                            _slot(pending, total)[1].append((at, True, has_replica, None))
                        continue
                    if not mine:
                        _slot(pending, bound)[1].append((members, False, has_replica, None))
                        continue
                    for pool_id in members:  # few pools, already narrowed: by count one by one
                        count = counts.get(pool_id, 0)
                        total = bound - w_spread * 100 + w_spread * (100 // (1 + count)) if count else bound
                        _slot(pending, total)[0].append(pool_id)
                    continue
                if cut and cpu_spread:
                    by_count = cpu_spread.get(shape)
                    if by_count:  # the submitter runs work on some of these pools: split by how much
                        spread_free = bound - w_spread * 100
                        listed = 0
                        for count, at in by_count.items():
                            listed += len(at)
                            seq += 1
                            heappush(split, (-(spread_free + w_spread * (100 // (1 + count))), seq, shape,
                                             has_replica, at, None))
                        if listed < len(members):
                            seq += 1
                            heappush(split, (-bound, seq, shape, has_replica, members, mine))
                        continue
                if cut:  # narrowed now: the pools of the shape among `ids`, with or without a replica
                    members = _narrow(members, ids, replicas, has_replica)
                    if not members:
                        continue
                self._score_cpu(pending, shape, has_replica, members, counts)
            if not pending:
                return
            top = max(pending)
            ready, parts = pending.pop(top)
            for part, cut, has_replica, leave_out in parts:
                if cut:
                    part = _narrow(part, ids, replicas, has_replica)
                if leave_out:
                    part = part - leave_out
                ready.extend(part)
            if ready:
                yield top, ready

    def _score_cpu(self, pending: _Pending, shape: Shape, has_replica: bool, members: Set[str],
                   counts: dict[str, int]) -> None:
        """Score a CPU shape's `members` (narrowed) one by one into `pending` (total -> pools)."""
        w_free, _, w_locality, _, _, w_spread = self.weights
        want = self.req.spec.cpu_millis
        capacity = self.view.capacity
        region, tier, _, _ = shape
        fixed = self._base(region, tier) + (w_locality * 100 if has_replica else 0)
        for pool_id in members:
            cap = capacity(pool_id)
            count = counts.get(pool_id, 0)
            total = fixed + (w_spread * 100 if not count else w_spread * (100 // (1 + count)))
            free, cpu_total = cap.cpu_free, cap.cpu_total
            if cpu_total > 0 and free > want:
                total += w_free * ((free - want) * 100 // cpu_total)
            _slot(pending, total)[0].append(pool_id)


def _narrow(members: Set[str], ids: Set[str], replicas: Set[str], has_replica: bool) -> Set[str]:
    """A bucket's pools among the candidates `ids`, those with (`has_replica`) or without a replica."""
    members = members & ids
    if replicas:
        members = members & replicas if has_replica else members - replicas
    return members


def _slot(pending: _Pending, total: int) -> tuple[list[str], list[_Part]]:
    """`pending[total]`, created empty: (pools scored one by one, lazy parts)."""
    found = pending.get(total)
    if found is None:
        found = pending[total] = ([], [])
    return found
