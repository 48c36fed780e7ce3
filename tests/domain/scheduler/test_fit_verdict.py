"""worker_fit(locate=False), used for the pools listed after the winner, gives the same verdict as the full
check (the same refusal, or a fit) on busy federations (hypothesis)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from fedraft.domain.placement.model import Policy, Pool, Trust, Workload, WorkloadSpec
from fedraft.domain.scheduler import FederationView
from fedraft.domain.scheduler.feasible import FITS, Fit, Request, worker_fit
from tests.domain.scheduler.test_preempt import federations, requests


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(federations(), requests)
def test_the_verdict_without_locating_is_the_full_checks(
        fed: tuple[list[Pool], list[Workload], list[tuple[str, str, Trust]], Policy], spec: WorkloadSpec) -> None:
    pools, booked, pairings, policy = fed
    view = FederationView.build(pools, booked, pairings, [])
    req = Request.of(view, Workload("x", spec, pools[0].id), policy, frozenset())
    for p in pools:
        full, quick = worker_fit(view, req, p.id), worker_fit(view, req, p.id, locate=False)
        assert quick is FITS if isinstance(full, Fit) else quick == full
