"""The scheduler's mutable index of one apply: pools, trust, replicas and what is booked where.

Built from sorted inputs and updated in place by `book`/`release`/`set_pool`, so a run of placements
inside one apply never rebuilds it. Indexes are Python sets for speed; every reader either iterates
them sorted or reduces them with an order-independent operation (a count, a min/max over a total
order), so string-hash randomization can never change a decision between two nodes.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Mapping, Set
from hashlib import sha256
from heapq import nsmallest
from typing import Any

from fedraft.domain.placement.model import Gpu, Health, Pool, Trust, Workload
from fedraft.domain.scheduler.spread import SpreadIndex


class WorkerFree:
    """One worker's free capacity: usable unbooked GPU units as sorted (memory, uuid), CPU and RAM left.
    `gpus` holds the usable units only: healthy and not waiting out a fault's hysteresis.

    Owned by the view and updated in place: readers must not modify it.
    """

    __slots__ = ("cpu", "free", "gpus", "name", "one", "ram", "reclaim")

    def __init__(self, name: str, cpu: int, ram: int, gpus: dict[str, Gpu]) -> None:
        self.name = name
        self.cpu = cpu
        self.ram = ram
        self.gpus = gpus
        self.free: list[tuple[int, str]] = []
        self.one = 0                           # free units + the most units one booked workload holds here
        self.reclaim: dict[int, int] = {}      # k -> lowest priority L where free + units of work <= L reach k


Victim = tuple[int, int, str, Workload]
"""(priority, -submitted_index, id, workload): booked work in eviction order (ids are unique, so the
workload itself is never compared)."""

Shape = tuple[str, str, int, int]
"""(region, tier, a, b): pools that score alike. GPU shapes: (free units, total units); CPU shapes:
(free CPU percent now, 100), an upper bound of the free part after placement."""


class PoolCapacity:
    """Per-pool totals kept current by book/release (the capacity filters and scores read only these)."""

    __slots__ = ("cpu_free", "cpu_key", "cpu_total", "free_units", "gpu_key", "max_free", "one_eviction", "pool",
                 "reclaim", "rows", "total_units", "workers")

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        faulted = {f.uuid for f in pool.gpu_faults}  # failed units wait out their hysteresis (gpu_health.py)
        self.rows = tuple(
            WorkerFree(w.name, w.cpu_millis, w.ram_mb,
                       {g.uuid: g for g in w.gpus if g.healthy and g.uuid not in faulted} if faulted else
                       {g.uuid: g for g in w.gpus if g.healthy})
            for w in sorted(pool.inventory.workers, key=lambda w: w.name)
        )
        self.workers = {w.name: w for w in self.rows}
        self.total_units = sum(len(w.gpus) for w in self.rows)
        self.cpu_total = sum(w.cpu_millis for w in pool.inventory.workers)
        self.free_units = 0
        self.max_free = 0
        self.one_eviction = 0  # max over workers of free units + the most units one booked workload holds there
        # k -> the lowest priority L at which a worker's free units + the units of its work <= L reach k
        self.reclaim: dict[int, int] = {}
        self.cpu_free = 0
        self.gpu_key: Shape | None = None
        self.cpu_key: Shape | None = None


class FederationView:
    """Mutable index of pools and bookings for one apply (deterministic; built from sorted inputs)."""

    def __init__(self) -> None:
        self._pools: dict[str, Pool] = {}
        self._ids: list[str] = []
        self._all: set[str] = set()
        self._index: dict[str, PoolCapacity] = {}
        self._up: set[str] = set()
        self._closed: set[str] = set()                   # cordoned or draining
        self._by_region: dict[str, set[str]] = {}
        self._by_label: dict[str, set[str]] = {}
        self._fit: list[set[str]] = [set()]               # _fit[k]: pools with a worker having >= k free units
        self._one: list[set[str]] = [set()]               # _one[k]: ... >= k free units after evicting one workload
        self._size: list[set[str]] = [set()]              # _size[k]: ... >= k healthy units, free or not
        self._at_priority: dict[int, set[str]] = {}       # priority -> pools running work of that priority
        self._shapes: tuple[dict[Shape, set[str]], dict[Shape, set[str]]] = ({}, {})  # CPU, GPU
        self._trust: dict[str, dict[str, Trust]] = {}
        self._trusted: dict[tuple[str, Trust], frozenset[str]] = {}
        self._replicas: dict[str, frozenset[str]] = {}
        self._booked: dict[str, Workload] = {}
        self._owner: dict[str, str] = {}                  # GPU uuid -> workload id
        self._used: dict[str, dict[str, list[int]]] = {}  # pool -> worker -> [cpu, ram] booked
        self._running: dict[str, set[str]] = {}
        self._by_submitter: dict[str, dict[str, int]] = {}  # submitter pool -> pool -> workloads there
        self._submitter_set: dict[str, set[str]] = {}      # the same pools, as a set
        self._levels: dict[str, dict[int, set[str]]] = {}   # submitter pool -> n -> pools where it has n
        self._spread = SpreadIndex()                        # submitter pool -> GPU shape -> n -> pools
        self._cpu_spread = SpreadIndex()                    # submitter pool -> CPU shape -> n -> pools
        self._priorities: dict[str, dict[int, int]] = {}    # pool -> priority -> workloads there
        # preemption: per (pool, worker) the booked work in eviction order, and which pools hold GPUs per priority
        self._victims: dict[tuple[str, str], list[Victim]] = {}
        self._reclaim: dict[int, dict[int, set[str]]] = {}   # k -> L -> pools whose reclaim[k] is L
        self.memo: dict[tuple[object, ...], object] = {}   # results that depend on pools only; cleared by set_pool

    @classmethod
    def build(
        cls,
        pools: Iterable[Pool],
        workloads: Iterable[Workload],
        pairings: Iterable[tuple[str, str, Trust]],
        replicas: Iterable[tuple[str, str]],
    ) -> FederationView:
        view = cls()
        for a, b, level in sorted(pairings):  # a pair listed twice keeps its highest level
            if a != b:
                level = max(level, view._trust.get(a, {}).get(b, Trust.NONE))
                view._trust.setdefault(a, {})[b] = level
                view._trust.setdefault(b, {})[a] = level
        holders: dict[str, list[str]] = {}
        for model, pool_id in sorted(replicas):
            holders.setdefault(model, []).append(pool_id)
        view._replicas = {m: frozenset(ps) for m, ps in holders.items()}
        for workload in sorted(workloads, key=lambda w: w.id):
            if workload.phase.holds_resources:
                view.book(workload)
        for pool in sorted(pools, key=lambda p: p.id):
            view.set_pool(pool)
        return view

    # -- pools ---------------------------------------------------------------------------------

    def pool(self, pool_id: str) -> Pool | None:
        return self._pools.get(pool_id)

    def pools(self) -> tuple[Pool, ...]:
        return tuple(self._pools[i] for i in self._ids)

    def pool_ids(self) -> tuple[str, ...]:
        return tuple(self._ids)

    def lowest_ids(self, ids: Set[str], count: int) -> list[str]:
        """The `count` lowest of `ids` (pools of this view), ascending."""
        return self.lowest_ids_without(ids, frozenset(), count, len(ids))

    def lowest_ids_without(self, ids: Set[str], kept: Set[str], count: int, size: int) -> list[str]:
        """The `count` lowest of `ids - kept` (`size` pools; `kept` within `ids`), ascending. A large share
        of the pools is found by walking the sorted ids, without building the set; a small one by a heap."""
        if size * 16 < len(self._ids):
            return nsmallest(count, ids - kept)
        want = min(count, size)
        out: list[str] = []
        for pool_id in self._ids:
            if pool_id in ids and pool_id not in kept:
                out.append(pool_id)
                if len(out) == want:
                    return out
        return nsmallest(count, ids - kept)  # ids this view does not hold

    def set_pool(self, pool: Pool) -> None:
        """Insert or replace a pool (health, cordon, drain or inventory changed); bookings are kept."""
        old = self._pools.get(pool.id)
        if old is not None and _same_for_placement(old, pool):  # e.g. a heartbeat: only the record changes
            self._pools[pool.id] = pool
            self._index[pool.id].pool = pool
            return
        self.memo.clear()
        if old is None:
            insort(self._ids, pool.id)
            self._all.add(pool.id)
        else:
            self._by_region[old.region].discard(pool.id)
            for label in old.labels:
                self._by_label[label].discard(pool.id)
        self._pools[pool.id] = pool
        self._by_region.setdefault(pool.region, set()).add(pool.id)
        for label in pool.labels:
            self._by_label.setdefault(label, set()).add(pool.id)
        if pool.status.health is Health.UP:
            self._up.add(pool.id)
        else:
            self._up.discard(pool.id)
        if pool.cordoned or pool.drain_started_ms is not None:
            self._closed.add(pool.id)
        else:
            self._closed.discard(pool.id)
        index = PoolCapacity(pool)
        if pool.id in self._index:
            was = self._index[pool.id]
            index.max_free, index.one_eviction, index.reclaim = was.max_free, was.one_eviction, was.reclaim
            self._unshape(pool.id, was)
            self._spread.reshape(pool.id, was.gpu_key, None)
            self._cpu_spread.reshape(pool.id, was.cpu_key, None)
        self._index[pool.id] = index
        for worker, (cpu, ram) in sorted(self._used.get(pool.id, {}).items()):
            if worker in index.workers:
                index.workers[worker].cpu -= cpu
                index.workers[worker].ram -= ram
        for w in index.workers.values():
            w.free = sorted((g.memory_mb, g.uuid) for g in w.gpus.values() if g.healthy and g.uuid not in self._owner)
        index.free_units = sum(len(w.free) for w in index.workers.values())
        self._refresh(pool.id, index)
        size = max((sum(1 for g in w.gpus.values() if g.healthy) for w in index.rows), default=0)
        while len(self._size) <= size:
            self._size.append(set())
        for k, members in enumerate(self._size):
            if 0 < k <= size:
                members.add(pool.id)
            else:
                members.discard(pool.id)

    def _unshape(self, pool_id: str, index: PoolCapacity) -> None:
        for shapes, key in zip(self._shapes, (index.cpu_key, index.gpu_key), strict=True):
            if key is not None:
                members = shapes[key]
                members.discard(pool_id)
                if not members:
                    del shapes[key]

    def _refresh(self, pool_id: str, index: PoolCapacity, worker: str | None = None) -> None:
        """Recompute the pool's totals and index entries after `worker` (None: every worker) changed."""
        self._unshape(pool_id, index)
        index.cpu_free = sum(max(0, w.cpu) for w in index.workers.values())
        region, tier = index.pool.region, index.pool.tier
        old_cpu_key, index.cpu_key = index.cpu_key, (
            region, tier, index.cpu_free * 100 // index.cpu_total if index.cpu_total > 0 else 0, 100)
        self._cpu_spread.reshape(pool_id, old_cpu_key, index.cpu_key)
        old_gpu_key, index.gpu_key = index.gpu_key, (region, tier, index.free_units, index.total_units)
        self._spread.reshape(pool_id, old_gpu_key, index.gpu_key)
        self._shapes[0].setdefault(index.cpu_key, set()).add(pool_id)
        self._shapes[1].setdefault(index.gpu_key, set()).add(pool_id)
        new_max = max((len(w.free) for w in index.workers.values()), default=0)
        _step(self._fit, pool_id, index.max_free, new_max)
        index.max_free = new_max
        one = 0
        reclaim: dict[int, int] = {}
        for w in index.rows:
            if worker is None or w.name == worker:
                self._preemption_reach(pool_id, w)
            one = max(one, w.one)
            for k, level in w.reclaim.items():
                if reclaim.get(k, level) >= level:
                    reclaim[k] = level
        _step(self._one, pool_id, index.one_eviction, one)
        index.one_eviction = one
        if reclaim != index.reclaim:
            for k, level in index.reclaim.items():
                if reclaim.get(k) != level:
                    at = self._reclaim[k]
                    at[level].discard(pool_id)
                    if not at[level]:
                        del at[level]
            for k, level in reclaim.items():
                if index.reclaim.get(k) != level:
                    self._reclaim.setdefault(k, {}).setdefault(level, set()).add(pool_id)
            index.reclaim = reclaim

    def _preemption_reach(self, pool_id: str, w: WorkerFree) -> None:
        """What evicting work could free on the worker: `one` and `reclaim` (see WorkerFree)."""
        free = reach = len(w.free)
        held = 0
        reclaim: dict[int, int] = {}
        for priority, _, _, victim in self._victims.get((pool_id, w.name), ()):
            units = len(victim.placement.gpus) if victim.placement else 0
            held = max(held, units)
            for k in range(reach + 1, reach + units + 1):
                reclaim[k] = priority      # victims come lowest priority first: the first to reach k is lowest
            reach += units
        w.one = free + held
        w.reclaim = reclaim

    # -- trust and replicas --------------------------------------------------------------------

    def trust(self, a: str, b: str) -> Trust:
        if a == b:
            return Trust.MAX
        return self._trust.get(a, {}).get(b, Trust.NONE)

    def trusted_by(self, submitter: str, level: Trust) -> frozenset[str]:
        """Pools `submitter` trusts at `level` or more, itself included (cached: pairings are fixed)."""
        key = (submitter, level)
        found = self._trusted.get(key)
        if found is None:
            peers = self._trust.get(submitter, {})
            found = frozenset([submitter, *(p for p in sorted(peers) if peers[p] >= level)])
            self._trusted[key] = found
        return found

    def replica_pools(self, model: str) -> frozenset[str]:
        return self._replicas.get(model, frozenset())

    # -- index reads for the filters (sets: reduce them order-independently) --------------------

    def all_ids(self) -> set[str]:
        return self._all

    def up_ids(self) -> set[str]:
        return self._up

    def closed_ids(self) -> set[str]:
        return self._closed

    def region_ids(self, region: str) -> set[str]:
        return self._by_region.get(region, set())

    def regions(self) -> tuple[str, ...]:
        return tuple(sorted(r for r, ids in self._by_region.items() if ids))

    def label_ids(self, label: str) -> set[str]:
        return self._by_label.get(label, set())

    def shapes(self, gpu_work: bool) -> dict[Shape, set[str]]:
        """Every pool grouped by shape for GPU or CPU work (read only; reduce order-independently)."""
        return self._shapes[gpu_work]

    def ids_with_units(self, count: int) -> set[str]:
        """Pools with a worker holding at least `count` healthy GPUs, booked or not (preemption)."""
        return self._size[count] if count < len(self._size) else set()

    def ids_with_free_units(self, count: int) -> set[str]:
        """Pools with a worker holding at least `count` free healthy GPUs (any memory)."""
        return self._fit[count] if count < len(self._fit) else set()

    def ids_with_units_after_one_eviction(self, count: int) -> set[str]:
        """Pools with a worker where the free units plus those one booked workload was given reach `count`:
        every pool where evicting a single workload can make room for `count` GPUs is in it."""
        return self._one[count] if count < len(self._one) else set()

    # -- capacity reads ------------------------------------------------------------------------

    def free_units(self, pool_id: str) -> int:
        index = self._index.get(pool_id)
        return index.free_units if index else 0

    def total_units(self, pool_id: str) -> int:
        index = self._index.get(pool_id)
        return index.total_units if index else 0

    def cpu_free(self, pool_id: str) -> int:
        index = self._index.get(pool_id)
        return index.cpu_free if index else 0

    def cpu_total(self, pool_id: str) -> int:
        index = self._index.get(pool_id)
        return index.cpu_total if index else 0

    def capacity(self, pool_id: str) -> PoolCapacity:
        """The pool with its free totals (read only; KeyError for an unknown pool)."""
        return self._index[pool_id]

    def worker_capacity(self, pool_id: str) -> tuple[WorkerFree, ...]:
        """The pool's workers, sorted by name, with what is free on each (read only)."""
        index = self._index.get(pool_id)
        return index.rows if index else ()

    def free_gpus_on(self, pool_id: str, worker: str) -> list[tuple[int, str]]:
        """The worker's free units as sorted (memory, uuid) (read only)."""
        index = self._index.get(pool_id)
        w = index.workers.get(worker) if index else None
        return w.free if w else []

    def book(self, workload: Workload) -> None:
        """Mark the workload's placement as used (re-booking an id replaces its old booking).

        A GPU already owned by another workload keeps its first owner: state never holds a double
        booking, and if it ever did, releasing either workload must not free the other's unit.
        """
        placement = workload.placement
        if placement is None:
            return
        if workload.id in self._booked:
            self.release(workload.id)
        self._booked[workload.id] = workload
        pool_id, worker = placement.pool, placement.worker
        used = self._used.setdefault(pool_id, {}).setdefault(worker, [0, 0])
        used[0] += workload.spec.cpu_millis
        used[1] += workload.spec.ram_mb
        self._running.setdefault(pool_id, set()).add(workload.id)
        per_pool = self._by_submitter.setdefault(workload.submitter_pool, {})
        count = per_pool.get(pool_id, 0)
        per_pool[pool_id] = count + 1
        self._submitter_set.setdefault(workload.submitter_pool, set()).add(pool_id)
        self._move_level(workload.submitter_pool, pool_id, count, count + 1)
        priority = workload.spec.priority
        _count(self._priorities, self._at_priority, pool_id, priority, 1)
        insort(self._victims.setdefault((pool_id, worker), []),
               (priority, -workload.submitted_index, workload.id, workload))
        claimed = [u for u in placement.gpus if u not in self._owner]
        for uuid in claimed:
            self._owner[uuid] = workload.id
        index = self._index.get(pool_id)
        w = index.workers.get(worker) if index else None
        if index is None or w is None:
            return
        w.cpu -= workload.spec.cpu_millis
        w.ram -= workload.spec.ram_mb
        for uuid in claimed:
            gpu = w.gpus.get(uuid)
            if gpu is not None and gpu.healthy:
                pos = bisect_left(w.free, (gpu.memory_mb, uuid))
                if pos < len(w.free) and w.free[pos] == (gpu.memory_mb, uuid):
                    del w.free[pos]
                    index.free_units -= 1
        self._refresh(pool_id, index, worker)

    def release(self, workload_id: str) -> None:
        workload = self._booked.pop(workload_id, None)
        if workload is None or workload.placement is None:
            return
        placement = workload.placement
        pool_id, worker = placement.pool, placement.worker
        used = self._used.setdefault(pool_id, {}).setdefault(worker, [0, 0])
        used[0] -= workload.spec.cpu_millis
        used[1] -= workload.spec.ram_mb
        if used == [0, 0]:
            del self._used[pool_id][worker]
        self._running[pool_id].discard(workload_id)
        per_pool = self._by_submitter[workload.submitter_pool]
        per_pool[pool_id] -= 1
        self._move_level(workload.submitter_pool, pool_id, per_pool[pool_id] + 1, per_pool[pool_id])
        if not per_pool[pool_id]:
            del per_pool[pool_id]
            self._submitter_set[workload.submitter_pool].discard(pool_id)
        priority = workload.spec.priority
        _count(self._priorities, self._at_priority, pool_id, priority, -1)
        victims = self._victims[(pool_id, worker)]
        del victims[bisect_left(victims, (priority, -workload.submitted_index, workload.id))]
        if not victims:
            del self._victims[(pool_id, worker)]
        freed = [u for u in placement.gpus if self._owner.get(u) == workload_id]
        for uuid in freed:
            del self._owner[uuid]
        index = self._index.get(pool_id)
        w = index.workers.get(worker) if index else None
        if index is None or w is None:
            return
        w.cpu += workload.spec.cpu_millis
        w.ram += workload.spec.ram_mb
        for uuid in freed:
            gpu = w.gpus.get(uuid)
            if gpu is not None and gpu.healthy:
                insort(w.free, (gpu.memory_mb, uuid))
                index.free_units += 1
        self._refresh(pool_id, index, worker)

    def _move_level(self, submitter_pool: str, pool_id: str, old: int, new: int) -> None:
        index = self._index.get(pool_id)
        self._spread.count(submitter_pool, pool_id, index.gpu_key if index is not None else None, old, new)
        self._cpu_spread.count(submitter_pool, pool_id, index.cpu_key if index is not None else None, old, new)
        levels = self._levels.setdefault(submitter_pool, {})
        if old:
            levels[old].discard(pool_id)
            if not levels[old]:
                del levels[old]
        if new:
            levels.setdefault(new, set()).add(pool_id)

    def booked(self, workload_id: str) -> Workload | None:
        return self._booked.get(workload_id)

    def booked_gpus(self) -> frozenset[str]:
        return frozenset(self._owner)

    def gpu_owner(self, uuid: str) -> str | None:
        return self._owner.get(uuid)

    def gpu_load_pct(self, pool_id: str) -> int:
        """Booked healthy GPU units * 100 // total healthy units (0 if none)."""
        index = self._index.get(pool_id)
        if index is None or not index.total_units:
            return 0
        return (index.total_units - index.free_units) * 100 // index.total_units

    def federation_gpu_load_pct(self) -> int:
        """Booked * 100 // total healthy units, summed over UP pools that have GPUs."""
        booked = total = 0
        for pool_id in self._ids:
            index = self._index[pool_id]
            if pool_id in self._up and index.total_units:
                booked += index.total_units - index.free_units
                total += index.total_units
        return booked * 100 // total if total else 0

    def running_on(self, pool_id: str) -> tuple[Workload, ...]:
        """Resource-holding workloads placed on the pool, sorted by id."""
        return tuple(self._booked[i] for i in sorted(self._running.get(pool_id, ())))

    def submitter_count(self, submitter_pool: str, pool_id: str) -> int:
        """How many booked workloads of `submitter_pool` run on `pool_id` (spread scoring)."""
        return self._by_submitter.get(submitter_pool, {}).get(pool_id, 0)

    def submitter_counts(self, submitter_pool: str) -> dict[str, int]:
        """Pool -> how many of `submitter_pool`'s booked workloads run there (read only)."""
        return self._by_submitter.get(submitter_pool, {})

    def submitter_levels(self, submitter_pool: str) -> dict[int, set[str]]:
        """n -> pools where `submitter_pool` has exactly n booked workloads (read only; n >= 1)."""
        return self._levels.get(submitter_pool, {})

    def submitter_spread(self, submitter_pool: str, gpu_work: bool = True) -> Mapping[Shape, Mapping[int, set[str]]]:
        """GPU shape (with `gpu_work` False: CPU shape) -> n -> pools where `submitter_pool` has exactly n
        booked workloads, n >= 1 (read only; reduce order-independently)."""
        return (self._spread if gpu_work else self._cpu_spread).of(submitter_pool)

    def submitter_pools(self, submitter_pool: str) -> set[str]:
        """Pools where `submitter_pool` has booked workloads (read only; reduce order-independently)."""
        return self._submitter_set.get(submitter_pool, set())

    def priorities(self) -> tuple[int, ...]:
        """Priorities of booked workloads, ascending."""
        return tuple(sorted(self._at_priority))

    def ids_at_priority(self, priority: int) -> set[str]:
        """Pools running booked work of exactly this priority (read only)."""
        return self._at_priority.get(priority, set())

    # -- determinism guard ------------------------------------------------------------------------

    def canonical(self) -> dict[str, object]:
        """Everything a decision can read, in a canonical form (sorted, empty entries dropped, caches
        left out): a view kept up to date by book/release/set_pool must equal one built afresh from
        the same state, part by part. Slow (the whole view); for checks and tests."""

        def ids(members: Iterable[str]) -> tuple[str, ...]:
            return tuple(sorted(members))

        def by_key(index: dict[Any, set[str]]) -> tuple[tuple[Any, tuple[str, ...]], ...]:
            return tuple(sorted((k, ids(v)) for k, v in index.items() if v))

        def levels(sets: list[set[str]]) -> tuple[tuple[str, ...], ...]:
            out = [ids(members) for members in sets[1:]]
            while out and not out[-1]:
                out.pop()
            return tuple(out)

        def counts(nested: dict[str, dict[Any, int]]) -> tuple[tuple[str, Any, int], ...]:
            return tuple(sorted((a, b, n) for a, inner in nested.items() for b, n in inner.items() if n))

        return {
            "pools": tuple((i, self._pools[i]) for i in sorted(self._pools)),
            "ids": tuple(self._ids), "all": ids(self._all), "up": ids(self._up), "closed": ids(self._closed),
            "by_region": by_key(self._by_region), "by_label": by_key(self._by_label),
            "fit": levels(self._fit), "size": levels(self._size), "one": levels(self._one),
            "shapes": (by_key(self._shapes[0]), by_key(self._shapes[1])),
            "capacity": tuple(
                (i, c.total_units, c.cpu_total, c.free_units, c.max_free, c.one_eviction,
                 tuple(sorted(c.reclaim.items())), c.cpu_free, c.cpu_key, c.gpu_key,
                 tuple((w.name, w.cpu, w.ram, tuple(w.free), w.one, tuple(sorted(w.reclaim.items()))) for w in c.rows))
                for i, c in sorted(self._index.items())),
            "trust": tuple(sorted((a, b, level) for a, peers in self._trust.items() for b, level in peers.items())),
            "replicas": tuple(sorted((m, ids(ps)) for m, ps in self._replicas.items())),
            "booked": tuple(sorted(self._booked.items())),
            "owner": tuple(sorted(self._owner.items())),
            "used": tuple(sorted((p, w, cpu, ram) for p, ws in self._used.items() for w, (cpu, ram) in ws.items()
                                 if cpu or ram)),
            "running": by_key(self._running),
            "by_submitter": counts(self._by_submitter),
            "submitter_set": by_key(self._submitter_set),
            "levels": tuple(sorted((s, n, ids(ps)) for s, lv in self._levels.items() for n, ps in lv.items() if ps)),
            "priorities": counts(self._priorities), "at_priority": by_key(self._at_priority),
            "victims": tuple(sorted((k, tuple(v[:3] for v in vs)) for k, vs in self._victims.items() if vs)),
            "reclaim": tuple(sorted((k, level, ids(ps)) for k, at in self._reclaim.items() for level, ps in at.items()
                                    if ps)),
        }

    def fingerprint(self) -> bytes:
        """sha256 of `canonical()`: equal for a maintained view and a fresh build of the same state."""
        return sha256(repr(sorted(self.canonical().items())).encode()).digest()

    def indexes(self) -> dict[str, object]:
        """Indexes derived from `canonical()`'s parts, canonically (kept out of `fingerprint`, which the
        golden digests hash; compared by `differences`)."""
        return {"spread": self._spread.canonical(), "cpu_spread": self._cpu_spread.canonical()}

    def differences(self, other: FederationView) -> tuple[str, ...]:
        """The names of the canonical parts and derived indexes in which the two views differ."""
        mine, theirs = {**self.canonical(), **self.indexes()}, {**other.canonical(), **other.indexes()}
        return tuple(name for name in mine if mine[name] != theirs[name])

    def ids_reclaiming_at(self, count: int, priority: int) -> set[str]:
        """Pools where `priority` is the lowest priority L such that on some worker the free units plus
        the units given to booked work of priority <= L reach `count` (read only). Their union over the
        priorities <= L holds every pool where evicting work of priority <= L can make room for
        `count` GPUs on a worker that has fewer free."""
        return self._reclaim.get(count, {}).get(priority, set())

    def victims_on(self, pool_id: str, worker: str, max_priority: int) -> list[Victim]:
        """Booked work placed on the worker with priority <= max_priority, in eviction order: lowest
        priority first, then newest (highest submitted index), then id."""
        victims = self._victims.get((pool_id, worker))
        if not victims:
            return []
        return victims[:bisect_left(victims, (max_priority + 1,))]


def _same_for_placement(a: Pool, b: Pool) -> bool:
    """Nothing the view indexes differs between the two records of one pool (health, cordon, drain,
    region, tier, labels, inventory, faulted units): replacing the record is enough."""
    return (a.status.health is b.status.health and a.cordoned == b.cordoned
            and a.drain_started_ms == b.drain_started_ms and a.region == b.region and a.tier == b.tier
            and a.labels == b.labels and a.inventory == b.inventory
            and [f.uuid for f in a.gpu_faults] == [f.uuid for f in b.gpu_faults])


def _step(sets: list[set[str]], pool_id: str, old: int, new: int) -> None:
    """Keep `sets[k]` (the pools whose value is >= k, for k >= 1) in step with one pool's value."""
    while len(sets) <= new:
        sets.append(set())
    for k in range(min(old, new) + 1, max(old, new) + 1):
        if new >= k:
            sets[k].add(pool_id)
        else:
            sets[k].discard(pool_id)


def _count(per_pool: dict[str, dict[int, int]], pools_at: dict[int, set[str]], pool_id: str, priority: int,
           delta: int) -> None:
    """Add `delta` to the pool's count of booked work at `priority`, keeping `pools_at[priority]` (the
    pools where that count is not zero) in step."""
    counts = per_pool.setdefault(pool_id, {})
    n = counts.get(priority, 0) + delta
    if n:
        counts[priority] = n
        pools_at.setdefault(priority, set()).add(pool_id)
    else:
        del counts[priority]
        at = pools_at[priority]
        at.discard(pool_id)
        if not at:
            del pools_at[priority]
