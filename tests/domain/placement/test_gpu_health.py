"""gpu_health (issue 9): fault records from inventories, the hysteresis, and broken placements."""

from __future__ import annotations

from dataclasses import replace

from fedraft.domain.placement.gpu_health import (
    MAX_FAULTS,
    broken_reason,
    clear_recovered,
    fault_deadline,
    record_inventory,
)
from fedraft.domain.placement.model import Gpu, GpuFault, Inventory, Phase, Placement, Policy, Pool, Worker, Workload
from fedraft.domain.placement.model import WorkloadSpec as Spec

POLICY = Policy()


def inv(**workers: tuple[Gpu, ...]) -> Inventory:
    return Inventory(tuple(Worker(name, 1_000, 1_000, gpus) for name, gpus in sorted(workers.items())))


def g(uuid: str, healthy: bool = True, fault: str = "") -> Gpu:
    return Gpu(uuid, "A100", 80_000, healthy, fault=fault)


def test_unhealthy_missing_and_vanished_worker_units_become_faults() -> None:
    pool = Pool("p", inventory=inv(a=(g("G1"), g("G2")), b=(g("G3"),)))
    faults = record_inventory(pool, inv(a=(g("G1", False, "fan failed"),)), 100)
    assert faults == (GpuFault("G1", "a", "fan failed", 100), GpuFault("G2", "a", "no longer reported", 100),
                      GpuFault("G3", "b", "worker b no longer reported", 100))


def test_a_fault_recovers_only_after_the_hysteresis_of_healthy_reports() -> None:
    pool = Pool("p", inventory=inv(a=(g("G1", False),)), gpu_faults=(GpuFault("G1", "a", "reported unhealthy", 5),))
    healthy = replace(pool, inventory=inv(a=(g("G1"),)),
                      gpu_faults=record_inventory(pool, inv(a=(g("G1"),)), 100))
    assert healthy.gpu_faults == (GpuFault("G1", "a", "reported unhealthy", 5, 100),)
    assert fault_deadline(healthy, POLICY) == 100 + POLICY.hysteresis_ms
    assert clear_recovered(healthy, 99 + POLICY.hysteresis_ms, POLICY) is healthy
    assert clear_recovered(healthy, 100 + POLICY.hysteresis_ms, POLICY).gpu_faults == ()
    again = record_inventory(healthy, inv(a=(g("G1", False, "xid 79"),)), 200)
    assert again == (GpuFault("G1", "a", "xid 79", 200),)   # failing again restarts the clock


def test_a_unit_still_failing_keeps_its_first_failure_time() -> None:
    pool = Pool("p", inventory=inv(a=(g("G1", False, "xid 79"),)), gpu_faults=(GpuFault("G1", "a", "xid 79", 5),))
    assert record_inventory(pool, inv(a=(g("G1", False, "xid 79"), g("G2"))), 100) == pool.gpu_faults


def test_fault_records_are_bounded_newest_kept() -> None:
    many = tuple(GpuFault(f"G{i:04d}", "a", "no longer reported", i) for i in range(MAX_FAULTS))
    pool = Pool("p", inventory=inv(a=(g("X"),)), gpu_faults=many)
    kept = record_inventory(pool, inv(), 10_000)
    assert len(kept) == MAX_FAULTS and GpuFault("X", "a", "worker a no longer reported", 10_000) in kept
    assert GpuFault("G0000", "a", "no longer reported", 0) not in kept


def test_broken_reason_names_what_failed() -> None:
    pool = Pool("p", inventory=inv(a=(g("G1"), g("G2", False, "thermal alarm: at the shutdown temperature"))))
    w = Workload("w", Spec(gpus=1), "p", Phase.RUNNING, Placement("p", "a", ("G1",)))
    assert broken_reason(w, pool) is None
    assert broken_reason(replace(w, placement=Placement("p", "a", ("G2",))), pool) == \
        "GPU G2 unhealthy: thermal alarm: at the shutdown temperature"
    assert broken_reason(replace(w, placement=Placement("p", "a", ("G9",))), pool) == "GPU G9 no longer reported"
    assert broken_reason(replace(w, placement=Placement("p", "b", ())), pool) == "worker b no longer reported"
    assert broken_reason(replace(w, placement=Placement("q", "a", ("G2",))), pool) is None
