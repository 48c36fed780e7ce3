"""Selection (SPEC §7): the highest total that fits; ties by sha256(index || request_id || id), then id.

Pools are checked for a worker fit lazily, best total first: the winner is the first pool that fits
in that order, and checking stops once the explanation has its listed pools. Pools below that are
counted as "not ranked" rather than checked (they passed every pool filter and scored lower).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from hashlib import sha256
from heapq import heapify, heappop

from fedraft.domain.scheduler.feasible import Fit

LISTED = 16  # pools with their scores kept in an explanation


def tie_key(index: int, request_id: bytes, pool_id: str) -> bytes:
    return sha256(index.to_bytes(8, "big") + request_id + pool_id.encode()).digest()


def tie_order(index: int, request_id: bytes, ids: Iterable[str]) -> Iterator[str]:
    """Tied pools in tie-break order: by sha256(index || request_id || id), then id. Lazy: every key is
    hashed (inherent: the smallest of N hashes needs all N), but the order is taken from a heap as far as
    the caller walks, so a group of hundreds walked for its first few pools is never fully sorted."""
    copy = sha256(index.to_bytes(8, "big") + request_id).copy
    keyed: list[tuple[bytes, str]] = []
    for pool_id in ids:  # the same keys as tie_key, the prefix hashed once
        h = copy()
        h.update(pool_id.encode())
        keyed.append((h.digest(), pool_id))
    heapify(keyed)
    while keyed:
        yield heappop(keyed)[1]


@dataclass(frozen=True)
class Selection:
    winner: str | None
    fit: Fit | None
    listed: tuple[tuple[str, int], ...]           # (pool, total): winner first, then best first
    misfits: tuple[tuple[str, str, str], ...]     # (pool, filter, reason) for checked pools that did not fit
    checked: int                                  # candidates checked for a worker fit


def select(
    groups: Iterable[tuple[int, list[str]]],
    fit: Callable[[str], Fit | tuple[str, str]],
    *,
    index: int,
    request_id: bytes,
    listed: int = LISTED,
    check: Callable[[str], Fit | tuple[str, str]] | None = None,
) -> Selection:
    """Pick the best fitting pool from groups of equal total, given best total first.

    The winner's tie group is walked in tie-break order; lower groups, only walked to fill the
    explanation, by id (their order cannot change the decision). Once there is a winner, pools are
    checked with `check` when given (the same verdict as `fit`, without locating the units).
    """
    winner: str | None = None
    chosen: Fit | None = None
    shown: list[tuple[str, int]] = []
    misfits: list[tuple[str, str, str]] = []
    checked = 0
    for total, members in groups:
        order = tie_order(index, request_id, members) if winner is None else _ascending(members)
        for pool_id in order:
            if winner is not None and len(shown) >= listed:
                break
            checked += 1
            found = fit(pool_id) if winner is None or check is None else check(pool_id)
            if isinstance(found, Fit):
                if winner is None:
                    winner, chosen = pool_id, found
                shown.append((pool_id, total))
            else:
                misfits.append((pool_id, found[0], found[1]))
        if winner is not None and len(shown) >= listed:
            break
    return Selection(winner, chosen, tuple(shown), tuple(misfits), checked)


def _ascending(ids: Iterable[str]) -> Iterator[str]:
    """`ids` in ascending order, lazily (a heap: a group walked for a few pools is never fully sorted)."""
    heap = list(ids)
    heapify(heap)
    while heap:
        yield heappop(heap)
