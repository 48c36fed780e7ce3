"""fedraft.inventory: what a pool has to offer (workers, CPU, RAM, GPUs by UUID), from NVML or a file.

`open_inventory(kind, path, host)` picks the source; `fingerprint(inv)` tells whether it changed.
Sample inventories for the demo federation ship in `samples/` (see `sample_path`).
"""

from __future__ import annotations

from pathlib import Path

from fedraft.inventory.base import (
    InventoryError,
    InventoryFileError,
    InventorySource,
    InventoryUnavailable,
)
from fedraft.inventory.fingerprint import fingerprint
from fedraft.inventory.null import NullInventory
from fedraft.inventory.nvml import NvmlInventory
from fedraft.inventory.select import KINDS, open_inventory
from fedraft.inventory.static import StaticInventory, load_inventory_file

SAMPLES = ("hq", "gpu-dc", "cpu-branch")


def sample_path(name: str) -> Path:
    """The packaged sample inventory `name` (one of SAMPLES)."""
    if name not in SAMPLES:
        raise ValueError(f"unknown sample inventory {name!r} (one of: {', '.join(SAMPLES)})")
    return Path(__file__).resolve().parent / "samples" / f"{name}.toml"


__all__ = [
    "KINDS",
    "SAMPLES",
    "InventoryError",
    "InventoryFileError",
    "InventorySource",
    "InventoryUnavailable",
    "NullInventory",
    "NvmlInventory",
    "StaticInventory",
    "fingerprint",
    "load_inventory_file",
    "open_inventory",
    "sample_path",
]
