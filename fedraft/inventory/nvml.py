"""The host's GPUs from NVML (`nvidia-ml-py`, import name `pynvml`): one worker named after the host.

`pynvml` is optional (extra `fedraft[nvml]`) and imported only inside `NvmlInventory.open()`. A missing
module or a failing `nvmlInit()` is an `InventoryUnavailable` with a one-line reason; the node never
crashes over a GPU query. Per GPU, health is best-effort, from what NVML exposes:

- the device answers (handle, UUID, name, memory); any failure -> unhealthy;
- no retired pages pending (pre-Ampere ECC page retirement) and no pending or failed row remapping
  (Ampere and newer); "not supported" on a device means the check does not apply;
- no critical XID event seen since start, except the XIDs that report an application's own fault
  (13, 31, 43, 45, 68, 109), which say nothing about the GPU. A critical XID sticks until restart;
- no thermal alarm: hardware thermal slowdown asserted, or the temperature at or above the shutdown
  threshold (devices that report neither are not judged);
- no failed fan, where NVML reports fan state (the unit API of S-class systems).

Why a GPU is unhealthy goes into the inventory (`Gpu.fault`, stable wording without live readings,
so the inventory's fingerprint does not churn). A device that is lost or unreadable is reported as
`unreadable-<index>`; its real UUID then vanishes from the inventory, which the federation treats as
a failed unit as well (domain/placement/gpu_health.py).

MIG: when MIG mode is on, each MIG instance is reported as a GPU (its MIG UUID, its own memory, the
parent's UUID and its profile, e.g. "1g.10gb") instead of the parent, so the scheduler books
instances, never the whole card and a slice of it.

Health changes are logged when they happen (not on every read): WARNING with the reason when a GPU turns
unhealthy, INFO when it recovers.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass, replace
from typing import Any

from fedraft.domain.placement.model import Gpu, Inventory, Worker
from fedraft.inventory.base import MAX_NAME_LEN, InventoryUnavailable

log = logging.getLogger(__name__)

MIB = 1024 * 1024
_FEATURE_ENABLED = 1                 # NVML_FEATURE_ENABLED / NVML_DEVICE_MIG_ENABLE
_XID_CRITICAL_ERROR = 0x0000000000000008  # nvmlEventTypeXidCriticalError
_APPLICATION_XIDS = frozenset({13, 31, 43, 45, 68, 109})  # the application's fault, not the GPU's
_HW_THERMAL_SLOWDOWN = 0x0000000000000040  # nvmlClocksThrottleReasonHwThermalSlowdown
_TEMPERATURE_GPU = 0                       # NVML_TEMPERATURE_GPU
_THRESHOLD_SHUTDOWN = 0                    # NVML_TEMPERATURE_THRESHOLD_SHUTDOWN
_FAN_FAILED = 1                            # NVML_FAN_FAILED
_PROFILE_IN_NAME = re.compile(r"(\d+c\.)?\d+g\.\d+gb(\+[a-z]+)?$")
_HINT = "install the NVIDIA driver and `pip install fedraft[nvml]`, or use a static inventory file"


@dataclass(frozen=True)
class _Probe:
    gpus: tuple[Gpu, ...]
    problems: dict[str, str]  # uuid -> why unhealthy


class NvmlInventory:
    """NVML, initialised once in `open()`; `read()` queries the devices again each call."""

    def __init__(self, nvml: Any, host: str) -> None:
        """Use `open()`; this takes an already initialised pynvml module."""
        self._nv = nvml
        self.host = host
        self._lock = threading.Lock()
        self._events: Any = None
        self._xid: dict[str, int] = {}        # uuid -> first critical XID seen
        self._reported: dict[str, str] = {}   # uuid -> problem last logged ("" = healthy)
        self._failed_fans: frozenset[str] = frozenset()
        self._closed = False

    @classmethod
    def open(cls, host: str) -> NvmlInventory:
        try:
            import pynvml
        except ImportError:
            raise InventoryUnavailable("nvidia-ml-py is not installed (no pynvml module)",
                                       hint=_HINT, absent=True) from None
        except Exception as exc:  # a broken install must not take the node down
            raise InventoryUnavailable(f"pynvml failed to import: {_one_line(exc)}", hint=_HINT) from None
        try:
            pynvml.nvmlInit()
        except Exception as exc:
            raise _init_error(pynvml, exc) from None
        inv = cls(pynvml, host)
        try:
            inv._watch_xids()
        except Exception as exc:  # XID events are a bonus; their absence is not a reason to fail
            log.info("NVML on %s: XID events unavailable (%s)", host, _one_line(exc))
        return inv

    def describe(self) -> str:
        return f"NVML GPUs of host {self.host}"

    def driver_version(self) -> str:
        try:
            return _text(self._nv.nvmlSystemGetDriverVersion())
        except Exception:
            return "unknown"

    def read(self) -> Inventory:
        with self._lock:
            if self._closed:
                raise InventoryUnavailable(f"NVML inventory of {self.host} is closed")
            self._drain_xids()
            try:
                count = int(self._nv.nvmlDeviceGetCount())
            except Exception as exc:
                raise InventoryUnavailable(f"NVML on {self.host} cannot count GPUs: {_one_line(exc)}",
                                           hint=_HINT) from None
            gpus: dict[str, Gpu] = {}
            problems: dict[str, str] = {}
            self._failed_fans = self._fan_failures()
            for index in range(count):
                try:
                    probe = self._probe(index)
                except Exception as exc:  # a binding surprise must not take the node down
                    placeholder = f"unreadable-{index}"
                    why = f"device {index} probe failed: {type(exc).__name__}: {_one_line(exc)}"
                    probe = _Probe((Gpu(placeholder, "unknown", 0, healthy=False),), {placeholder: why})
                for gpu in probe.gpus:
                    if gpu.uuid in gpus:  # never expected from NVML; keep the keys unique regardless
                        log.warning("NVML on %s: GPU %s listed twice; ignoring the repeat", self.host, gpu.uuid)
                        continue
                    why = probe.problems.get(gpu.uuid, "")
                    gpus[gpu.uuid] = replace(gpu, healthy=False, fault=_clean(why)) if why else gpu
                    problems[gpu.uuid] = why
            self._log_changes(problems)
            worker = Worker(name=self.host, cpu_millis=host_cpu_millis(), ram_mb=host_ram_mb(),
                            gpus=tuple(gpus[u] for u in sorted(gpus)))
            return Inventory(workers=(worker,))

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._events is not None:
                _quietly(self._nv.nvmlEventSetFree, self._events)
                self._events = None
            _quietly(self._nv.nvmlShutdown)

    # --- one device ------------------------------------------------------------------------------

    def _probe(self, index: int) -> _Probe:
        nv = self._nv
        placeholder = f"unreadable-{index}"
        try:
            handle = nv.nvmlDeviceGetHandleByIndex(index)
        except Exception as exc:
            why = f"device {index} unreadable: {_one_line(exc)}"
            return _Probe((Gpu(placeholder, "unknown", 0, healthy=False),), {placeholder: why})
        problems: list[str] = []
        uuid = self._query(handle, "nvmlDeviceGetUUID", "UUID", problems)
        uuid = _text(uuid) if uuid is not None else placeholder
        name = self._query(handle, "nvmlDeviceGetName", "name", problems)
        model = _text(name) if name is not None else "unknown"
        memory = self._query(handle, "nvmlDeviceGetMemoryInfo", "memory", problems)
        try:
            memory_mb = int(memory.total) // MIB if memory is not None else 0
        except (AttributeError, TypeError, ValueError) as exc:
            problems.append(f"memory unreadable: {_one_line(exc)}")
            memory_mb = 0
        self._ecc_health(handle, problems)
        self._thermal_health(handle, problems)
        if uuid in self._failed_fans:
            problems.append("fan failed")
        if uuid in self._xid:
            problems.append(f"critical XID {self._xid[uuid]} (needs a GPU reset)")
        instances = self._mig_instances(handle, model, problems)
        if instances is not None:
            # The parent's problems apply to every instance on it.
            why = "; ".join(problems)
            return _Probe(tuple(replace(g, parent=uuid, healthy=not problems) for g in instances),
                          {g.uuid: why for g in instances} if problems else {})
        gpu = Gpu(uuid, model, memory_mb, healthy=not problems)
        return _Probe((gpu,), {uuid: "; ".join(problems)} if problems else {})

    def _query(self, handle: Any, fn: str, what: str, problems: list[str]) -> Any:
        try:
            return getattr(self._nv, fn)(handle)
        except Exception as exc:
            problems.append(f"{what} unreadable: {_one_line(exc)}")
            return None

    def _ecc_health(self, handle: Any, problems: list[str]) -> None:
        nv = self._nv
        try:
            if int(nv.nvmlDeviceGetRetiredPagesPendingStatus(handle)) == _FEATURE_ENABLED:
                problems.append("retired pages pending (needs a GPU reset)")
        except Exception as exc:
            if not self._not_applicable(exc):
                problems.append(f"retired-pages status unreadable: {_one_line(exc)}")
        try:
            _corrected, _uncorrected, pending, failed = nv.nvmlDeviceGetRemappedRows(handle)
            if failed:
                problems.append("row remapping failed (replace the GPU)")
            elif pending:
                problems.append("row remapping pending (needs a GPU reset)")
        except Exception as exc:
            if not self._not_applicable(exc):
                problems.append(f"row-remapping status unreadable: {_one_line(exc)}")

    def _mig_instances(self, handle: Any, model: str, problems: list[str]) -> list[Gpu] | None:
        """The MIG instances on a MIG-enabled GPU, or None when MIG is off or not supported."""
        nv = self._nv
        try:
            current, _pending = nv.nvmlDeviceGetMigMode(handle)
            if int(current) != _FEATURE_ENABLED:
                return None
        except Exception:
            return None  # no MIG on this device (or this driver): a whole GPU
        try:
            slots = int(nv.nvmlDeviceGetMaxMigDeviceCount(handle))
        except Exception as exc:
            problems.append(f"MIG enabled but its instances are unreadable: {_one_line(exc)}")
            return None  # report the card itself, unhealthy
        out: list[Gpu] = []
        for slot in range(slots):
            try:
                mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except Exception as exc:
                if not self._is(exc, "NotFound"):  # an empty slot
                    log.debug("NVML on %s: MIG slot %d: %s", self.host, slot, _one_line(exc))
                continue
            try:
                mig_uuid = _text(nv.nvmlDeviceGetUUID(mig))
                mig_memory = int(nv.nvmlDeviceGetMemoryInfo(mig).total) // MIB
            except Exception as exc:
                problems.append(f"MIG slot {slot} unreadable: {_one_line(exc)}")
                continue
            out.append(Gpu(mig_uuid, _clean(f"{model} MIG"), mig_memory, profile=self._mig_profile(mig, mig_memory)))
        return out

    def _mig_profile(self, mig: Any, memory_mb: int) -> str:
        """The instance's profile as NVML names it at the end of the MIG device's name ("... MIG 1g.10gb");
        from its memory when the name does not say."""
        try:
            found = _PROFILE_IN_NAME.search(_text(self._nv.nvmlDeviceGetName(mig)).split(" ")[-1])
        except Exception:
            found = None
        return found.group(0) if found else f"mig.{memory_mb}mb"

    def _thermal_health(self, handle: Any, problems: list[str]) -> None:
        nv = self._nv
        reasons = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
            nv, "nvmlDeviceGetCurrentClocksThrottleReasons", None)
        try:
            if reasons is not None and int(reasons(handle)) & _HW_THERMAL_SLOWDOWN:
                problems.append("thermal alarm: hardware thermal slowdown")
                return
        except Exception as exc:
            if not self._not_applicable(exc):
                problems.append(f"clock event reasons unreadable: {_one_line(exc)}")
        try:
            temperature = int(nv.nvmlDeviceGetTemperature(handle, _TEMPERATURE_GPU))
            shutdown = int(nv.nvmlDeviceGetTemperatureThreshold(handle, _THRESHOLD_SHUTDOWN))
        except Exception:
            return  # no reading or no threshold: nothing to judge by
        if shutdown > 0 and temperature >= shutdown:
            problems.append("thermal alarm: at the shutdown temperature")

    def _fan_failures(self) -> frozenset[str]:
        """UUIDs of the GPUs in a unit whose fan NVML reports failed (S-class units only; else none)."""
        nv = self._nv
        failed: set[str] = set()
        try:
            units = int(nv.nvmlUnitGetCount())
        except Exception:
            return frozenset()
        for index in range(units):
            try:
                unit = nv.nvmlUnitGetHandleByIndex(index)
                info = nv.nvmlUnitGetFanSpeedInfo(unit)
                if not any(int(f.state) == _FAN_FAILED for f in info.fans[:int(info.count)]):
                    continue
                for device in nv.nvmlUnitGetDevices(unit):
                    failed.add(_text(nv.nvmlDeviceGetUUID(device)))
            except Exception as exc:
                log.debug("NVML on %s: unit %d fan state: %s", self.host, index, _one_line(exc))
        return frozenset(failed)

    # --- XID events ------------------------------------------------------------------------------

    def _watch_xids(self) -> None:
        """Register for critical XID events on every device; best-effort, silently absent if unsupported."""
        nv = self._nv
        try:
            events = nv.nvmlEventSetCreate()
        except Exception as exc:
            log.info("NVML on %s: XID events unavailable (%s); health from device queries only",
                     self.host, _one_line(exc))
            return
        try:
            count = int(nv.nvmlDeviceGetCount())
        except Exception:
            count = 0
        registered = 0
        for index in range(count):
            try:
                nv.nvmlDeviceRegisterEvents(nv.nvmlDeviceGetHandleByIndex(index), _XID_CRITICAL_ERROR, events)
                registered += 1
            except Exception as exc:
                log.debug("NVML on %s: GPU %d: no XID events: %s", self.host, index, _one_line(exc))
        if registered:
            self._events = events
        else:
            _quietly(nv.nvmlEventSetFree, events)

    def _drain_xids(self) -> None:
        if self._events is None:
            return
        nv = self._nv
        for _ in range(1024):  # bounded: a storm of events must not stall read()
            try:
                data = nv.nvmlEventSetWait(self._events, 0)
            except Exception as exc:
                if not self._is(exc, "Timeout"):
                    log.debug("NVML on %s: reading XID events: %s", self.host, _one_line(exc))
                return
            try:
                xid = int(data.eventData)
                if data.eventType != _XID_CRITICAL_ERROR or xid in _APPLICATION_XIDS:
                    continue
                uuid = _text(nv.nvmlDeviceGetUUID(data.device))
            except Exception as exc:
                log.debug("NVML on %s: unreadable XID event: %s", self.host, _one_line(exc))
                continue
            self._xid.setdefault(uuid, xid)

    # --- helpers ---------------------------------------------------------------------------------

    def _is(self, exc: BaseException, name: str) -> bool:
        cls = getattr(self._nv, f"NVMLError_{name}", None)
        return isinstance(cls, type) and isinstance(exc, cls)

    def _not_applicable(self, exc: BaseException) -> bool:
        """The check does not exist on this device, driver or binding: no evidence either way."""
        return (self._is(exc, "NotSupported") or self._is(exc, "FunctionNotFound")
                or isinstance(exc, AttributeError))

    def _log_changes(self, problems: dict[str, str]) -> None:
        for uuid in sorted(problems):
            why = problems[uuid]
            before = self._reported.get(uuid)
            if why == (before or ""):
                if before is None:
                    self._reported[uuid] = why
                continue
            if why:
                log.warning("NVML on %s: GPU %s is unhealthy: %s", self.host, uuid, why)
            else:
                log.info("NVML on %s: GPU %s is healthy again", self.host, uuid)
            self._reported[uuid] = why
        for uuid in sorted(set(self._reported) - set(problems)):
            log.warning("NVML on %s: GPU %s is no longer listed", self.host, uuid)
            del self._reported[uuid]


def _init_error(nv: Any, exc: Exception) -> InventoryUnavailable:
    def is_(name: str) -> bool:
        cls = getattr(nv, f"NVMLError_{name}", None)
        return isinstance(cls, type) and isinstance(exc, cls)

    if is_("LibraryNotFound"):
        return InventoryUnavailable("no NVIDIA driver (libnvidia-ml.so not found)", hint=_HINT, absent=True)
    if is_("DriverNotLoaded"):
        return InventoryUnavailable("NVIDIA driver not loaded", hint=_HINT, absent=True)
    if is_("NoPermission"):
        return InventoryUnavailable(f"NVML refused access: {_one_line(exc)}",
                                    hint="check the permissions on /dev/nvidia*")
    return InventoryUnavailable(f"NVML failed to initialise: {_one_line(exc)}", hint=_HINT)


def host_cpu_millis() -> int:
    return (os.cpu_count() or 0) * 1000


def host_ram_mb() -> int:
    try:
        pages = os.sysconf("SC_PHYS_PAGES")
        page_size = os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 0
    if pages <= 0 or page_size <= 0:
        return 0
    return pages * page_size // MIB


def _text(value: Any) -> str:
    """NVML strings: bytes from older bindings, str from newer ones; made printable ASCII and bounded."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return _clean(str(value))


def _clean(text: str) -> str:
    cleaned = "".join(c if c.isascii() and c.isprintable() else "?" for c in text).strip()
    return cleaned[:MAX_NAME_LEN] or "unknown"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


def _quietly(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except Exception as exc:
        log.debug("NVML %s: %s", getattr(fn, "__name__", fn), _one_line(exc))
