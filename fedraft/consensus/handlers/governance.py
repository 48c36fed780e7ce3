"""Apply rules of the governance area that have landed: reciprocal pairing (SPEC §5)."""

from __future__ import annotations

from collections.abc import Callable

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft._proto.fedraft.v1 import governance_pb2 as gpb
from fedraft.consensus.handlers.context import ApplyContext, Rule, TickContext
from fedraft.domain import commands as c
from fedraft.domain.governance import commands as gc
from fedraft.domain.governance import pairing
from fedraft.domain.outcome import Code
from fedraft.domain.placement.commands import name_problem
from fedraft.storage import governance_schema as schema
from fedraft.storage import placement_schema
from fedraft.storage.state import StateTxn


def _pairing_result(ctx: ApplyContext, outcome: pairing.Pairing | tuple[Code, str]) -> pb.Result:
    if isinstance(outcome, tuple):
        return ctx.refuse(*outcome)
    schema.put_pairing(ctx.st, outcome)
    result = ctx.result()
    result.governance.CopyFrom(gpb.GovernanceResult(state="active" if outcome.active else "offered"))
    return result


def _offer(ctx: ApplyContext, command: c.Command) -> pb.Result:
    assert isinstance(command, gc.PairOffer)
    if placement_schema.get_pool(ctx.st, command.to_pool) is None:
        return ctx.refuse(Code.NOT_FOUND, f"pool {command.to_pool} is not registered")
    current = schema.get_pairing(ctx.st, ctx.principal.pool, command.to_pool)
    return _pairing_result(ctx, pairing.offer(current, ctx.principal.pool, command.to_pool, command.trust))


def _accept(ctx: ApplyContext, command: c.Command) -> pb.Result:
    assert isinstance(command, gc.PairAccept)
    current = schema.get_pairing(ctx.st, ctx.principal.pool, command.from_pool)
    return _pairing_result(ctx, pairing.accept(current, ctx.principal.pool, command.from_pool))


def _check(command: c.Command) -> str | None:
    if isinstance(command, gc.PairOffer):
        return name_problem("pool", command.to_pool)
    if isinstance(command, gc.PairAccept):
        return name_problem("pool", command.from_pool)
    return None


RULES: dict[type[c.Command], Rule] = {
    gc.PairOffer: Rule(_offer, _check),
    gc.PairAccept: Rule(_accept, _check),
}
TICKERS: tuple[Callable[[TickContext], None], ...] = ()
DEADLINES: tuple[Callable[[StateTxn, int], int | None], ...] = ()
