"""A small simulated federation for orchestration tests: effective time in tick steps, heartbeats, Ticks.

It plays the leader and the appliers: every step advances time by the tick interval, feeds the
heartbeats of the pools that are alive, lets the agents of live pools report their work running, and
appends a Tick only when `next_deadline` says one is due (SPEC D6). After every Tick it checks the
invariants: moves within the cap, no GPU booked twice, and a due Tick never changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from fedraft.domain.placement.health import flapping_pools, on_heartbeat
from fedraft.domain.placement.lifecycle import report, transition
from fedraft.domain.placement.model import (
    Gpu,
    Health,
    Inventory,
    Move,
    Phase,
    Placement,
    Policy,
    Pool,
    PoolHealth,
    Trust,
    Worker,
    Workload,
    WorkloadSpec,
)
from fedraft.domain.placement.orchestration import TickPlan, next_deadline, plan_tick, start_drain
from fedraft.domain.scheduler.stack import place
from fedraft.domain.scheduler.view import FederationView

S = 1_000
MIN = 60 * S


def gpu_pool(pool_id: str, gpus: int = 4, region: str = "eu", workers: int = 1) -> Pool:
    per = gpus // workers
    return Pool(
        pool_id, region=region, tier="gpu",
        inventory=Inventory(tuple(
            Worker(f"w{k}", 64_000, 512_000, tuple(Gpu(f"{pool_id}-w{k}-g{i:02d}", "A100", 40_960) for i in range(per)))
            for k in range(workers)
        )),
    )


@dataclass
class Federation:
    pools: dict[str, Pool]
    policy: Policy = field(default_factory=Policy)
    now: int = 0
    index: int = 1
    term_start: int = 0
    alive: set[str] = field(default_factory=set)
    work: dict[str, Workload] = field(default_factory=dict)
    plans: list[tuple[int, TickPlan]] = field(default_factory=list)
    agents_report: bool = True

    @classmethod
    def of(cls, *pools: Pool, policy: Policy | None = None) -> Federation:
        fed = cls({p.id: replace(p, status=PoolHealth(Health.UP, 0, 0)) for p in pools}, policy or Policy())
        fed.alive = set(fed.pools)
        return fed

    # -- state ---------------------------------------------------------------------------------

    def pairings(self) -> tuple[tuple[str, str, Trust], ...]:
        ids = sorted(self.pools)
        return tuple((a, b, Trust.HIGH) for i, a in enumerate(ids) for b in ids[i + 1:])

    def view(self) -> FederationView:
        return FederationView.build(sorted(self.pools.values(), key=lambda p: p.id),
                                    self.workloads(), self.pairings(), ())

    def workloads(self) -> tuple[Workload, ...]:
        return tuple(self.work[i] for i in sorted(self.work))

    def pool_of(self, workload_id: str) -> str | None:
        placement = self.work[workload_id].placement
        return placement.pool if placement is not None else None

    def on(self, pool_id: str) -> list[str]:
        return [w.id for w in self.workloads() if w.placement is not None and w.placement.pool == pool_id]

    def moves(self, reason: str | None = None) -> list[tuple[str, Move]]:
        return [(wid, m) for _, plan in self.plans for wid, m in plan.moves if reason is None or m.reason == reason]

    # -- commands (what the appliers would do) -------------------------------------------------

    def submit(self, workload_id: str, spec: WorkloadSpec, submitter: str = "") -> Workload:
        submitter = submitter or sorted(self.pools)[0]
        w = Workload(workload_id, spec, submitter, submitted_index=self.index)
        self.index += 1
        flapping = flapping_pools(self.pools.values(), self.now, self.policy)
        decision = place(self.view(), w, index=self.index, request_id=workload_id.encode(), policy=replace(
            self.policy, preemption=False), avoid=flapping)
        if decision.placement is None:
            w = replace(w, tried_ms=self.now)
        else:
            placed = transition(w, Phase.PLACED, "", decision.placement)
            assert isinstance(placed, Workload)
            w = replace(placed, home_pool=decision.placement.pool, placed_ms=self.now)
        self.work[w.id] = w
        return w

    def put_running(self, workload_id: str, pool_id: str, gpus: int = 1, priority: int = 0,
                    worker: str = "w0") -> Workload:
        """A workload already running on the pool, on its lowest free GPUs of `worker`."""
        view = self.view()
        free = [uuid for _, uuid in view.free_gpus_on(pool_id, worker)][:gpus]
        assert len(free) == gpus, f"{pool_id}/{worker} lacks {gpus} free GPUs"
        w = Workload(workload_id, WorkloadSpec(gpus=gpus, cpu_millis=1000, ram_mb=1024, priority=priority),
                     pool_id, phase=Phase.RUNNING, placement=Placement(pool_id, worker, tuple(sorted(free))),
                     home_pool=pool_id, submitted_index=self.index, placed_ms=self.now)
        self.index += 1
        self.work[w.id] = w
        return w

    def drain(self, pool_id: str) -> None:
        pool, changed = start_drain(self.pools[pool_id], self.workloads(), self.now)
        self.pools[pool_id] = pool
        for w in changed:
            self.work[w.id] = w

    # -- time ----------------------------------------------------------------------------------

    def jump(self, now_ms: int) -> None:
        """Time jumps to `now_ms` and every live pool has just sent a heartbeat."""
        self.now = now_ms
        for pool_id in sorted(self.alive):
            self.pools[pool_id] = on_heartbeat(self.pools[pool_id], now_ms, self.policy)

    def heartbeats(self) -> None:
        if self.now % self.policy.heartbeat_ms:
            return
        for pool_id in sorted(self.alive):
            self.pools[pool_id] = on_heartbeat(self.pools[pool_id], self.now, self.policy)

    def reports(self) -> None:
        for w in self.workloads():
            if w.phase in (Phase.PLACED, Phase.MIGRATING) and w.placement and w.placement.pool in self.alive:
                after = report(w, w.placement.pool, Phase.RUNNING)
                assert isinstance(after, Workload)
                self.work[w.id] = after

    def deadline(self) -> int | None:
        return next_deadline(self.pools.values(), self.workloads(), self.term_start, self.policy)

    def tick_if_due(self) -> TickPlan | None:
        due = self.deadline()
        if due is None or due > self.now:
            return None
        return self.tick()

    def tick(self) -> TickPlan:
        self.index += 1
        plan = plan_tick(self.view(), self.workloads(), self.now, self.term_start, self.index, self.policy)
        for p in plan.pools:
            self.pools[p.id] = p
        for w in plan.workloads:
            self.work[w.id] = w
        self.plans.append((self.now, plan))
        self.check(plan)
        return plan

    def step(self) -> TickPlan | None:
        self.now += self.policy.tick_interval_ms
        self.heartbeats()
        if self.agents_report:
            self.reports()
        return self.tick_if_due()

    def run_until(self, until_ms: int) -> None:
        while self.now < until_ms:
            self.step()

    # -- invariants ----------------------------------------------------------------------------

    def check(self, plan: TickPlan) -> None:
        assert len(plan.moves) <= self.policy.max_moves_per_tick, plan.moves
        assert plan.pools or plan.workloads, f"a due Tick at {self.now} changed nothing"
        self.check_bookings()

    def check_bookings(self) -> None:
        owners: dict[str, str] = {}
        for w in self.workloads():
            if not w.phase.holds_resources:
                assert w.placement is None, w
                continue
            assert w.placement is not None, w
            pool = self.pools[w.placement.pool]
            worker = next(k for k in pool.inventory.workers if k.name == w.placement.worker)
            assert set(w.placement.gpus) <= {g.uuid for g in worker.gpus}
            for uuid in w.placement.gpus:
                assert uuid not in owners, f"{uuid} booked by {owners[uuid]} and {w.id}"
                owners[uuid] = w.id
