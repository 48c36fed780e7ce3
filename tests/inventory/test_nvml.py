"""NVML backend against a fake `pynvml` module: unit tests only, no GPU or driver needed."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import pytest

from fedraft.domain.placement.model import Gpu
from fedraft.inventory.base import InventoryUnavailable
from fedraft.inventory.nvml import NvmlInventory, host_cpu_millis, host_ram_mb
from tests.inventory.fake_pynvml import (
    DriverNotLoaded,
    FakeEvent,
    FakeGpu,
    FakeNvml,
    FakeUnit,
    GpuIsLost,
    LibraryNotFound,
    NoPermission,
    NotSupported,
    NVMLError,
    Unknown,
)

Install = Callable[[FakeNvml], FakeNvml]
GIB_MB = 1024
XID = 8  # nvmlEventTypeXidCriticalError


def test_two_gpus_one_worker_named_after_the_host(install_nvml: Install, two_gpus: FakeNvml) -> None:
    install_nvml(two_gpus)
    source = NvmlInventory.open("node-7")
    inv = source.read()
    assert len(inv.workers) == 1
    worker = inv.workers[0]
    assert worker.name == "node-7"
    assert worker.cpu_millis == (os.cpu_count() or 0) * 1000 == host_cpu_millis()
    assert worker.ram_mb == host_ram_mb() > 0
    assert worker.gpus == (  # sorted by UUID, memory in MiB, bytes decoded
        Gpu("GPU-aaaa", "NVIDIA H100 80GB HBM3", 80 * GIB_MB, healthy=True),
        Gpu("GPU-bbbb", "NVIDIA A100-SXM4-80GB", 80 * GIB_MB, healthy=True),
    )
    assert inv.gpu_count == 2
    assert "node-7" in source.describe()
    assert source.driver_version() == "550.54.15"


def test_an_unreadable_gpu_is_reported_unhealthy_and_logged(
        install_nvml: Install, caplog: pytest.LogCaptureFixture) -> None:
    fake = install_nvml(FakeNvml([FakeGpu("GPU-ok"), FakeGpu("GPU-lost", unreadable=True)]))
    source = NvmlInventory.open("h")
    with caplog.at_level(logging.INFO, logger="fedraft.inventory"):
        inv = source.read()
        gpus = inv.workers[0].gpus
        assert gpus == (Gpu("GPU-ok", "NVIDIA A100-SXM4-80GB", 81920, True),
                        Gpu("unreadable-1", "unknown", 0, False, fault="device 1 unreadable: GPU is lost"))
        assert inv.gpu_count == 1
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings == ["NVML on h: GPU unreadable-1 is unhealthy: device 1 unreadable: GPU is lost"]
        # Logged when the state changes, not on every read.
        caplog.clear()
        source.read()
        assert caplog.records == []
        fake.gpus[1].unreadable = False
        fake.gpus[1].uuid = "GPU-back"
        source.read()
    messages = [r.getMessage() for r in caplog.records]
    assert "NVML on h: GPU unreadable-1 is no longer listed" in messages


@pytest.mark.parametrize(("query", "reason"), [
    ("uuid", "UUID unreadable: GPU is lost"),
    ("name", "name unreadable: GPU is lost"),
    ("memory", "memory unreadable: GPU is lost"),
])
def test_a_failing_query_makes_the_gpu_unhealthy(
        install_nvml: Install, caplog: pytest.LogCaptureFixture, query: str, reason: str) -> None:
    install_nvml(FakeNvml([FakeGpu("GPU-x", failing={query: GpuIsLost})]))
    with caplog.at_level(logging.WARNING, logger="fedraft.inventory"):
        gpu = NvmlInventory.open("h").read().workers[0].gpus[0]
    assert not gpu.healthy
    assert reason in caplog.text


def test_health_checks_not_supported_mean_healthy(install_nvml: Install) -> None:
    install_nvml(FakeNvml([FakeGpu("GPU-x", failing={"retired": NotSupported, "remapped": NotSupported})]))
    assert NvmlInventory.open("h").read().workers[0].gpus[0].healthy


def test_health_check_failing_otherwise_means_unhealthy(
        install_nvml: Install, caplog: pytest.LogCaptureFixture) -> None:
    install_nvml(FakeNvml([FakeGpu("GPU-x", failing={"remapped": Unknown})]))
    with caplog.at_level(logging.WARNING, logger="fedraft.inventory"):
        assert not NvmlInventory.open("h").read().workers[0].gpus[0].healthy
    assert "row-remapping status unreadable: Unknown Error" in caplog.text


@pytest.mark.parametrize(("gpu", "reason"), [
    (FakeGpu("GPU-x", retired_pending=1), "retired pages pending"),
    (FakeGpu("GPU-x", remapped=(0, 2, 1, 0)), "row remapping pending"),
    (FakeGpu("GPU-x", remapped=(0, 2, 0, 1)), "row remapping failed"),
])
def test_pending_page_retirement_or_row_remapping_is_unhealthy(
        install_nvml: Install, caplog: pytest.LogCaptureFixture, gpu: FakeGpu, reason: str) -> None:
    install_nvml(FakeNvml([gpu]))
    with caplog.at_level(logging.WARNING, logger="fedraft.inventory"):
        assert not NvmlInventory.open("h").read().workers[0].gpus[0].healthy
    assert reason in caplog.text


def test_critical_xid_marks_the_gpu_unhealthy_until_restart(install_nvml: Install, two_gpus: FakeNvml) -> None:
    fake = install_nvml(two_gpus)
    source = NvmlInventory.open("h")
    a, b = fake.gpus[1], fake.gpus[0]
    fake.pending_events = [FakeEvent(a, XID, 13), FakeEvent(a, XID, 43)]  # application faults: ignored
    assert source.read().gpu_count == 2
    fake.pending_events = [FakeEvent(b, XID, 79)]  # fallen off the bus
    inv = source.read()
    assert [(g.uuid, g.healthy) for g in inv.workers[0].gpus] == [("GPU-aaaa", True), ("GPU-bbbb", False)]
    assert source.read().gpu_count == 1  # sticky


def test_no_xid_events_is_fine(install_nvml: Install) -> None:
    install_nvml(FakeNvml([FakeGpu("GPU-x")], events=False))
    assert NvmlInventory.open("h").read().gpu_count == 1


def test_mig_instances_are_reported_instead_of_the_card(install_nvml: Install) -> None:
    instances = [FakeGpu("MIG-2", "NVIDIA A100-SXM4-80GB MIG 2g.20gb", memory_bytes=20 * 1024**3),
                 FakeGpu("MIG-1", "NVIDIA A100-SXM4-80GB MIG 1g.10gb", memory_bytes=10 * 1024**3)]
    card = FakeGpu("GPU-card", mig=instances)
    install_nvml(FakeNvml([card, FakeGpu("GPU-plain")]))
    gpus = NvmlInventory.open("h").read().workers[0].gpus
    assert gpus == (
        Gpu("GPU-plain", "NVIDIA A100-SXM4-80GB", 81920),
        Gpu("MIG-1", "NVIDIA A100-SXM4-80GB MIG", 10240, parent="GPU-card", profile="1g.10gb"),
        Gpu("MIG-2", "NVIDIA A100-SXM4-80GB MIG", 20480, parent="GPU-card", profile="2g.20gb"),
    )


def test_a_mig_profile_nvml_does_not_name_is_made_from_the_memory(install_nvml: Install) -> None:
    card = FakeGpu("GPU-card", mig=[FakeGpu("MIG-1", "odd name", memory_bytes=5 * 1024**3)])
    install_nvml(FakeNvml([card]))
    assert NvmlInventory.open("h").read().workers[0].gpus[0].profile == "mig.5120mb"


def test_mig_instances_inherit_the_card_problems(install_nvml: Install) -> None:
    card = FakeGpu("GPU-card", retired_pending=1, mig=[FakeGpu("MIG-1")])
    install_nvml(FakeNvml([card]))
    assert NvmlInventory.open("h").read().workers[0].gpus == (
        Gpu("MIG-1", "NVIDIA A100-SXM4-80GB MIG", 81920, False, parent="GPU-card", profile="mig.81920mb",
            fault="retired pages pending (needs a GPU reset)"),)


@pytest.mark.parametrize(("gpu", "fault"), [
    (FakeGpu("GPU-x", retired_pending=1), "retired pages pending (needs a GPU reset)"),
    (FakeGpu("GPU-x", remapped=(0, 1, 1, 0)), "row remapping pending (needs a GPU reset)"),
    (FakeGpu("GPU-x", clock_events=0x40), "thermal alarm: hardware thermal slowdown"),
    (FakeGpu("GPU-x", temperature=95, shutdown_threshold=92), "thermal alarm: at the shutdown temperature"),
    (FakeGpu("GPU-x", failing={"memory": Unknown}), "memory unreadable: Unknown Error"),
])
def test_each_health_signal_names_the_fault(install_nvml: Install, gpu: FakeGpu, fault: str) -> None:
    install_nvml(FakeNvml([gpu, FakeGpu("GPU-y")]))
    x, y = NvmlInventory.open("h").read().workers[0].gpus
    assert (x.healthy, x.fault) == (False, fault)
    assert (y.healthy, y.fault) == (True, "")


def test_no_thermal_reading_is_no_evidence(install_nvml: Install) -> None:
    install_nvml(FakeNvml([FakeGpu("GPU-x", clock_events=None, temperature=None)]))
    assert NvmlInventory.open("h").read().workers[0].gpus[0].healthy


def test_a_failed_fan_marks_the_gpus_of_its_unit(install_nvml: Install) -> None:
    a, b, c = FakeGpu("GPU-a"), FakeGpu("GPU-b"), FakeGpu("GPU-c")
    fake = install_nvml(FakeNvml([a, b, c]))
    fake.units = [FakeUnit([a, b]), FakeUnit([c])]
    source = NvmlInventory.open("h")
    assert all(g.healthy for g in source.read().workers[0].gpus)
    fake.units[0].fans[1].state = 1  # NVML_FAN_FAILED
    gpus = source.read().workers[0].gpus
    assert [(g.uuid, g.healthy, g.fault) for g in gpus] == [
        ("GPU-a", False, "fan failed"), ("GPU-b", False, "fan failed"), ("GPU-c", True, "")]


def test_a_critical_xid_is_the_fault(install_nvml: Install) -> None:
    fake = install_nvml(FakeNvml([FakeGpu("GPU-x")]))
    source = NvmlInventory.open("h")
    fake.pending_events.append(FakeEvent(fake.gpus[0], XID, 79))
    assert source.read().workers[0].gpus[0].fault == "critical XID 79 (needs a GPU reset)"


def test_device_count_failing_is_unavailable_not_a_crash(install_nvml: Install, two_gpus: FakeNvml) -> None:
    fake = install_nvml(two_gpus)
    source = NvmlInventory.open("h")
    fake.count_error = GpuIsLost
    with pytest.raises(InventoryUnavailable, match="cannot count GPUs: GPU is lost"):
        source.read()


def test_strings_are_made_printable(install_nvml: Install) -> None:
    install_nvml(FakeNvml([FakeGpu("GPU-x", name="Weird\x1b[2J GPU\u00e9")]))
    assert NvmlInventory.open("h").read().workers[0].gpus[0].model == "Weird?[2J GPU?"


def test_close_shuts_nvml_down_once(install_nvml: Install, two_gpus: FakeNvml) -> None:
    fake = install_nvml(two_gpus)
    source = NvmlInventory.open("h")
    source.close()
    source.close()
    assert (fake.init_calls, fake.shutdown_calls, fake.freed_event_sets) == (1, 1, 1)
    with pytest.raises(InventoryUnavailable, match="closed"):
        source.read()


# --- not available --------------------------------------------------------------------------------


@pytest.mark.usefixtures("no_pynvml")
def test_module_missing() -> None:
    with pytest.raises(InventoryUnavailable) as info:
        NvmlInventory.open("h")
    assert info.value.message == "nvidia-ml-py is not installed (no pynvml module)"
    assert info.value.absent
    assert "fedraft[nvml]" in info.value.hint


@pytest.mark.parametrize(("error", "message", "absent"), [
    (LibraryNotFound, "no NVIDIA driver (libnvidia-ml.so not found)", True),
    (DriverNotLoaded, "NVIDIA driver not loaded", True),
    (NoPermission, "NVML refused access: Insufficient Permissions", False),
    (Unknown, "NVML failed to initialise: Unknown Error", False),
])
def test_init_failing(install_nvml: Install, error: type[NVMLError], message: str, absent: bool) -> None:
    install_nvml(FakeNvml([], init_error=error))
    with pytest.raises(InventoryUnavailable) as info:
        NvmlInventory.open("h")
    assert info.value.message == message
    assert info.value.absent is absent
    assert "\n" not in str(info.value)


def test_a_binding_surprise_is_an_unhealthy_gpu_not_a_crash(install_nvml: Install, two_gpus: FakeNvml,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    install_nvml(two_gpus)
    source = NvmlInventory.open("h")
    monkeypatch.setattr(source, "_ecc_health", lambda handle, problems: 1 / 0)
    gpus = source.read().workers[0].gpus
    assert [(g.uuid, g.healthy) for g in gpus] == [("unreadable-0", False), ("unreadable-1", False)]


def test_memory_info_without_total_is_unhealthy(install_nvml: Install, two_gpus: FakeNvml) -> None:
    fake = install_nvml(two_gpus)
    source = NvmlInventory.open("h")
    source._nv.nvmlDeviceGetMemoryInfo = lambda handle: object()
    assert source.read().gpu_count == 0
    assert fake.init_calls == 1
