"""Scorer.ranked (buckets, spread counts, a lazy heap) gives exactly the groups a plain scoring of every
pool gives, best total first, on busy federations with several submitters (hypothesis)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedraft.domain.placement.model import Phase, Placement, Policy, Pool, Trust, Weights, Workload, WorkloadSpec
from fedraft.domain.scheduler import FederationView
from fedraft.domain.scheduler.feasible import Request
from fedraft.domain.scheduler.rank import Scorer
from tests.domain.scheduler.test_preempt import SUBMITTERS, federations, requests


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(federations(), requests, st.sampled_from(SUBMITTERS), st.data())
def test_ranked_equals_plain_scoring(fed: tuple[list[Pool], list[Workload], list[tuple[str, str, Trust]], Policy],
                                     spec: WorkloadSpec, submitter: str, data: st.DataObject) -> None:
    pools, booked, pairings, policy = fed
    ids = [p.id for p in pools]
    replicas = [("m", p) for p in data.draw(st.sets(st.sampled_from(ids)))]
    view = FederationView.build(pools, booked, pairings, replicas)
    # more of each submitter's work, so spread counts vary
    for n, pool_id in enumerate(data.draw(st.lists(st.sampled_from(ids), max_size=12))):
        view.book(Workload(f"s{n:02d}", WorkloadSpec(cpu_millis=100), data.draw(st.sampled_from(SUBMITTERS)),
                           phase=Phase.RUNNING, placement=Placement(pool_id, "w0", ()), submitted_index=1))
    weights = Weights(*data.draw(st.tuples(*[st.integers(0, 4)] * 6)))
    spec = replace(spec, model=data.draw(st.sampled_from(("", "m"))), preferred_region=data.draw(
        st.sampled_from(("", "eu", "us"))))
    req = Request.of(view, Workload("x", spec, submitter), replace(policy, weights=weights), frozenset())
    scorer = Scorer(view, req, weights)
    subset = set(data.draw(st.sets(st.sampled_from(ids)))) if data.draw(st.booleans()) else set(ids)
    groups = list(scorer.ranked(subset))
    totals = {p: scorer.total(p) for p in subset}
    assert [t for t, _ in groups] == sorted(set(totals.values()), reverse=True)
    assert all(sorted(members) == sorted(p for p in subset if totals[p] == t) for t, members in groups)
