"""Apply rules by command class, gathered from every area, and the areas' Tick hooks (SPEC D6).

Each area module exports RULES (command class -> Rule), TICKERS (run on every Tick, in order) and
DEADLINES (the earliest effective time at which the area needs a Tick, or None). `dispatch` is how
the applier runs a checked command: a CRITICAL one is recorded as pending instead (approvals.py) and
runs through `execute` at its last approval.
"""

from __future__ import annotations

from collections.abc import Callable

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.consensus.handlers import approvals, catalog, checkpoint, core, governance, memory, placement
from fedraft.consensus.handlers.context import ApplyContext, EntryScope, Rule, TickContext
from fedraft.domain import commands as c
from fedraft.storage.state import StateTxn

TICKERS: tuple[Callable[[TickContext], None], ...] = (*approvals.TICKERS, *governance.TICKERS, *placement.TICKERS)
DEADLINES: tuple[Callable[[StateTxn, int], int | None], ...] = (*approvals.DEADLINES, *governance.DEADLINES,
                                                                 *placement.DEADLINES)


def _tick(ctx: ApplyContext, _command: c.Command) -> pb.Result:
    """Every area acts on the effective time this entry carries (expiries, health, orchestration)."""
    tick = TickContext(ctx.st, ctx.genesis, ctx.index, ctx.now_ms, ctx.term_start_ms, ctx.scope)
    for ticker in TICKERS:
        ticker(tick)
    return ctx.result()


RULES: dict[type[c.Command], Rule] = {**core.RULES, **governance.RULES, **placement.RULES, **catalog.RULES,
                                      **memory.RULES, **checkpoint.RULES, c.Tick: Rule(_tick)}


def execute(ctx: ApplyContext, command: c.Command) -> pb.Result:
    """Run a command's own apply rule now (for a critical command: once it is approved)."""
    return RULES[type(command)].apply(ctx, command)


def dispatch(ctx: ApplyContext, command: c.Command) -> pb.Result:
    """Apply one checked command: a critical one becomes a pending operation (SPEC §6)."""
    if type(command).CRITICAL:
        return approvals.propose(ctx, command, execute)
    return execute(ctx, command)


RULES.update(approvals.rules(execute))

__all__ = ["RULES", "ApplyContext", "EntryScope", "Rule", "TickContext", "dispatch", "execute", "next_deadline",
           "static_problem"]


def static_problem(command: c.Command) -> str | None:
    rule = RULES.get(type(command))
    if rule is None:
        return f"no apply rule for {command.NAME}"
    return rule.check(command) if rule.check is not None else None


def next_deadline(st: StateTxn, term_start_ms: int) -> int | None:
    """The earliest effective time at which some area needs a Tick (SPEC D6); None when idle."""
    due = [d for d in (f(st, term_start_ms) for f in DEADLINES) if d is not None]
    return min(due) if due else None
