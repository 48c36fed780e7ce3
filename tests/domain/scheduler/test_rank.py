"""Each score part alone, as tables, and the lazy grouping agreeing with plain per-pool totals."""

from __future__ import annotations

import pytest

from fedraft.domain.placement.model import Latency, Placement, Policy, Weights
from fedraft.domain.scheduler import rank
from fedraft.domain.scheduler.feasible import Request

from .builders import pool, view, worker, workload

HOME = pool("home", region="eu")
POLICY = Policy(latencies=(Latency("eu", "us", 50), Latency("eu", "ap", 150)))


def parts(spec: dict[str, object], target_kw: dict[str, object], *, replicas: tuple[tuple[str, str], ...] = (),
          running: int = 0) -> dict[str, int]:
    target = pool("p", worker("w0", 80_000, 80_000, 80_000, 80_000, cpu=10_000, prefix="p"), **target_kw)  # type: ignore[arg-type]
    booked = tuple(workload(f"r{i}", placement=Placement("p", "w0", (f"p-g{i}",))) for i in range(running))
    v = view(HOME, target, workloads=booked, replicas=replicas)
    scorer = rank.Scorer(v, Request.of(v, workload("w", **spec), POLICY, frozenset()), Weights())  # type: ignore[arg-type]
    return dict(zip(rank.PARTS, scorer.parts("p"), strict=True))


@pytest.mark.parametrize(("spec", "running", "free"), [
    ({"gpus": 1}, 0, 75),              # 3 of 4 GPUs free after placement
    ({"gpus": 2}, 1, 25),              # 1 of 4
    ({"gpus": 4}, 0, 0),
    ({"cpu_millis": 2_500}, 0, 75),    # CPU work: share of CPU left
])
def test_free_capacity(spec: dict[str, object], running: int, free: int) -> None:
    assert parts(spec, {}, running=running)["free"] == free


@pytest.mark.parametrize(("preferred", "region", "score"), [
    ("", "eu", 0), ("us", "us", 100), ("us", "eu", 0),
])
def test_preferred_region(preferred: str, region: str, score: int) -> None:
    assert parts({"gpus": 1, "preferred_region": preferred}, {"region": region})["region"] == score


@pytest.mark.parametrize(("model", "replicas", "score"), [
    ("", (("llama", "p"),), 0), ("llama", (("llama", "p"),), 100), ("llama", (("llama", "home"),), 0),
])
def test_data_locality(model: str, replicas: tuple[tuple[str, str], ...], score: int) -> None:
    assert parts({"gpus": 1, "model": model}, {}, replicas=replicas)["locality"] == score


@pytest.mark.parametrize(("region", "score"), [
    ("eu", 100),   # same region: 0 ms
    ("us", 50),    # 50 ms: half
    ("ap", 25),    # 150 ms
    ("sa", 0),     # unknown
])
def test_latency_lower_is_better(region: str, score: int) -> None:
    assert parts({"gpus": 1}, {"region": region})["latency"] == score


@pytest.mark.parametrize(("spec", "tier", "score"), [
    ({"gpus": 1}, "gpu", 100), ({"gpus": 1}, "cpu", 0),
    ({"cpu_millis": 1}, "cpu", 100), ({"cpu_millis": 1}, "gpu", 0), ({"gpus": 1}, "hq", 0),
])
def test_specialty(spec: dict[str, object], tier: str, score: int) -> None:
    assert parts(spec, {"tier": tier})["specialty"] == score


@pytest.mark.parametrize(("running", "score"), [(0, 100), (1, 50), (2, 33), (3, 25)])
def test_spread_prefers_pools_with_less_of_this_submitters_work(running: int, score: int) -> None:
    assert parts({"gpus": 1}, {}, running=running)["spread"] == score


def test_total_is_the_weighted_sum() -> None:
    got = parts({"gpus": 1, "preferred_region": "eu"}, {})
    w = Weights()
    assert got == {"free": 75, "region": 100, "locality": 0, "latency": 100, "specialty": 100, "spread": 100}
    v = view(HOME, pool("p", worker("w0", 80_000, 80_000, 80_000, 80_000, prefix="p")))
    scorer = rank.Scorer(v, Request.of(v, workload("w", gpus=1, preferred_region="eu"), POLICY, frozenset()), w)
    assert scorer.total("p") == 4 * 75 + 3 * 100 + 2 * 100 + 2 * 100 + 1 * 100


def test_ranked_groups_equal_totals_best_first() -> None:
    pools = [pool(f"p{i}", worker("w0", *([80_000] * (1 + i % 4)), prefix=f"p{i}"), region=("eu", "us")[i % 2],
                  tier=("gpu", "cpu")[i % 3 == 0]) for i in range(12)]
    booked = (workload("r", placement=Placement("p1", "w0", ("p1-g0",))),)
    v = view(HOME, *pools, workloads=booked, replicas=(("m", "p3"), ("m", "p4")))
    for spec in ({"gpus": 1, "model": "m"}, {"cpu_millis": 100}, {"gpus": 2, "preferred_region": "us"}):
        scorer = rank.Scorer(v, Request.of(v, workload("w", **spec), POLICY, frozenset()), Weights())  # type: ignore[arg-type]
        ids = {p.id for p in pools}
        groups = list(scorer.ranked(ids))
        assert [t for t, _ in groups] == sorted({scorer.total(p) for p in ids}, reverse=True)
        assert {t: sorted(m) for t, m in groups} == {
            t: sorted(p for p in ids if scorer.total(p) == t) for t, _ in groups}
