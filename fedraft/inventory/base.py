"""What every inventory backend offers, the errors they raise, and the limits they share (SPEC §7).

An inventory is capacity and health (workers, CPU, RAM, GPUs by UUID), not moment-to-moment use, so it
changes rarely: the node reads it periodically and reports it only when `fingerprint()` changes.

`read()` may raise an `InventoryError` (an `OperatorError`) when the source cannot produce an
inventory right now (a static file being edited, NVML gone away); the caller keeps its last good
inventory, logs, and tries again later. Nothing here raises anything else on purpose.
"""

from __future__ import annotations

import re
from typing import Protocol

from fedraft.domain.placement.model import Inventory
from fedraft.errors import ConfigError, OperatorError

MAX_INVENTORY_BYTES = 1024 * 1024
MAX_WORKERS = 4096
MAX_GPUS_PER_WORKER = 64
MAX_NAME_LEN = 128
MAX_QUANTITY = 2**40  # MiB or millicores; far above any real machine, and safe in every integer encoding

# Worker names are host-like; GPU UUIDs are NVML's "GPU-<uuid>" / "MIG-<uuid>" (old MIG ids contain "/").
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")
UUID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]*")
# MIG profiles as NVML names them: "1g.10gb", "3g.40gb", "1g.10gb+me".
PROFILE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


class InventoryError(OperatorError):
    """An inventory source cannot produce an inventory (now)."""


class InventoryUnavailable(InventoryError):
    """A backend is not usable on this machine; `message` is a one-line reason.

    `absent` is True when the machine simply has no such stack (no pynvml module, no NVIDIA driver):
    expected on CPU-only hosts, so `auto` falls back quietly. False means something is there but broken.
    """

    def __init__(self, message: str, *, hint: str = "", absent: bool = False) -> None:
        super().__init__(message, hint=hint)
        self.absent = absent


class InventoryFileError(InventoryError, ConfigError):
    """A static inventory file is missing or malformed; the message names the file and the field."""


class InventorySource(Protocol):
    def read(self) -> Inventory:
        """The current inventory, workers sorted by name and GPUs by UUID. Re-reads on every call."""
        ...

    def describe(self) -> str:
        """One human line: where this inventory comes from."""
        ...
