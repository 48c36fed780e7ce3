"""Orchestration stories in simulated effective time: failover, return, anti-flap, drain, rebalance, cap."""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise

from fedraft.domain.placement.model import Health, Phase, Policy, WorkloadSpec
from tests.domain.placement.timeline import MIN, Federation, S, gpu_pool

# Rebalance stays out of the stories that are not about it.
CALM = Policy(rebalance_threshold_pct=10_000)


def three_pools(policy: Policy = CALM, gpus: int = 4) -> Federation:
    return Federation.of(gpu_pool("a", gpus), gpu_pool("b", gpus), gpu_pool("c", gpus), policy=policy)


def test_a_pool_down_has_its_work_moved_within_30_s_and_one_tick() -> None:
    fed = three_pools()
    fed.put_running("j1", "a")
    fed.put_running("j2", "a", gpus=2)
    fed.run_until(20 * S)
    fed.alive.discard("a")                      # last heartbeat at 20 s
    fed.run_until(49 * S)
    assert fed.pools["a"].status.health is Health.UP and fed.on("a") == ["j1", "j2"]
    fed.run_until(50 * S + fed.policy.tick_interval_ms)
    assert fed.pools["a"].status.health is Health.DOWN
    assert fed.pools["a"].status.changed_ms == 50 * S
    assert fed.on("a") == []
    failovers = fed.moves("failover")
    assert sorted(w for w, _ in failovers) == ["j1", "j2"]
    assert all(m.from_pool == "a" and m.to_pool in ("b", "c") and m.at_ms == 50 * S for _, m in failovers)
    assert {fed.work[w].phase for w in ("j1", "j2")} <= {Phase.PLACED, Phase.RUNNING}


def test_a_pool_back_gets_its_work_home_within_60_s() -> None:
    fed = three_pools()
    fed.put_running("j1", "a")
    fed.put_running("j2", "a", gpus=2)
    fed.alive.discard("a")
    fed.run_until(5 * MIN)
    assert fed.on("a") == []
    fed.alive.add("a")                           # heartbeats again at the next 10 s mark
    fed.run_until(5 * MIN + 10 * S)
    back = fed.pools["a"].status
    assert back.health is Health.UP and back.changed_ms == 5 * MIN + 10 * S
    fed.run_until(back.changed_ms + 60 * S)
    assert fed.on("a") == ["j1", "j2"]
    returns = fed.moves("return")
    assert sorted(w for w, _ in returns) == ["j1", "j2"]
    assert all(back.changed_ms <= m.at_ms <= back.changed_ms + 60 * S and m.to_pool == "a" for _, m in returns)
    fed.run_until(7 * MIN)
    assert {fed.work[w].phase for w in ("j1", "j2")} == {Phase.RUNNING}


def test_work_does_not_return_after_the_window() -> None:
    fed = three_pools()
    fed.put_running("j1", "a", gpus=4)
    fed.alive.discard("a")
    fed.run_until(2 * MIN)
    away = fed.pool_of("j1")
    assert away in ("b", "c")
    fed.pools["a"] = replace(fed.pools["a"], cordoned=True)   # comes back cordoned: no target
    fed.alive.add("a")
    fed.run_until(2 * MIN + 70 * S)
    assert fed.pools["a"].status.health is Health.UP
    fed.pools["a"] = replace(fed.pools["a"], cordoned=False)  # uncordoned after its window closed
    fed.run_until(20 * MIN)
    assert fed.pool_of("j1") == away and fed.moves("return") == []


def test_work_moved_away_deliberately_does_not_return() -> None:
    fed = three_pools()
    fed.put_running("j1", "a")
    fed.drain("a")
    fed.run_until(61 * S)
    away = fed.pool_of("j1")
    assert away in ("b", "c") and fed.work["j1"].moves[-1].reason == "drain"
    fed.pools["a"] = replace(fed.pools["a"], drain_started_ms=None)   # the drain is over
    fed.alive.discard("a")
    fed.run_until(3 * MIN)
    fed.alive.add("a")
    fed.run_until(6 * MIN)
    assert fed.pools["a"].status.health is Health.UP and fed.pool_of("j1") == away


def test_a_pool_that_flaps_twice_within_5_min_receives_nothing_until_5_min_stable() -> None:
    fed = three_pools()
    fed.put_running("home", "a", gpus=2)
    fed.put_running("b-full", "b", gpus=4)
    fed.put_running("c-full", "c", gpus=2)
    fed.alive.discard("a")
    fed.run_until(40 * S)                        # DOWN at 30 s
    fed.alive.add("a")
    fed.run_until(60 * S)                        # UP at 50 s, its work back home at once
    fed.alive.discard("a")
    fed.run_until(100 * S)                       # DOWN again at 90 s: two downs within 5 min
    fed.alive.add("a")
    fed.run_until(110 * S)                       # UP at 110 s, flapping until 410 s
    assert fed.pools["a"].status.down_events_ms == (30 * S, 90 * S)
    assert fed.pools["a"].status.changed_ms == 110 * S
    assert fed.pool_of("home") == "c"
    fed.submit("late", WorkloadSpec(gpus=2))     # nowhere else to go: pending
    assert fed.work["late"].phase is Phase.PENDING
    fed.run_until(409 * S)
    assert fed.on("a") == [] and fed.work["late"].phase is Phase.PENDING
    # back after its first outage, it got its work back; once flapping, nothing
    assert [(w, m.at_ms) for w, m in fed.moves("return")] == [("home", 50 * S)]
    fed.run_until(410 * S)
    assert fed.pools["a"].status.down_events_ms == ()
    assert fed.on("a") == ["late"]               # retried as soon as the pool was a target again
    (_, placed), = fed.moves("retry")
    assert placed.at_ms == 410 * S


def test_drain_moves_work_after_60_s() -> None:
    fed = three_pools()
    fed.put_running("j1", "a")
    fed.put_running("j2", "a")
    fed.run_until(10 * S)
    fed.drain("a")
    assert {fed.work[w].phase for w in ("j1", "j2")} == {Phase.DRAINING}
    fed.run_until(69 * S)
    assert fed.on("a") == ["j1", "j2"] and fed.moves() == []
    fed.run_until(70 * S + fed.policy.tick_interval_ms)
    assert fed.on("a") == []
    drains = fed.moves("drain")
    assert [w for w, _ in drains] == ["j1", "j2"] and all(m.at_ms == 70 * S for _, m in drains)
    assert {fed.work[w].phase for w in ("j1", "j2")} <= {Phase.MIGRATING, Phase.RUNNING}
    fed.run_until(20 * MIN)
    assert fed.on("a") == [] and fed.deadline() == fed.now - fed.now % (10 * S) + 30 * S  # heartbeats only


def test_drain_with_nowhere_to_go_requeues() -> None:
    fed = Federation.of(gpu_pool("a"), gpu_pool("b"), policy=CALM)
    fed.put_running("j1", "a", gpus=4)
    fed.put_running("busy", "b", gpus=4)
    fed.drain("a")
    fed.run_until(61 * S)
    j1 = fed.work["j1"]
    assert j1.phase is Phase.PENDING and j1.placement is None
    assert j1.reason.startswith("drain: pool a was drained; no pool fits")
    assert j1.moves[-1].to_pool == "" and j1.moves[-1].reason == "drain"


def test_rebalance_moves_work_off_an_overloaded_pool_and_never_the_same_workload_twice_in_5_min() -> None:
    fed = Federation.of(gpu_pool("a", 8), gpu_pool("b", 8), gpu_pool("c", 8))
    for i in range(8):
        fed.put_running(f"low{i}", "a", priority=i)
    fed.run_until(5 * S)
    first = fed.moves("rebalance")
    # mean 8/24 = 33 %; a stays overloaded above 33 * 1.2 = 40 %, so 5 move: lowest priority first
    assert [w for w, _ in first] == ["low0", "low1", "low2", "low3", "low4"]
    assert len(fed.on("a")) == 3
    load = {p: len(fed.on(p)) for p in "abc"}
    assert max(load.values()) - min(load.values()) <= 1
    target = fed.pool_of("low0")
    assert target is not None
    for i in range(8 - load[target]):            # overload where the moved work went
        fed.put_running(f"high{i}", target, priority=100 + i)
    fed.run_until(5 * MIN - S)
    moved = [w for w, _ in fed.moves("rebalance")]
    assert moved[:5] == [w for w, _ in first]
    assert not set(moved[5:]) & {w for w, _ in first}   # the first five stay put for 5 min
    assert any(w.startswith("high") for w in moved[5:])
    times: dict[str, list[int]] = {}
    for w, m in fed.moves("rebalance"):
        times.setdefault(w, []).append(m.at_ms)
    assert all(b - a >= 5 * MIN for ts in times.values() for a, b in pairwise(ts))


def test_moves_per_tick_never_exceed_the_cap() -> None:
    fed = Federation.of(gpu_pool("a", 16, workers=2), gpu_pool("b", 16, workers=2), gpu_pool("c", 16, workers=2),
                        policy=Policy(max_moves_per_tick=3, rebalance_threshold_pct=10_000))
    for i in range(10):
        fed.put_running(f"j{i}", "a", worker=f"w{i % 2}")
    fed.alive.discard("a")
    fed.run_until(30 * S + 10 * S)
    per_tick = [len(plan.moves) for _, plan in fed.plans]
    assert max(per_tick) == 3
    assert fed.on("a") == []
    failover_ticks = sorted({m.at_ms for _, m in fed.moves("failover")})
    assert failover_ticks == [30 * S, 31 * S, 32 * S, 33 * S]   # 3 + 3 + 3 + 1, one Tick per second


def test_a_full_cluster_restart_does_not_mark_pools_down() -> None:
    fed = three_pools()
    fed.put_running("j1", "a")
    fed.run_until(100 * S)                        # last heartbeats at 100 s; then everything stops
    fed.alive.clear()
    fed.now = 1_000 * S                           # the federation comes back: a new term starts
    fed.term_start = 1_000 * S
    assert fed.deadline() == 1_030 * S
    fed.run_until(1_005 * S)
    fed.alive.update(("a", "b"))                 # c's node stays away
    fed.run_until(1_029 * S)
    assert all(p.status.health is Health.UP for p in fed.pools.values())
    fed.run_until(1_031 * S)
    assert [p for p in sorted(fed.pools) if fed.pools[p].status.health is Health.DOWN] == ["c"]
    assert fed.pool_of("j1") == "a" and fed.moves() == []


def test_pending_work_that_cannot_be_placed_does_not_make_ticks_due_all_the_time() -> None:
    fed = Federation.of(gpu_pool("a"), policy=CALM)
    fed.put_running("big", "a", gpus=4)
    fed.submit("waits", WorkloadSpec(gpus=1))
    fed.run_until(2 * MIN)
    ticks = [t for t, _ in fed.plans]
    assert len(ticks) <= 2 * MIN // fed.policy.heartbeat_ms + 1   # one retry per heartbeat interval at most
    del fed.work["big"]                           # capacity appears (a completion, as a shortcut)
    fed.run_until(2 * MIN + fed.policy.heartbeat_ms)
    assert fed.work["waits"].phase in (Phase.PLACED, Phase.RUNNING)
