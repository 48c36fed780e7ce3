"""Pool health from heartbeats (SPEC D7) and the anti-flap rule (SPEC §7), in effective time.

    event / condition                                   UP pool                      DOWN pool
    ------------------------------------------------    ---------------------------  ---------------------------
    PoolHeartbeat at t                                  last_heartbeat = t           UP; last_heartbeat = t,
                                                                                     changed = t
    t >= max(last_heartbeat, term start) + down_after   DOWN; changed = t;           stays DOWN
                                                        down event t recorded
    UP, flap history of 2+, UP since >= hysteresis      flap history cleared         —

Counting from `max(last heartbeat, start of the current leader's term)` means a full-cluster restart
(a new term that starts long after every pool's last heartbeat) gives every pool a fresh 30 s
(down_after = missed_heartbeats * heartbeat interval = 3 * 10 s by default).

Flapping. Going DOWN at t records t and keeps only the earlier events within the hysteresis of t, so
the history holds two or more events exactly when the pool went down twice within 5 minutes. Such a
pool is *flapping* — not a target for any placement — until it has been UP for the hysteresis without a
break; then the history is cleared. A pool that went down twice and then stayed down for an hour is
still flapping when it comes back: it has not yet been stable for 5 minutes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from fedraft.domain.placement.model import Health, Policy, Pool

__all__ = ["check_health", "flapping_pools", "health_deadline", "is_flapping", "on_heartbeat"]

# This many down events within the hysteresis make a pool flap.
FLAP_EVENTS = 2


def on_heartbeat(pool: Pool, now_ms: int, policy: Policy) -> Pool:
    """The pool said it is alive at `now_ms`: it is UP, and UP since now if it was DOWN."""
    status = pool.status
    last = max(status.last_heartbeat_ms, now_ms)
    if status.health is Health.DOWN:
        return replace(pool, status=replace(status, health=Health.UP, last_heartbeat_ms=last, changed_ms=now_ms))
    if last == status.last_heartbeat_ms:
        return pool
    return replace(pool, status=replace(status, last_heartbeat_ms=last))


def down_at(pool: Pool, term_start_ms: int, policy: Policy) -> int:
    """When an UP pool without further heartbeats becomes DOWN (SPEC D7)."""
    return max(pool.status.last_heartbeat_ms, term_start_ms) + policy.down_after_ms


def check_health(pool: Pool, now_ms: int, term_start_ms: int, policy: Policy) -> Pool:
    """The pool as of `now_ms`; the same object when nothing changed."""
    status = pool.status
    if status.health is Health.DOWN:
        return pool
    if now_ms >= down_at(pool, term_start_ms, policy):
        recent = tuple(t for t in status.down_events_ms if now_ms - t <= policy.hysteresis_ms)
        return replace(pool, status=replace(status, health=Health.DOWN, changed_ms=now_ms,
                                            down_events_ms=(*recent, now_ms)))
    if len(status.down_events_ms) >= FLAP_EVENTS and now_ms >= _stable_at(pool, policy):
        return replace(pool, status=replace(status, down_events_ms=()))
    return pool


def is_flapping(pool: Pool, now_ms: int, policy: Policy) -> bool:
    """Went down twice within the hysteresis and has not been UP for the hysteresis since."""
    if len(pool.status.down_events_ms) < FLAP_EVENTS:
        return False
    return pool.status.health is Health.DOWN or now_ms < _stable_at(pool, policy)


def flapping_pools(pools: Iterable[Pool], now_ms: int, policy: Policy) -> frozenset[str]:
    """Ids of the pools no placement may target now because they flap."""
    return frozenset(p.id for p in pools if is_flapping(p, now_ms, policy))


def health_deadline(pool: Pool, term_start_ms: int, policy: Policy) -> int | None:
    """The next effective time at which check_health would change this pool, if any.

    A DOWN pool changes only with a heartbeat, which is an entry of its own.
    """
    if pool.status.health is Health.DOWN:
        return None
    deadline = down_at(pool, term_start_ms, policy)
    if len(pool.status.down_events_ms) >= FLAP_EVENTS:
        deadline = min(deadline, _stable_at(pool, policy))
    return deadline


def _stable_at(pool: Pool, policy: Policy) -> int:
    return pool.status.changed_ms + policy.hysteresis_ms
