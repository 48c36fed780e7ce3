"""A scripted stand-in for the `pynvml` module (nvidia-ml-py), for unit tests only.

It mimics the parts the NVML backend uses: the NVMLError family (subclasses per error code, as the
real binding generates them), device handles by index, and the per-device queries.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any


class NVMLError(Exception):
    value = 999
    text = "Unknown Error"

    def __str__(self) -> str:
        return self.text


def _error(name: str, value: int, text: str) -> type[NVMLError]:
    return type(f"NVMLError_{name}", (NVMLError,), {"value": value, "text": text})


NotSupported = _error("NotSupported", 3, "Not Supported")
NoPermission = _error("NoPermission", 4, "Insufficient Permissions")
NotFound = _error("NotFound", 6, "Not Found")
DriverNotLoaded = _error("DriverNotLoaded", 9, "Driver Not Loaded")
Timeout = _error("Timeout", 10, "Timeout")
LibraryNotFound = _error("LibraryNotFound", 12, "NVML Shared Library Not Found")
GpuIsLost = _error("GpuIsLost", 15, "GPU is lost")
Unknown = _error("Unknown", 999, "Unknown Error")


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA A100-SXM4-80GB"
    memory_bytes: int = 80 * 1024**3
    unreadable: bool = False                   # nvmlDeviceGetHandleByIndex fails
    failing: dict[str, type[NVMLError]] = field(default_factory=dict)  # query name -> error it raises
    retired_pending: int = 0                   # NVML_FEATURE_ENABLED = 1
    remapped: tuple[int, int, int, int] = (0, 0, 0, 0)
    mig: list[FakeGpu] | None = None           # MIG instances when MIG mode is on
    clock_events: int | None = 0               # clock event (throttle) reasons bitmask; None: not supported
    temperature: int | None = 45               # degrees C; None: not supported
    shutdown_threshold: int = 90


@dataclass
class FakeFan:
    speed: int = 50
    state: int = 0                             # NVML_FAN_NORMAL = 0, NVML_FAN_FAILED = 1


@dataclass
class FakeUnit:
    """An S-class unit: its fans and the GPUs in it (the unit API is the only place NVML reports fan state)."""

    devices: list[FakeGpu]
    fans: list[FakeFan] = field(default_factory=lambda: [FakeFan(), FakeFan()])


@dataclass
class FakeEvent:
    device: Any
    eventType: int  # NVML's field names
    eventData: int


class FakeNvml:
    """State behind the fake module; tests change it between reads."""

    def __init__(self, gpus: list[FakeGpu], *, init_error: type[NVMLError] | None = None,
                 events: bool = True) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.events_supported = events
        self.pending_events: list[FakeEvent] = []
        self.count_error: type[NVMLError] | None = None
        self.init_calls = 0
        self.shutdown_calls = 0
        self.freed_event_sets = 0
        self.units: list[FakeUnit] = []           # none: the unit API reports no units (most systems)

    def module(self) -> types.ModuleType:
        m = types.ModuleType("pynvml")
        m.NVMLError = NVMLError  # type: ignore[attr-defined]
        for cls in (NotSupported, NoPermission, NotFound, DriverNotLoaded, Timeout, LibraryNotFound,
                    GpuIsLost, Unknown):
            setattr(m, cls.__name__, cls)
        for name in dir(self):
            if name.startswith("nvml"):
                setattr(m, name, getattr(self, name))
        return m

    def _query(self, handle: FakeGpu, what: str) -> None:
        err = handle.failing.get(what)
        if err is not None:
            raise err()

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.init_error is not None:
            raise self.init_error()

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlDeviceGetCount(self) -> int:
        if self.count_error is not None:
            raise self.count_error()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        gpu = self.gpus[index]
        if gpu.unreadable:
            raise GpuIsLost()
        return gpu

    def nvmlDeviceGetUUID(self, handle: FakeGpu) -> bytes:
        self._query(handle, "uuid")
        return handle.uuid.encode()  # older bindings return bytes; the backend accepts both

    def nvmlDeviceGetName(self, handle: FakeGpu) -> str:
        self._query(handle, "name")
        return handle.name

    def nvmlDeviceGetMemoryInfo(self, handle: FakeGpu) -> Any:
        self._query(handle, "memory")
        return types.SimpleNamespace(total=handle.memory_bytes, used=0, free=handle.memory_bytes)

    def nvmlDeviceGetRetiredPagesPendingStatus(self, handle: FakeGpu) -> int:
        self._query(handle, "retired")
        return handle.retired_pending

    def nvmlDeviceGetRemappedRows(self, handle: FakeGpu) -> tuple[int, int, int, int]:
        self._query(handle, "remapped")
        return handle.remapped

    def nvmlDeviceGetMigMode(self, handle: FakeGpu) -> tuple[int, int]:
        self._query(handle, "mig")
        if handle.mig is None:
            raise NotSupported()
        return (1, 1)

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: FakeGpu) -> int:
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: FakeGpu, index: int) -> FakeGpu:
        if handle.mig is None or index >= len(handle.mig):
            raise NotFound()
        return handle.mig[index]

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: FakeGpu) -> int:
        self._query(handle, "clock_events")
        if handle.clock_events is None:
            raise NotSupported()
        return handle.clock_events

    def nvmlDeviceGetTemperature(self, handle: FakeGpu, sensor: int) -> int:
        self._query(handle, "temperature")
        if handle.temperature is None:
            raise NotSupported()
        return handle.temperature

    def nvmlDeviceGetTemperatureThreshold(self, handle: FakeGpu, kind: int) -> int:
        return handle.shutdown_threshold

    def nvmlUnitGetCount(self) -> int:
        return len(self.units)

    def nvmlUnitGetHandleByIndex(self, index: int) -> FakeUnit:
        return self.units[index]

    def nvmlUnitGetFanSpeedInfo(self, unit: FakeUnit) -> Any:
        fans = [types.SimpleNamespace(speed=f.speed, state=f.state) for f in unit.fans]
        return types.SimpleNamespace(count=len(fans), fans=fans + [types.SimpleNamespace(speed=0, state=0)] * 4)

    def nvmlUnitGetDevices(self, unit: FakeUnit) -> list[FakeGpu]:
        return list(unit.devices)

    def nvmlEventSetCreate(self) -> object:
        if not self.events_supported:
            raise NotSupported()
        return object()

    def nvmlDeviceRegisterEvents(self, handle: FakeGpu, types_mask: int, event_set: object) -> None:
        pass

    def nvmlEventSetWait(self, event_set: object, timeout_ms: int) -> FakeEvent:
        if not self.pending_events:
            raise Timeout()
        return self.pending_events.pop(0)

    def nvmlEventSetFree(self, event_set: object) -> None:
        self.freed_event_sets += 1
