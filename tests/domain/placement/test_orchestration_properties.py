"""Random timelines of heartbeats, outages, drains, submissions and completions (Hypothesis).

After every step: no GPU is booked twice and every booking is on its pool's inventory; every due Tick
changes something and stays within the move cap; no Tick moves work onto a DOWN or flapping pool.
Replaying the same timeline gives the same pools, workloads and moves.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from fedraft.domain.placement.health import is_flapping
from fedraft.domain.placement.lifecycle import report
from fedraft.domain.placement.model import Health, Phase, Policy, Workload, WorkloadSpec
from tests.domain.placement.timeline import Federation, gpu_pool

# Times scaled down so a short run sees outages, flapping, return windows and drains end.
FAST = Policy(heartbeat_ms=2_000, missed_heartbeats=3, hysteresis_ms=30_000, return_window_ms=10_000,
              drain_ms=10_000, tick_interval_ms=500)
STEPS = 240
POOLS = ("a", "b", "c", "d")


@dataclass(frozen=True)
class Event:
    step: int
    kind: str          # down, up, submit, complete, drain, undrain, new_term
    pool: str = ""
    gpus: int = 1
    priority: int = 0


step = st.integers(0, STEPS - 1)
pools = st.sampled_from(POOLS)
submissions = st.lists(st.builds(lambda at, pool, gpus, prio: [Event(at, "submit", pool, gpus, prio)],
                                 st.integers(0, STEPS // 2), pools, st.integers(0, 3), st.integers(0, 3)),
                       min_size=3, max_size=24)
outages = st.lists(st.builds(lambda at, pool, steps: [Event(at, "down", pool), Event(at + steps, "up", pool)],
                             step, pools, st.integers(1, 80)), max_size=6)
drains = st.lists(st.builds(lambda at, pool, steps: [Event(at, "drain", pool), Event(at + steps, "undrain", pool)],
                            step, pools, st.integers(1, 60)), max_size=2)
singles = st.lists(st.builds(lambda at, pool, kind: [Event(at, kind, pool)], step, pools,
                             st.sampled_from(("complete", "complete", "new_term"))), max_size=8)
events = st.builds(lambda *groups: [e for group in groups for pair in group for e in pair],
                   submissions, outages, drains, singles)

policies = st.builds(
    lambda cap, preemption, threshold: replace(FAST, max_moves_per_tick=cap, preemption=preemption,
                                               rebalance_threshold_pct=threshold),
    st.integers(1, 4), st.booleans(), st.sampled_from((20, 50, 10_000)),
)


def run(timeline: list[Event], policy: Policy, pool_count: int) -> Federation:
    fed = Federation.of(*(gpu_pool(p, 4, workers=2) for p in POOLS[:pool_count]), policy=policy)
    by_step: dict[int, list[Event]] = {}
    for e in timeline:
        by_step.setdefault(e.step, []).append(e)
    submitted = 0
    for step in range(STEPS):
        for e in by_step.get(step, []):
            pool = e.pool if e.pool in fed.pools else POOLS[0]
            if e.kind == "down":
                fed.alive.discard(pool)
            elif e.kind == "up":
                fed.alive.add(pool)
            elif e.kind == "submit":
                spec = WorkloadSpec(gpus=e.gpus, cpu_millis=500, ram_mb=1024, priority=e.priority)
                fed.submit(f"w{submitted:03d}", spec, submitter=pool)
                submitted += 1
            elif e.kind == "complete":
                for w in fed.workloads():
                    if w.placement is not None and w.placement.pool == pool and pool in fed.alive:
                        done = report(w, pool, Phase.COMPLETED)
                        assert isinstance(done, Workload)
                        fed.work[w.id] = done
                        break
            elif e.kind == "drain":
                fed.drain(pool)
            elif e.kind == "undrain":
                fed.pools[pool] = replace(fed.pools[pool], drain_started_ms=None)
            elif e.kind == "new_term":
                fed.term_start = fed.now
        fed.check_bookings()
        before = dict(fed.pools)
        plan = fed.step()
        if plan is not None:
            for _, move in plan.moves:
                if move.to_pool:
                    target = fed.pools[move.to_pool]
                    assert target.status.health is Health.UP
                    assert not is_flapping(target, fed.now, policy), (move, target.status)
                    assert before[move.to_pool].drain_started_ms is None
        fed.check_bookings()
    return fed


@settings(max_examples=60, deadline=None)
@given(events, policies, st.integers(2, 4))
def test_random_timelines_keep_bookings_sound_and_replay_identically(
        timeline: list[Event], policy: Policy, pool_count: int) -> None:
    first = run(timeline, policy, pool_count)
    second = run(timeline, policy, pool_count)
    assert first.pools == second.pools
    assert first.work == second.work
    assert first.plans == second.plans


@settings(max_examples=30, deadline=None)
@given(events, policies)
def test_work_on_down_pools_is_always_moved_or_requeued_within_a_few_ticks(timeline: list[Event],
                                                                             policy: Policy) -> None:
    fed = run(timeline, policy, 4)
    # Let the federation settle with the same pools alive and no new events.
    fed.run_until(fed.now + policy.down_after_ms + 20 * policy.tick_interval_ms)
    for w in fed.workloads():
        if w.phase.holds_resources:
            assert w.placement is not None
            assert fed.pools[w.placement.pool].status.health is Health.UP, w
