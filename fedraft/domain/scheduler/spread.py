"""(shape, spread count) buckets per submitter pool, kept by the view's book/release/set_pool.

For GPU work a pool's total is fixed by its shape (region, tier, free and total units), whether it
holds a replica, and how many of the submitter's booked workloads run there (the spread part). Keeping,
per submitter, shape -> n -> the pools where it has exactly n, lets ranking score a shape's pools in
bulk per exact total and intersect only the top group's pools with the candidates. The view keeps a
second instance over CPU shapes (free CPU percent now): there the free part is only bounded by the
shape, so ranking uses the split for exact spread in each sub-bucket's bound and still scores the pools
of a reached sub-bucket one by one.

Redundant with the view's shapes and submitter counts (a view built afresh has the same index):
`FederationView.differences` compares it, `fingerprint` leaves it out. Sets only; readers reduce them
order-independently.
"""

from __future__ import annotations

from collections.abc import Mapping

Shape = tuple[str, str, int, int]


class SpreadIndex:
    """submitter pool -> shape -> n -> pools where the submitter has exactly n booked workloads (n >= 1).

    A pool not yet given a shape (booked before its record arrived) is counted but not bucketed until
    `reshape` gives it one."""

    __slots__ = ("_by", "_on")

    def __init__(self) -> None:
        self._by: dict[str, dict[Shape, dict[int, set[str]]]] = {}
        self._on: dict[str, dict[str, int]] = {}  # pool -> submitter -> n (n >= 1)

    def of(self, submitter: str) -> Mapping[Shape, Mapping[int, set[str]]]:
        """shape -> n -> pools, for one submitter (read only)."""
        return self._by.get(submitter, {})

    def count(self, submitter: str, pool_id: str, shape: Shape | None, old: int, new: int) -> None:
        """The submitter's booked workloads on the pool went from `old` to `new`; the pool has `shape`."""
        on = self._on.setdefault(pool_id, {})
        if new:
            on[submitter] = new
        else:
            on.pop(submitter, None)
            if not on:
                del self._on[pool_id]
        self._move(submitter, pool_id, shape, old, shape, new)

    def reshape(self, pool_id: str, old: Shape | None, new: Shape | None) -> None:
        """The pool's shape went from `old` to `new` (None: none yet, or being replaced)."""
        if old == new:
            return
        for submitter, n in self._on.get(pool_id, {}).items():
            self._move(submitter, pool_id, old, n, new, n)

    def _move(self, submitter: str, pool_id: str, old_shape: Shape | None, old: int, new_shape: Shape | None,
              new: int) -> None:
        if old_shape is not None and old:
            by = self._by[submitter]
            counts = by[old_shape]
            members = counts[old]
            members.discard(pool_id)
            if not members:
                del counts[old]
                if not counts:
                    del by[old_shape]
                    if not by:
                        del self._by[submitter]
        if new_shape is not None and new:
            self._by.setdefault(submitter, {}).setdefault(new_shape, {}).setdefault(new, set()).add(pool_id)

    def canonical(self) -> tuple[tuple[str, Shape, int, tuple[str, ...]], ...]:
        """Every (submitter, shape, n, sorted pools), sorted: equal for a kept index and a fresh one."""
        return tuple(sorted((s, shape, n, tuple(sorted(pools)))
                            for s, by in self._by.items() for shape, counts in by.items()
                            for n, pools in counts.items() if pools))
