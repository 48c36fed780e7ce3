"""A stable digest of an inventory, so a node sends ReportInventory only when capacity or health changed."""

from __future__ import annotations

import hashlib
import json

from fedraft.domain.placement.model import Inventory

_TAG = b"fedraft/inventory-fingerprint/v1\n"


def canonical_encoding(inv: Inventory) -> bytes:
    """Every field of every worker and GPU, in sorted order, as compact ASCII JSON (one encoding per value)."""
    workers = sorted(inv.workers, key=lambda w: w.name)
    doc = [
        [w.name, w.cpu_millis, w.ram_mb,
         [[g.uuid, g.model, g.memory_mb, g.healthy] for g in sorted(w.gpus, key=lambda g: g.uuid)]]
        for w in workers
    ]
    return _TAG + json.dumps(doc, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def fingerprint(inv: Inventory) -> bytes:
    """sha256 of the canonical encoding: equal for equal inventories (whatever their order), 32 bytes."""
    return hashlib.sha256(canonical_encoding(inv)).digest()
