"""The view's bookkeeping: bookings, loads, set_pool keeping bookings, and its indexes staying true."""

from __future__ import annotations

from dataclasses import replace

from fedraft.domain.placement.model import Health, Phase, Placement, Pool, PoolHealth, Trust
from fedraft.domain.scheduler.view import FederationView

from .builders import pool, view, worker, workload


def test_build_books_only_resource_holding_workloads() -> None:
    held = workload("a", placement=Placement("p", "w0", ("p-g0",)))
    done = replace(workload("b", placement=Placement("p", "w0", ("p-g1",))), phase=Phase.COMPLETED)
    v = view(pool("p", worker("w0", 1, 1, 1, 1, prefix="p")), workloads=(held, done))
    assert v.booked_gpus() == frozenset({"p-g0"})
    assert [w.id for w in v.running_on("p")] == ["a"]
    assert v.gpu_load_pct("p") == 25


def test_book_release_and_load() -> None:
    v = view(pool("p", worker("w0", 1, 1, prefix="p")), pool("q", worker("w0", 1, 1, prefix="q"), down=True))
    w = workload("a", placement=Placement("p", "w0", ("p-g0", "p-g1")), cpu_millis=1_000)
    v.book(w)
    assert (v.gpu_load_pct("p"), v.federation_gpu_load_pct(), v.free_units("p")) == (100, 100, 0)
    assert v.ids_with_free_units(1) == {"q"}
    v.release("a")
    assert (v.gpu_load_pct("p"), v.federation_gpu_load_pct(), v.free_units("p")) == (0, 0, 2)
    assert v.ids_with_free_units(2) == {"p", "q"}
    assert v.running_on("p") == () and v.booked_gpus() == frozenset()
    v.release("a")  # releasing twice is harmless


def test_rebooking_an_id_replaces_its_booking() -> None:
    v = view(pool("p", worker("w0", 1, 1, prefix="p")))
    v.book(workload("a", placement=Placement("p", "w0", ("p-g0",))))
    v.book(workload("a", placement=Placement("p", "w0", ("p-g1",))))
    assert v.booked_gpus() == frozenset({"p-g1"})


def test_a_unit_keeps_its_first_owner() -> None:
    v = view(pool("p", worker("w0", 1, 1, prefix="p")))
    v.book(workload("a", placement=Placement("p", "w0", ("p-g0",))))
    v.book(workload("b", placement=Placement("p", "w0", ("p-g0",))))
    v.release("b")
    assert v.gpu_owner("p-g0") == "a"


def test_set_pool_keeps_bookings_and_counts_only_healthy_units() -> None:
    p = pool("p", worker("w0", 1, 1, 1, 1, prefix="p"), labels=("x",))
    v = view(p)
    v.book(workload("a", placement=Placement("p", "w0", ("p-g0",)), cpu_millis=60_000))
    sick = replace(p, inventory=replace(p.inventory, workers=(worker("w0", 1, 1, 1, 1, prefix="p", unhealthy=(0, 3)),)),
                   status=PoolHealth(health=Health.DOWN), labels=())
    v.set_pool(sick)
    assert v.free_units("p") == 2 and v.total_units("p") == 2
    assert v.gpu_load_pct("p") == 0      # the booked unit went unhealthy: not counted in either
    assert v.cpu_free("p") == 4_000
    assert v.up_ids() == set() and v.label_ids("x") == set()
    assert v.federation_gpu_load_pct() == 0


def test_trusted_by_includes_self() -> None:
    v = view(pool("home"), pool("a"), pool("b"), trust={"a": Trust.HIGH, "b": Trust.STANDARD})
    assert v.trusted_by("home", Trust.HIGH) == frozenset({"home", "a"})
    assert v.trusted_by("home", Trust.STANDARD) == frozenset({"home", "a", "b"})
    assert v.pools()[0].id == "a" and v.pool("zz") is None


def test_lowest_ids_without_walks_or_builds_the_difference_alike() -> None:
    view = FederationView.build([Pool(f"p{i:02d}") for i in range(40)], (), (), ())
    ids = {f"p{i:02d}" for i in range(40)}
    for kept in ({f"p{i:02d}" for i in range(40) if i % 3}, ids - {"p07", "p31"}, ids - {"p39"}, set()):
        size = len(ids - kept)
        expected = sorted(ids - kept)[:3]
        assert view.lowest_ids_without(ids, kept, 3, size) == expected
    assert view.lowest_ids_without({"p01", "zz", "zy"}, {"p01"}, 3, 2) == ["zy", "zz"]  # ids the view lacks
