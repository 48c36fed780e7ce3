"""Choose the inventory source for a node: NVML, a static file, or nothing (SPEC §7: never a crash).

`auto` tries NVML first, then the static file if one is configured, then the empty inventory, and logs
one line saying which it chose and why, e.g.

    inventory: no NVIDIA driver (libnvidia-ml.so not found): using static inventory file fed/hq/inventory.toml

Expected absences (no pynvml module, no driver) are INFO; a GPU stack that is present but broken, a
static file that does not read, or ending up with no inventory at all are WARNING. `auto` never raises.
Explicit kinds (`static`, `nvml`) raise an `OperatorError` with a hint when they cannot work.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fedraft.errors import ConfigError, OperatorError
from fedraft.inventory.base import InventoryError, InventorySource, InventoryUnavailable
from fedraft.inventory.null import NullInventory
from fedraft.inventory.nvml import NvmlInventory
from fedraft.inventory.static import StaticInventory

log = logging.getLogger(__name__)

KINDS = ("auto", "static", "nvml", "none")


def open_inventory(kind: str, path: Path | None, host: str) -> InventorySource:
    """The inventory source of `kind` for this host (`host` names the NVML worker)."""
    if kind == "none":
        log.info("inventory: none configured: reporting an empty inventory")
        return NullInventory()
    if kind == "static":
        return _open_static(path)
    if kind == "nvml":
        try:
            source = NvmlInventory.open(host)
        except InventoryUnavailable as exc:
            raise OperatorError(f"inventory kind 'nvml': {exc.message}",
                                hint=exc.hint or "use inventory kind 'static' or 'auto'") from None
        log.info("inventory: using NVML (driver %s) for worker %s", source.driver_version(), host)
        return source
    if kind == "auto":
        return _open_auto(path, host)
    raise ConfigError(f"unknown inventory kind {kind!r}", hint=f"one of: {', '.join(KINDS)}")


def _open_static(path: Path | None) -> StaticInventory:
    if path is None:
        raise ConfigError("inventory kind 'static' needs an inventory file",
                          hint="give the path of a .toml or .json inventory file")
    source = StaticInventory(path)
    inv = source.read()  # an InventoryFileError (an OperatorError) names the file and the field
    log.info("inventory: using static inventory file %s (%d workers, %d healthy GPUs)",
             path, len(inv.workers), inv.gpu_count)
    return source


def _open_auto(path: Path | None, host: str) -> InventorySource:
    try:
        source = NvmlInventory.open(host)
    except InventoryUnavailable as exc:
        reason, level = exc.message, (logging.INFO if exc.absent else logging.WARNING)
    except Exception as exc:  # auto never raises: a surprise here is logged and NVML is skipped
        reason, level = f"NVML probe failed: {type(exc).__name__}: {exc}", logging.WARNING
    else:
        log.info("inventory: NVML initialised (driver %s): using NVML inventory for worker %s",
                 source.driver_version(), host)
        return source
    if path is None:
        log.warning("inventory: %s: no static inventory file given: reporting an empty inventory", reason)
        return NullInventory()
    static = StaticInventory(path)
    try:
        static.read()
    except InventoryError as exc:
        # Still the operator's intended source: each later read retries it, so fixing the file heals.
        log.warning("inventory: %s: using static inventory file %s, which does not read yet: %s",
                    reason, path, exc)
        return static
    except Exception as exc:
        log.warning("inventory: %s: using static inventory file %s, which does not read yet: %s: %s",
                    reason, path, type(exc).__name__, exc)
        return static
    log.log(level, "inventory: %s: using static inventory file %s", reason, path)
    return static
