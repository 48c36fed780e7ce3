"""Each filter alone, as tables: (what the pool looks like, what the workload asks) -> refusal or None."""

from __future__ import annotations

import pytest

from fedraft.domain.placement.model import Latency, Policy, Pool, Trust, Workload
from fedraft.domain.scheduler import feasible as f
from fedraft.domain.scheduler.view import FederationView

from .builders import pool, view, worker, workload


def check(name: str, v: FederationView, w: Workload, pool_id: str, *, policy: Policy | None = None,
          avoid: frozenset[str] = frozenset()) -> str | None:
    req = f.Request.of(v, w, policy or Policy(), avoid)
    target = v.pool(pool_id)
    assert target is not None
    return dict(f.FILTERS)[name](v, req, target)


HOME = pool("home", region="eu")


@pytest.mark.parametrize(("target", "refusal"), [
    (pool("p"), None),
    (pool("p", down=True), "pool is down"),
])
def test_health(target: Pool, refusal: str | None) -> None:
    assert check("health", view(HOME, target), workload("w"), "p") == refusal


@pytest.mark.parametrize(("target", "refusal"), [
    (pool("p"), None),
    (pool("p", cordoned=True), "cordoned"),
    (pool("p", draining=True), "draining"),
    (pool("p", cordoned=True, draining=True), "cordoned"),
])
def test_state(target: Pool, refusal: str | None) -> None:
    assert check("state", view(HOME, target), workload("w"), "p") == refusal


@pytest.mark.parametrize(("exclude", "avoid", "refusal"), [
    ((), frozenset(), None),
    (("p",), frozenset(), "excluded by the workload"),
    ((), frozenset({"p"}), "avoided (moving away or flapping)"),
    (("q",), frozenset({"r"}), None),
])
def test_excluded(exclude: tuple[str, ...], avoid: frozenset[str], refusal: str | None) -> None:
    v = view(HOME, pool("p"))
    assert check("excluded", v, workload("w", exclude_pools=exclude), "p", avoid=avoid) == refusal


@pytest.mark.parametrize(("paired", "min_trust", "target", "refusal"), [
    # the submitter's own pool always passes, whatever min_trust says
    (Trust.NONE, Trust.MAX, "home", None),
    # zero default trust: an unpaired pool gets nothing, even with min_trust NONE
    (Trust.NONE, Trust.NONE, "p", "not paired with home"),
    (Trust.STANDARD, Trust.NONE, "p", None),
    (Trust.STANDARD, Trust.STANDARD, "p", None),
    (Trust.STANDARD, Trust.HIGH, "p", "trust standard < high"),
    (Trust.HIGH, Trust.HIGH, "p", None),
    (Trust.HIGH, Trust.MAX, "p", "trust high < max"),
])
def test_trust(paired: Trust, min_trust: Trust, target: str, refusal: str | None) -> None:
    v = view(HOME, pool("p"), trust={"p": paired})
    assert check("trust", v, workload("w", min_trust=min_trust), target) == refusal


def test_trust_is_symmetric_and_self_is_max() -> None:
    v = FederationView.build([HOME, pool("p")], (), [("p", "home", Trust.HIGH)], ())
    assert (v.trust("home", "p"), v.trust("p", "home"), v.trust("p", "p"), v.trust("p", "x")) == (
        Trust.HIGH, Trust.HIGH, Trust.MAX, Trust.NONE)


@pytest.mark.parametrize(("has", "needs", "refusal"), [
    ((), (), None),
    (("ib", "nvlink"), ("nvlink",), None),
    (("ib",), ("ib", "nvlink"), "missing labels nvlink"),
    ((), ("a", "b"), "missing labels a,b"),
])
def test_labels(has: tuple[str, ...], needs: tuple[str, ...], refusal: str | None) -> None:
    v = view(HOME, pool("p", labels=has))
    assert check("labels", v, workload("w", labels=needs), "p") == refusal


LATENCIES = Policy(latencies=(Latency("eu", "us", 80), Latency("us", "eu", 80)))


@pytest.mark.parametrize(("region", "limit", "refusal"), [
    ("us", 0, None),                                  # no limit: nothing to check
    ("eu", 10, None),                                 # same region is 0 ms
    ("us", 100, None),
    ("us", 80, None),
    ("us", 50, "latency 80 ms > 50 ms"),
    ("ap", 500, "latency eu->ap unknown"),            # unknown latency with a limit set: refused
])
def test_latency(region: str, limit: int, refusal: str | None) -> None:
    v = view(HOME, pool("p", region=region))
    assert check("latency", v, workload("w", max_latency_ms=limit), "p", policy=LATENCIES) == refusal


def test_latency_from_an_unknown_submitter_pool_is_unknown() -> None:
    v = view(pool("p", region="eu"), submitter="ghost")
    assert check("latency", v, workload("w", "ghost", max_latency_ms=5), "p") == "latency ?->eu unknown"


GPU_POOL = pool("p", worker("a", 40_000, 40_000, cpu=8_000, ram=64_000),
                worker("b", 80_000, 80_000, 80_000, unhealthy=(2,), cpu=16_000, ram=32_000))


@pytest.mark.parametrize(("spec", "filter_name", "refusal"), [
    ({"gpus": 2}, "gpus", None),
    ({"gpus": 3}, "gpus", "no worker has 3 free GPUs (most 2)"),           # the unhealthy one does not count
    ({"gpus": 2, "gpu_memory_mb": 80_000}, "gpus", None),
    ({"gpus": 1, "gpu_memory_mb": 90_000}, "gpus", "no worker has 1 free GPUs of >= 90000 MiB (most 0)"),
    ({"gpus": 2, "cpu_millis": 16_000}, "cpu", None),
    ({"gpus": 2, "cpu_millis": 20_000}, "cpu", "no worker with the GPUs has 20000m CPU free"),
    # CPU on one worker and RAM on the other is not a fit: both must be on the same worker
    ({"gpus": 2, "cpu_millis": 16_000, "ram_mb": 64_000}, "ram",
     "no worker with the GPUs and CPU has 64000 MiB RAM free"),
    ({"cpu_millis": 8_000, "ram_mb": 64_000}, "ram", None),
])
def test_capacity(spec: dict[str, int], filter_name: str, refusal: str | None) -> None:
    v = view(HOME, GPU_POOL)
    assert check(filter_name, v, workload("w", **spec), "p") == refusal


@pytest.mark.parametrize(("spec", "worker_name", "units"), [
    # best fit: the worker with the fewest sufficient free GPUs
    ({"gpus": 1}, "a", ("a-g0",)),
    # best fit by memory: the smallest sufficient units, so big GPUs stay free
    ({"gpus": 1, "gpu_memory_mb": 50_000}, "b", ("b-g0",)),
    ({"gpus": 2, "gpu_memory_mb": 40_000}, "a", ("a-g0", "a-g1")),
    ({"cpu_millis": 1_000}, "a", ()),
])
def test_worker_and_unit_choice(spec: dict[str, int], worker_name: str, units: tuple[str, ...]) -> None:
    p = pool("p", worker("a", 40_000, 40_000), worker("b", 80_000, 80_000, 40_000))
    v = view(HOME, p)
    req = f.Request.of(v, workload("w", **spec), Policy(), frozenset())
    assert f.worker_fit(v, req, "p") == f.Fit(worker_name, units)


def test_a_booked_gpu_is_not_free() -> None:
    from fedraft.domain.placement.model import Placement
    running = workload("r", placement=Placement("p", "w0", ("p-g0",)))
    v = view(HOME, pool("p", worker("w0", 80_000, 80_000, prefix="p")), workloads=(running,))
    req = f.Request.of(v, workload("w", gpus=1), Policy(), frozenset())
    assert f.worker_fit(v, req, "p") == f.Fit("w0", ("p-g1",))
    req2 = f.Request.of(v, workload("w", gpus=2), Policy(), frozenset())
    assert f.worker_fit(v, req2, "p") == ("gpus", "no worker has 2 free GPUs (most 1)")


def test_a_pool_without_workers_takes_no_cpu_work() -> None:
    v = view(HOME, Pool("p"))
    assert check("cpu", v, workload("w", cpu_millis=1), "p") == "no workers reported"
