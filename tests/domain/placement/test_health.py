"""Pool health (SPEC D7) and anti-flap (SPEC §7) as tables, in effective milliseconds."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fedraft.domain.placement.health import (
    check_health,
    flapping_pools,
    health_deadline,
    is_flapping,
    on_heartbeat,
)
from fedraft.domain.placement.model import Health, Policy, Pool, PoolHealth

POLICY = Policy()  # heartbeat 10 s, 3 missed, hysteresis 5 min
S = 1_000
MIN = 60 * S
UP, DOWN = Health.UP, Health.DOWN


def pool(health: Health = UP, last: int = 0, changed: int = 0, events: tuple[int, ...] = ()) -> Pool:
    return Pool("p", status=PoolHealth(health, last, changed, events))


# now, term start, last heartbeat -> DOWN?
@pytest.mark.parametrize(("now", "term_start", "last", "down"), [
    (29_999, 0, 0, False),
    (30_000, 0, 0, True),            # three heartbeats of 10 s missed
    (100 * S, 0, 70 * S, True),
    (100 * S, 0, 69 * S, True),
    (100 * S, 0, 70 * S + 1, False),
    (100 * S, 90 * S, 10 * S, False),  # a new term gives every pool a fresh 30 s (full-cluster restart)
    (120 * S, 90 * S, 10 * S, True),
    (100 * S, 50 * S, 80 * S, False),  # the later of the two counts
])
def test_down_after_three_missed_heartbeats_from_the_later_of_heartbeat_and_term(
        now: int, term_start: int, last: int, down: bool) -> None:
    after = check_health(pool(last=last), now, term_start, POLICY)
    assert (after.status.health is DOWN) == down
    if down:
        assert after.status.changed_ms == now and after.status.down_events_ms == (now,)
    else:
        assert after == pool(last=last)


def test_nothing_changes_when_nothing_is_due() -> None:
    p = pool(last=5 * S)
    assert check_health(p, 6 * S, 0, POLICY) is p
    down = pool(DOWN, 0, 30 * S, (30 * S,))
    assert check_health(down, 10 * MIN, 0, POLICY) is down


@pytest.mark.parametrize(("before", "now", "after"), [
    (pool(UP, 10 * S, 0), 20 * S, pool(UP, 20 * S, 0)),
    (pool(DOWN, 10 * S, 40 * S, (40 * S,)), 50 * S, pool(UP, 50 * S, 50 * S, (40 * S,))),
    (pool(UP, 20 * S, 0), 20 * S, pool(UP, 20 * S, 0)),
])
def test_heartbeat(before: Pool, now: int, after: Pool) -> None:
    assert on_heartbeat(before, now, POLICY) == after


def test_every_down_transition_records_an_event_and_keeps_those_within_hysteresis() -> None:
    p = pool(UP, 0, 0, (0, 1 * MIN))
    p = check_health(replace(p, status=replace(p.status, last_heartbeat_ms=5 * MIN)), 5 * MIN + 30 * S, 0, POLICY)
    assert p.status.down_events_ms == (1 * MIN, 5 * MIN + 30 * S)   # the event at 0 is 5.5 min older: dropped
    p = on_heartbeat(p, 12 * MIN, POLICY)
    p = check_health(p, 12 * MIN + 30 * S, 0, POLICY)
    assert p.status.down_events_ms == (12 * MIN + 30 * S,)


# (health, changed, events), now -> flapping?
@pytest.mark.parametrize(("status", "now", "flapping"), [
    ((UP, 0, ()), 0, False),
    ((UP, 2 * MIN, (1 * MIN,)), 3 * MIN, False),               # down once: not flapping
    ((DOWN, 3 * MIN, (1 * MIN, 3 * MIN)), 3 * MIN, True),       # down twice within 5 min
    ((UP, 4 * MIN, (1 * MIN, 3 * MIN)), 4 * MIN, True),         # back, not yet stable
    ((UP, 4 * MIN, (1 * MIN, 3 * MIN)), 9 * MIN - 1, True),
    ((UP, 4 * MIN, (1 * MIN, 3 * MIN)), 9 * MIN, False),        # UP for 5 min without a break
    ((UP, 60 * MIN, (1 * MIN, 3 * MIN)), 61 * MIN, True),       # was down an hour: still must prove itself
])
def test_flapping(status: tuple[Health, int, tuple[int, ...]], now: int, flapping: bool) -> None:
    health, changed, events = status
    p = pool(health, changed, changed, events)
    assert is_flapping(p, now, POLICY) == flapping
    assert flapping_pools((p,), now, POLICY) == (frozenset({"p"}) if flapping else frozenset())


def test_flap_history_is_cleared_once_stable() -> None:
    p = pool(UP, 4 * MIN, 4 * MIN, (1 * MIN, 3 * MIN))
    heartbeating = replace(p, status=replace(p.status, last_heartbeat_ms=9 * MIN - 5 * S))
    assert check_health(heartbeating, 9 * MIN - 1, 0, POLICY) is heartbeating
    cleared = check_health(heartbeating, 9 * MIN, 0, POLICY)
    assert cleared.status.down_events_ms == () and cleared.status.health is UP


@pytest.mark.parametrize(("p", "term_start", "deadline"), [
    (pool(UP, 10 * S), 0, 40 * S),
    (pool(UP, 10 * S), 25 * S, 55 * S),
    (pool(DOWN, 10 * S, 40 * S, (40 * S,)), 0, None),                  # only a heartbeat changes it
    (pool(UP, 9 * MIN - 5 * S, 4 * MIN, (1 * MIN, 3 * MIN)), 0, 9 * MIN),  # flapping ends first
    (pool(UP, 4 * MIN, 4 * MIN, (1 * MIN, 3 * MIN)), 0, 4 * MIN + 30 * S),
    (pool(UP, 4 * MIN, 2 * MIN, (1 * MIN,)), 0, 4 * MIN + 30 * S),
])
def test_health_deadline(p: Pool, term_start: int, deadline: int | None) -> None:
    assert health_deadline(p, term_start, POLICY) == deadline
    if deadline is not None:
        assert check_health(p, deadline - 1, term_start, POLICY) is p
        assert check_health(p, deadline, term_start, POLICY) != p


def test_policy_numbers_are_used() -> None:
    fast = Policy(heartbeat_ms=1_000, missed_heartbeats=2, hysteresis_ms=10 * S)
    assert check_health(pool(last=0), 2 * S, 0, fast).status.health is DOWN
    assert not is_flapping(pool(UP, 5 * S, 5 * S, (1 * S, 3 * S)), 15 * S, fast)
