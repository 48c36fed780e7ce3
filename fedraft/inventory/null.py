"""The empty inventory: a pool that offers nothing (a control-plane-only node, or no source configured)."""

from __future__ import annotations

from fedraft.domain.placement.model import Inventory


class NullInventory:
    def read(self) -> Inventory:
        return Inventory()

    def describe(self) -> str:
        return "empty inventory (no workers)"
