"""plan_tick and next_deadline, one rule at a time."""

from __future__ import annotations

from dataclasses import replace

from fedraft.domain.placement.lifecycle import report
from fedraft.domain.placement.model import Health, Move, Phase, Policy, PoolHealth, WorkloadSpec
from fedraft.domain.placement.orchestration import TickPlan, next_deadline, plan_tick
from tests.domain.placement.timeline import MIN, Federation, S, gpu_pool

CALM = Policy(rebalance_threshold_pct=10_000)


def down(fed: Federation, pool_id: str, at_ms: int, events: tuple[int, ...] | None = None) -> None:
    fed.pools[pool_id] = replace(fed.pools[pool_id], status=PoolHealth(
        Health.DOWN, at_ms - 30 * S, at_ms, events if events is not None else (at_ms,)))
    fed.alive.discard(pool_id)


def test_failover_with_no_target_requeues_releases_and_waits_for_capacity() -> None:
    fed = Federation.of(gpu_pool("a"), gpu_pool("b"), policy=CALM)
    fed.put_running("j1", "a", gpus=4)
    fed.put_running("busy", "b", gpus=4)
    down(fed, "a", 40 * S)
    fed.jump(40 * S)
    plan = fed.tick()
    j1 = fed.work["j1"]
    assert j1.phase is Phase.PENDING and j1.placement is None and j1.tried_ms == 40 * S
    assert j1.reason.startswith("failover: pool a is down; no pool fits")
    assert plan.moves == (("j1", Move(40 * S, fed.index, "a", "", "failover")),)
    assert j1.explanation                                            # why no pool fitted, for `fedraft explain`
    # nothing can change for it before the retry interval (b heartbeats at 40 s: not "came UP")
    assert fed.deadline() == 50 * S
    del fed.work["busy"]
    fed.run_until(50 * S)
    assert fed.work["j1"].phase is Phase.PLACED and fed.pool_of("j1") == "b"
    assert fed.work["j1"].moves[-1] == Move(50 * S, fed.index, "", "b", "retry")


def test_work_on_an_unknown_pool_fails_over() -> None:
    fed = Federation.of(gpu_pool("a"), gpu_pool("b"), policy=CALM)
    fed.work["j1"] = replace(fed.put_running("j1", "a"), submitter_pool="b")
    del fed.pools["a"]                                               # retired
    fed.now = 1 * S
    assert fed.deadline() is not None and fed.deadline() <= fed.now
    fed.tick()
    assert fed.pool_of("j1") == "b" and fed.work["j1"].moves[-1].reason == "failover"


def test_failover_never_targets_a_flapping_pool() -> None:
    fed = Federation.of(gpu_pool("a"), gpu_pool("b"), gpu_pool("c"), policy=CALM)
    fed.put_running("j1", "a")
    fed.put_running("c-full", "c", gpus=4)
    flapping = PoolHealth(Health.UP, 2 * MIN, 2 * MIN - 10 * S, (1 * MIN, 100 * S))
    fed.pools["b"] = replace(fed.pools["b"], status=flapping)
    down(fed, "a", 2 * MIN)
    fed.jump(2 * MIN)
    fed.tick()
    assert fed.work["j1"].phase is Phase.PENDING
    assert "avoided" in fed.work["j1"].explanation.decode()


def test_preemption_in_a_tick_stays_within_the_cap() -> None:
    def setup(cap: int) -> Federation:
        fed = Federation.of(gpu_pool("a"), gpu_pool("b"), policy=Policy(max_moves_per_tick=cap,
                                                                        rebalance_threshold_pct=10_000))
        fed.put_running("vip", "a", gpus=4, priority=10)
        fed.put_running("low", "b", gpus=4, priority=1)
        down(fed, "a", 40 * S)
        fed.jump(40 * S)
        return fed

    tight = setup(1)
    plan = tight.tick()
    assert [(w, m.reason) for w, m in plan.moves] == [("vip", "failover")]
    assert tight.work["vip"].phase is Phase.PENDING and tight.pool_of("low") == "b"

    roomy = setup(2)
    plan = roomy.tick()
    assert sorted((w, m.reason, m.to_pool) for w, m in plan.moves) == [
        ("low", "preempted", ""), ("vip", "failover", "b")]
    low = roomy.work["low"]
    assert low.phase is Phase.PENDING and low.placement is None and low.reason == "preempted by vip"


def test_a_stale_report_from_the_old_pool_is_refused_after_failover() -> None:
    fed = Federation.of(gpu_pool("a"), gpu_pool("b"), policy=CALM)
    fed.put_running("j1", "a")
    down(fed, "a", 40 * S)
    fed.jump(40 * S)
    fed.tick()
    assert report(fed.work["j1"], "a", Phase.COMPLETED) == "workload j1 is placed on b, not on a"


def test_the_plan_holds_only_what_changed_sorted() -> None:
    fed = Federation.of(gpu_pool("a"), gpu_pool("b"), gpu_pool("c"), policy=CALM)
    for wid, pool in (("z", "a"), ("m", "b"), ("b1", "a")):
        fed.put_running(wid, pool)
    down(fed, "a", 40 * S)
    fed.jump(40 * S)
    fed.pools["c"] = replace(fed.pools["c"], status=PoolHealth(Health.UP, 0, 0))   # misses its heartbeats
    plan = fed.tick()
    assert [p.id for p in plan.pools] == ["c"] and plan.pools[0].status.health is Health.DOWN
    assert [w.id for w in plan.workloads] == ["b1", "z"]
    assert all(w.placement is not None and w.placement.pool == "b" for w in plan.workloads)


def test_nothing_to_do_is_an_empty_plan() -> None:
    fed = Federation.of(gpu_pool("a"), policy=CALM)
    fed.put_running("j1", "a")
    fed.now = 5 * S
    assert fed.tick_if_due() is None
    assert plan_tick(fed.view(), fed.workloads(), 5 * S, 0, 9, CALM) == TickPlan()


# -- next_deadline -----------------------------------------------------------------------------


def test_an_idle_federation_is_due_only_when_a_heartbeat_would_be_missed() -> None:
    fed = Federation.of(gpu_pool("a"), gpu_pool("b"), policy=CALM)
    fed.put_running("j1", "a")
    fed.run_until(25 * S)
    assert fed.deadline() == 50 * S                                  # last heartbeats at 20 s
    assert fed.plans == []                                           # no Tick was ever due
    assert next_deadline((), (), 0, CALM) is None


def test_drain_deadlines() -> None:
    fed = Federation.of(gpu_pool("a"), gpu_pool("b"), policy=CALM)
    fed.put_running("j1", "a")
    fed.now = 5 * S
    fed.pools["a"] = replace(fed.pools["a"], drain_started_ms=5 * S)
    assert fed.deadline() == 5 * S                                   # its work is not DRAINING yet
    fed.tick()
    assert fed.work["j1"].phase is Phase.DRAINING
    assert fed.deadline() == 30 * S                                  # heartbeats first (from 0)
    fed.pools["b"] = replace(fed.pools["b"], status=PoolHealth(Health.UP, 60 * S, 0))
    fed.pools["a"] = replace(fed.pools["a"], status=PoolHealth(Health.UP, 60 * S, 0))
    assert fed.deadline() == 65 * S                                  # the drain ends
    del fed.work["j1"]
    assert fed.deadline() == 90 * S                                  # an empty draining pool needs no Tick


def test_return_deadlines_follow_the_window_and_the_retry_interval() -> None:
    fed = Federation.of(gpu_pool("a"), gpu_pool("b"), policy=CALM)
    fed.put_running("j1", "b")
    j1 = fed.work["j1"]
    fed.work["j1"] = replace(j1, home_pool="a", moves=(Move(10 * S, 3, "a", "b", "failover"),))
    fed.pools["a"] = replace(fed.pools["a"], status=PoolHealth(Health.UP, 100 * S, 100 * S, (40 * S,)),
                             cordoned=True)
    fed.pools["b"] = replace(fed.pools["b"], status=PoolHealth(Health.UP, 100 * S, 0))
    assert fed.deadline() == 130 * S                                 # cordoned home: no return
    fed.pools["a"] = replace(fed.pools["a"], cordoned=False)
    assert fed.deadline() == 100 * S                                 # window opens as it comes UP
    fed.work["j1"] = replace(fed.work["j1"], tried_ms=105 * S)
    assert fed.deadline() == 115 * S                                 # retried 10 s after a failed try
    fed.work["j1"] = replace(fed.work["j1"], tried_ms=155 * S)
    assert fed.deadline() == 130 * S                                 # 165 s is past the window (160 s)
    fed.work["j1"] = replace(fed.work["j1"], tried_ms=None, moves=(Move(10 * S, 3, "a", "b", "rebalance"),))
    assert fed.deadline() == 130 * S                                 # moved away deliberately: no return


def test_a_tick_after_the_return_window_gives_up_instead_of_being_due_again() -> None:
    fed = Federation.of(gpu_pool("a"), gpu_pool("b"), policy=CALM)
    fed.put_running("j1", "b")
    fed.work["j1"] = replace(fed.work["j1"], home_pool="a", moves=(Move(10 * S, 3, "a", "b", "failover"),))
    fed.pools["a"] = replace(fed.pools["a"], status=PoolHealth(Health.UP, 200 * S, 100 * S, (40 * S,)))
    fed.pools["b"] = replace(fed.pools["b"], status=PoolHealth(Health.UP, 200 * S, 0))
    assert fed.deadline() == 100 * S
    fed.now = 170 * S                                                # the Tick came late: window closed at 160 s
    plan = fed.tick()
    assert plan.moves == () and fed.pool_of("j1") == "b" and fed.work["j1"].tried_ms == 170 * S
    assert fed.deadline() == 230 * S


def test_pending_work_is_due_when_a_pool_comes_up_after_its_last_try() -> None:
    fed = Federation.of(gpu_pool("a"), gpu_pool("b"), policy=CALM)
    fed.put_running("busy", "a", gpus=4)
    down(fed, "b", 10 * S)
    fed.now = 20 * S
    waits = fed.submit("waits", WorkloadSpec(gpus=1))
    assert waits.phase is Phase.PENDING and waits.tried_ms == 20 * S
    fed.pools["a"] = replace(fed.pools["a"], status=PoolHealth(Health.UP, 20 * S, 0))
    assert fed.deadline() == 30 * S                                   # the retry interval
    fed.alive.add("b")
    fed.now = 25 * S
    fed.pools["b"] = replace(fed.pools["b"], status=PoolHealth(Health.UP, 25 * S, 25 * S, (10 * S,)))
    assert fed.deadline() == 25 * S                                   # b came UP since: try now
    fed.tick()
    assert fed.pool_of("waits") == "b"


def test_rebalance_deadline_waits_for_the_hysteresis_after_a_fruitless_look() -> None:
    fed = Federation.of(gpu_pool("a", 8), gpu_pool("b", 8))
    for i in range(8):
        fed.put_running(f"j{i}", "a")
    fed.put_running("b-busy", "b", gpus=4)
    fed.work = {w: replace(x, spec=replace(x.spec, exclude_pools=("b",))) if w.startswith("j") else x
                for w, x in fed.work.items()}
    fed.now = 1 * S
    assert fed.deadline() == 0                                       # a is overloaded: 100 % > 75 % * 1.2
    plan = fed.tick()
    assert plan.moves == () and all(fed.work[f"j{i}"].tried_ms == 1 * S for i in range(8))
    assert fed.deadline() == 30 * S                                  # only heartbeats, next look at 5 min 1 s
    fed.pools = {k: replace(p, status=PoolHealth(Health.UP, 5 * MIN, 0)) for k, p in fed.pools.items()}
    assert fed.deadline() == 5 * MIN + 1 * S
