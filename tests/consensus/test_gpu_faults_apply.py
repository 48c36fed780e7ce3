"""GPU faults through the real Applier on LMDB (issue 9), with inventories from static inventory files:
each health signal, a GPU that stops being reported and a worker that vanishes move the work on it at
once (reason gpu-fault); a failed unit takes no new work until it has been reported healthy for the
hysteresis window; MIG instances are booked as units and a profile is honoured."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedraft.domain import commands as c
from fedraft.domain.outcome import Code
from fedraft.domain.placement import commands as pc
from fedraft.domain.placement.model import Gpu, Inventory, Phase, Policy, Pool, Worker, Workload, WorkloadSpec
from fedraft.inventory.static import parse_inventory
from fedraft.storage import placement_schema as schema
from fedraft.storage.state import StateStore
from tests.consensus.test_placement_apply import T0, Log
from tests.helpers import Fed, make_federation

HYSTERESIS = Policy().hysteresis_ms


def _gpu(uuid: str, extra: str = "", memory_mb: int = 81_920) -> str:
    return f'[[workers.gpus]]\nuuid = "{uuid}"\nmodel = "NVIDIA A100-SXM4-80GB"\nmemory_mb = {memory_mb}\n{extra}\n'


def _static(workers: dict[str, list[str]]) -> Inventory:
    """An inventory as a static inventory file describes it (TOML), parsed by the real loader."""
    doc = "".join(f'[[workers]]\nname = "{name}"\ncpu_millis = 32000\nram_mb = 131072\n' + "".join(gpus)
                  for name, gpus in workers.items())
    return parse_inventory(doc.encode(), "TOML", "inventory test")


HEALTHY = {"dc-0": [_gpu("GPU-a"), _gpu("GPU-b")], "dc-1": [_gpu("GPU-c"), _gpu("GPU-d")]}


@pytest.fixture()
def fed() -> Fed:
    return make_federation()


@pytest.fixture()
def log(tmp_path: Path, fed: Fed) -> Log:
    return Log(fed, [StateStore(tmp_path / "a", fed.genesis, map_size=64 << 20)])


def _report(log: Log, inventory: Inventory) -> None:
    r = log.one(log.fed.nodes["gpu-dc"], pc.ReportInventory("gpu-dc", inventory, tier="gpu"))
    assert r.code == Code.OK, r


def _submit(log: Log, wid: str, spec: WorkloadSpec) -> str:
    r = log.one(log.fed.admins["gpu-dc"], pc.Submit(wid, spec))
    assert r.code == Code.OK, r
    return ",".join(r.placement.gpus)


def _workload(log: Log, wid: str) -> Workload:
    with log.stores[0].read() as st:
        w = schema.get_workload(st, wid)
    assert w is not None
    return w


def _pool(log: Log) -> Pool:
    with log.stores[0].read() as st:
        p = schema.get_pool(st, "gpu-dc")
    assert p is not None
    return p


def _where(log: Log, wid: str) -> tuple[str, ...]:
    w = _workload(log, wid)
    return w.placement.gpus if w.placement is not None else ()


def _advance(log: Log, until: int) -> None:
    """Let effective time reach `until` in 10-s steps (it advances a bounded step per entry), the pools
    beating, a Tick after each step."""
    while log.now < until:
        log.now = min(until, log.now + 10_000)
        for pool in ("hq", "gpu-dc", "cpu-branch"):
            assert log.one(log.fed.nodes[pool], pc.PoolHeartbeat(pool)).code == Code.OK
        log.one(log.fed.nodes["hq"], c.Tick(log.now))


SIGNALS = [
    ("xid", 'fault = "critical XID 79 (needs a GPU reset)"'),
    ("retired-pages", 'fault = "retired pages pending (needs a GPU reset)"'),
    ("row-remap", 'fault = "row remapping failed (replace the GPU)"'),
    ("device-lost", 'fault = "device 0 unreadable: GPU is lost"'),
    ("thermal", 'fault = "thermal alarm: hardware thermal slowdown"'),
    ("fan", 'fault = "fan failed"'),
    ("unhealthy-flag-only", "healthy = false"),
]


@pytest.mark.parametrize(("signal", "line"), SIGNALS, ids=[s for s, _ in SIGNALS])
def test_each_health_signal_moves_the_work_at_once(log: Log, signal: str, line: str) -> None:
    _report(log, _static(HEALTHY))
    gpu = _submit(log, "job", WorkloadSpec(gpus=1, gpu_memory_mb=40_000, cpu_millis=1000))
    assert gpu == "GPU-a"  # best fit, ties by UUID
    sick = {**HEALTHY, "dc-0": [_gpu("GPU-a", line), _gpu("GPU-b")]}
    _report(log, _static(sick))
    w = _workload(log, "job")
    assert w.phase is Phase.PLACED and w.placement is not None and w.placement.gpus == ("GPU-b",)
    assert w.moves[-1].reason == "gpu-fault" and w.moves[-1].from_pool == w.moves[-1].to_pool == "gpu-dc"
    expected = line.split('"')[1] if '"' in line else "reported unhealthy"
    assert w.reason == f"gpu-fault: GPU GPU-a unhealthy: {expected}"
    fault = _pool(log).gpu_faults
    assert [(f.uuid, f.reason, f.since_ms, f.healthy_since_ms) for f in fault] == [("GPU-a", expected, log.now, None)]


def test_a_gpu_no_longer_reported_and_a_vanished_worker(log: Log) -> None:
    _report(log, _static(HEALTHY))
    for i in range(4):
        _submit(log, f"j{i}", WorkloadSpec(gpus=1, cpu_millis=1000))
    cpu_only = log.one(log.fed.admins["gpu-dc"], pc.Submit("cpu", WorkloadSpec(cpu_millis=1000)))
    assert cpu_only.placement.worker == "dc-0"  # least free CPU first
    on = {_where(log, f"j{i}")[0]: f"j{i}" for i in range(4)}
    # dc-1 stops reporting GPU-d, dc-0 vanishes with GPU-a and GPU-b: no room left for three of them
    _report(log, _static({"dc-1": [_gpu("GPU-c")]}))
    reasons = {f.uuid: f.reason for f in _pool(log).gpu_faults}
    assert reasons == {"GPU-a": "worker dc-0 no longer reported", "GPU-b": "worker dc-0 no longer reported",
                       "GPU-d": "no longer reported"}
    assert _where(log, on["GPU-c"]) == ("GPU-c",)  # untouched
    for uuid in ("GPU-a", "GPU-b", "GPU-d"):
        w = _workload(log, on[uuid])
        assert w.phase is Phase.PENDING and w.moves[-1].reason == "gpu-fault", w
    cpu = _workload(log, "cpu")
    assert cpu.placement is not None and cpu.placement.worker == "dc-1"
    assert cpu.reason == "gpu-fault: worker dc-0 no longer reported"


def test_a_failed_gpu_waits_out_the_hysteresis_after_it_is_healthy_again(log: Log) -> None:
    _report(log, _static({"dc-0": [_gpu("GPU-a", 'fault = "fan failed"')]}))
    assert _submit(log, "early", WorkloadSpec(gpus=1)) == ""  # the only GPU is failed: pending
    log.now += 10_000
    _report(log, _static({"dc-0": [_gpu("GPU-a")]}))  # healthy again at t1
    t1 = log.now
    assert [(f.uuid, f.healthy_since_ms) for f in _pool(log).gpu_faults] == [("GPU-a", t1)]
    assert _submit(log, "too-soon", WorkloadSpec(gpus=1)) == ""
    _advance(log, t1 + HYSTERESIS - 1)
    assert _pool(log).gpu_faults and _where(log, "early") == ()
    _advance(log, t1 + HYSTERESIS)
    assert _pool(log).gpu_faults == ()
    assert _where(log, "early") == ("GPU-a",)  # the Tick that cleared it retried pending work at once


def test_failing_again_while_recovering_restarts_the_window(log: Log) -> None:
    _report(log, _static({"dc-0": [_gpu("GPU-a", 'fault = "fan failed"')]}))
    log.now += 10_000
    _report(log, _static({"dc-0": [_gpu("GPU-a")]}))
    log.now += 10_000
    _report(log, _static({"dc-0": [_gpu("GPU-a", 'fault = "thermal alarm: hardware thermal slowdown"')]}))
    fault = _pool(log).gpu_faults[0]
    assert (fault.since_ms, fault.healthy_since_ms, fault.reason) == (
        log.now, None, "thermal alarm: hardware thermal slowdown")


MIG = {"dc-0": [_gpu("MIG-1", 'parent = "GPU-card"\nprofile = "1g.10gb"', 9_856),
                _gpu("MIG-2", 'parent = "GPU-card"\nprofile = "1g.10gb"', 9_856),
                _gpu("MIG-3", 'parent = "GPU-card"\nprofile = "3g.40gb"', 40_192),
                _gpu("GPU-whole")]}


def test_mig_instances_are_units_and_a_profile_is_honoured(log: Log) -> None:
    _report(log, _static(MIG))
    assert _submit(log, "small", WorkloadSpec(gpus=1, gpu_memory_mb=9_000)) == "MIG-1"  # best fit by memory
    assert _submit(log, "sliced", WorkloadSpec(gpus=1, mig_profile="3g.40gb")) == "MIG-3"
    assert _submit(log, "whole", WorkloadSpec(gpus=1, gpu_memory_mb=50_000)) == "GPU-whole"
    assert _submit(log, "none-left", WorkloadSpec(gpus=1, mig_profile="3g.40gb")) == ""
    w = _workload(log, "none-left")
    assert b"free MIG 3g.40gb instances" in w.explanation


def test_mig_mode_switched_off_under_booked_slices_moves_them_first(log: Log) -> None:
    _report(log, _static(MIG))
    _submit(log, "slice", WorkloadSpec(gpus=1, mig_profile="1g.10gb"))
    # the card is reported whole again: the slice's instance is gone, so the work leaves it at once and
    # the card and its former slice are never booked together
    _report(log, _static({"dc-0": [_gpu("GPU-card"), _gpu("GPU-whole")]}))
    w = _workload(log, "slice")
    assert w.phase is Phase.PENDING and w.reason.startswith("gpu-fault: GPU MIG-1 no longer reported")
    assert _submit(log, "card", WorkloadSpec(gpus=2)) == "GPU-card,GPU-whole"


def test_bad_mig_inventories_and_specs_are_refused(log: Log) -> None:
    both = Inventory((Worker("w", 1, 1, (Gpu("GPU-card", "m", 10), Gpu("MIG-1", "m", 5, parent="GPU-card",
                                                                      profile="1g.5gb"))),))
    r = log.one(log.fed.nodes["gpu-dc"], pc.ReportInventory("gpu-dc", both))
    assert r.code == Code.INVALID_ARGUMENT and "listed whole and as the parent" in r.message
    r = log.one(log.fed.admins["gpu-dc"], pc.Submit("x", WorkloadSpec(cpu_millis=1, mig_profile="1g.5gb")))
    assert r.code == Code.INVALID_ARGUMENT and "asks for no GPU" in r.message


def test_stores_agree_through_faults(tmp_path: Path, fed: Fed) -> None:
    stores = [StateStore(tmp_path / n, fed.genesis, map_size=64 << 20) for n in ("a", "b")]
    log = Log(fed, stores)
    log.now = T0
    _report(log, _static(HEALTHY))
    for i in range(4):
        _submit(log, f"j{i}", WorkloadSpec(gpus=1, priority=i % 2))
    _report(log, _static({"dc-1": [_gpu("GPU-c", 'fault = "fan failed"'), _gpu("GPU-d")]}))
    _advance(log, log.now + HYSTERESIS)
    assert stores[0].digest() == stores[1].digest()
