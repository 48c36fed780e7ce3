"""The placement stack: one workload in, one Decision out (SPEC §7). Pure and deterministic.

`place` never changes the view: the caller books the placement (and releases and re-queues the
preempted workloads, reason "preempted by <id>") when it applies the decision. A workload that is
already booked keeps its units while being placed again; release it first if it may stay.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedraft.domain.placement.model import Placement, Policy, Workload
from fedraft.domain.scheduler.explain import Explanation, ScoredPool
from fedraft.domain.scheduler.feasible import EXAMPLES, Fit, Refused, Request, narrow, with_free_units, worker_fit
from fedraft.domain.scheduler.preempt import find_eviction
from fedraft.domain.scheduler.rank import Scorer
from fedraft.domain.scheduler.select import select
from fedraft.domain.scheduler.view import FederationView


@dataclass(frozen=True)
class Decision:
    placement: Placement | None
    explanation: Explanation
    preempted: tuple[str, ...] = ()  # workload ids to evict (re-queued by the caller with reason "preempted by <id>")


def place(
    view: FederationView,
    workload: Workload,
    *,
    index: int,
    request_id: bytes,
    policy: Policy,
    avoid: frozenset[str] = frozenset(),
) -> Decision:
    """Where `workload` should run, decided at log `index` for `request_id`; `avoid`: pools not to consider."""
    req = Request.of(view, workload, policy, avoid)
    # 1. Pool-level filters (health, state, excluded, trust, labels, latency) through the view's indexes.
    eligible, refused = narrow(view, req)
    # 2. Quick capacity cut: some worker must hold spec.gpus free units at all.
    candidates, short = with_free_units(view, req, eligible)
    # 3. Rank: integer totals from policy weights, pools grouped by total.
    scorer = Scorer(view, req, policy.weights)
    groups = scorer.ranked(candidates)
    # 4. Select: the best total that fits on one worker; ties by the replicated hash, then id.
    chosen = select(groups, lambda pool_id: worker_fit(view, req, pool_id), index=index, request_id=request_id,
                    check=lambda pool_id: worker_fit(view, req, pool_id, locate=False))
    refusals = _merge(refused, short, chosen.misfits)
    scored = tuple(ScoredPool(p, total, scorer.parts(p)) for p, total in chosen.listed)
    unranked = len(candidates) - chosen.checked
    if chosen.winner is not None and chosen.fit is not None:
        fit = chosen.fit
        return Decision(
            Placement(chosen.winner, fit.worker, fit.gpus),
            _explain(scorer, chosen.winner, fit, f"placed on {chosen.winner}", scored, refusals, unranked),
        )
    # 5. Preemption: nothing fits; evict strictly lower-priority work where that makes room.
    if policy.preemption:
        eviction = find_eviction(view, req, eligible, scorer, index=index, request_id=request_id)
        if eviction is not None:
            fit = eviction.fit
            note = f"placed on {eviction.pool} by preempting {len(eviction.victims)} lower-priority workloads"
            top = (ScoredPool(eviction.pool, scorer.total(eviction.pool), scorer.parts(eviction.pool)),)
            return Decision(
                Placement(eviction.pool, fit.worker, fit.gpus),
                _explain(scorer, eviction.pool, fit, note, top, refusals, 0, eviction.victims),
                eviction.victims,
            )
    total = len(view.pool_ids())
    note = f"no pool fits ({total} pools)" if total else "no pools"
    return Decision(None, _explain(scorer, "", None, note, (), refusals, 0))


def _explain(scorer: Scorer, chosen: str, fit: Fit | None, note: str, scored: tuple[ScoredPool, ...],
             refused: tuple[Refused, ...], unranked: int, preempted: tuple[str, ...] = ()) -> Explanation:
    return Explanation(
        chosen=chosen,
        worker=fit.worker if fit else "",
        gpus=fit.gpus if fit else (),
        note=note,
        weights=scorer.weights,
        scored=scored,
        refused=refused,
        unranked=unranked,
        preempted=preempted,
        preempted_total=len(preempted),
    )


def _merge(pool_level: tuple[Refused, ...], short: Refused | None,
           misfits: tuple[tuple[str, str, str], ...]) -> tuple[Refused, ...]:
    """All refusals in filter order; the quick GPU cut and the worker checks both count as gpus/cpu/ram."""
    out = list(pool_level)
    for name in ("gpus", "cpu", "ram"):
        found = [(p, why) for p, f, why in misfits if f == name]
        count = len(found)
        if name == "gpus" and short is not None:
            found += short.examples
            count += short.count
        if count:
            out.append(Refused(name, count, tuple(sorted(found)[:EXAMPLES])))
    return tuple(out)
