"""Apply rules of the catalog area (SPEC §5): publish a model version, report a replica, promote a master.

The rules themselves are pure (fedraft.domain.catalog.rules); this module reads the entry and the pools
from the state, writes the result, and drops the entry's placement view so the next placement in the same
entry scores data locality from the new replicas.

PromoteMaster is critical: once the critical-operations framework runs it, it records the command pending
and calls this handler only when every voter pool approved. The handler is the execution step: it checks
everything again against the state at that index, with `ctx.principal` the proposing admin.
"""

from __future__ import annotations

from collections.abc import Callable

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.consensus.handlers.context import ApplyContext, Rule, TickContext
from fedraft.consensus.handlers.placement import forget_view
from fedraft.domain import commands as c
from fedraft.domain.catalog import commands as cc
from fedraft.domain.catalog import rules
from fedraft.domain.catalog.model import CatalogEntry
from fedraft.domain.outcome import Code
from fedraft.storage import catalog_schema as schema
from fedraft.storage import placement_schema
from fedraft.storage.state import StateTxn


def _outcome(ctx: ApplyContext, outcome: CatalogEntry | rules.Unchanged | rules.Refusal, done: str) -> pb.Result:
    if isinstance(outcome, tuple):
        return ctx.refuse(*outcome)
    if isinstance(outcome, rules.Unchanged):
        return ctx.result(Code.OK, outcome.reason)
    schema.put_entry(ctx.st, outcome)
    forget_view(ctx.scope)
    return ctx.result(Code.OK, done)


def _publish(ctx: ApplyContext, command: c.Command) -> pb.Result:
    assert isinstance(command, cc.PublishModel)
    pool = ctx.principal.pool
    if placement_schema.get_pool(ctx.st, pool) is None:
        return ctx.refuse(Code.FAILED_PRECONDITION, f"the author's pool {pool} is not registered")
    entry = schema.get_entry(ctx.st, command.name)
    outcome = rules.publish(entry, pool, command, ctx.now_ms, ctx.index)
    how = "; new model, master" if entry is None else " from master"
    return _outcome(ctx, outcome, f"published {command.name} version {command.version}{how} {pool}")


def _registered(ctx: ApplyContext, outcome: CatalogEntry | rules.Unchanged | rules.Refusal,
                pool: str) -> CatalogEntry | rules.Unchanged | rules.Refusal:
    """A change naming `pool` needs that pool registered (it may have been retired since)."""
    if isinstance(outcome, CatalogEntry) and placement_schema.get_pool(ctx.st, pool) is None:
        return Code.NOT_FOUND, f"pool {pool} is not registered"
    return outcome


def _report(ctx: ApplyContext, command: c.Command) -> pb.Result:
    assert isinstance(command, cc.ReportReplica)
    pool = command.pool or ctx.principal.pool
    outcome = rules.report_replica(schema.get_entry(ctx.st, command.name), ctx.principal.pool, command, ctx.now_ms)
    return _outcome(ctx, _registered(ctx, outcome, pool), f"{pool} holds {command.name} version {command.version}")


def _promote(ctx: ApplyContext, command: c.Command) -> pb.Result:
    assert isinstance(command, cc.PromoteMaster)
    entry = schema.get_entry(ctx.st, command.name)
    outcome = rules.promote(entry, ctx.principal.pool, command.name, command.pool, ctx.now_ms)
    old = entry.master if entry is not None else ""
    return _outcome(ctx, _registered(ctx, outcome, command.pool),
                    f"{command.pool} is the master of {command.name}; {old} is a satellite")


def _check(command: c.Command) -> str | None:
    return cc.static_problem(command)


RULES: dict[type[c.Command], Rule] = {
    cc.PublishModel: Rule(_publish, _check),
    cc.ReportReplica: Rule(_report, _check),
    cc.PromoteMaster: Rule(_promote, _check),
}
TICKERS: tuple[Callable[[TickContext], None], ...] = ()
DEADLINES: tuple[Callable[[StateTxn, int], int | None], ...] = ()
