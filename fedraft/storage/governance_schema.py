"""The governance area's replicated LMDB databases (names are part of the state digest, SPEC D18)."""

from __future__ import annotations

DBS: tuple[bytes, ...] = ()
