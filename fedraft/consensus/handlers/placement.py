"""Apply rules of the placement area (SPEC §5, §7): filled in as the area's commands land."""

from __future__ import annotations

from collections.abc import Callable

from fedraft.consensus.handlers.context import Rule, TickContext
from fedraft.domain import commands as c
from fedraft.storage.state import StateTxn

RULES: dict[type[c.Command], Rule] = {}
TICKERS: tuple[Callable[[TickContext], None], ...] = ()
DEADLINES: tuple[Callable[[StateTxn, int], int | None], ...] = ()
