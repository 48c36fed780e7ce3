"""Apply rules of the core commands: the registry (SPEC D8) and barriers."""

from __future__ import annotations

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.consensus.handlers.context import ApplyContext, Rule
from fedraft.domain import commands as c
from fedraft.domain import registry
from fedraft.storage.state import record_to_pb


def _registry(ctx: ApplyContext, command: c.Command) -> pb.Result:
    assert isinstance(command, c.REGISTRY_COMMANDS)
    outcome, writes = registry.apply(ctx.st, command, registry.Revision(ctx.index, ctx.ordinal))
    for w in writes:
        if isinstance(w, registry.SetRecord):
            ctx.st.registry_set(w.record)
        else:
            ctx.st.registry_remove(w.key)
    result = ctx.result(outcome.code, outcome.message)
    if outcome.record is not None:
        result.record.CopyFrom(record_to_pb(outcome.record))
    if outcome.deleted is not None:
        result.deleted.CopyFrom(record_to_pb(outcome.deleted))
    return result


def _registry_check(command: c.Command) -> str | None:
    assert isinstance(command, c.REGISTRY_COMMANDS)
    return registry.static_problem(command)


def _barrier(ctx: ApplyContext, _command: c.Command) -> pb.Result:
    return ctx.result()


RULES: dict[type[c.Command], Rule] = {
    c.Put: Rule(_registry, _registry_check),
    c.Delete: Rule(_registry, _registry_check),
    c.CompareAndSet: Rule(_registry, _registry_check),
    c.Barrier: Rule(_barrier),
}
