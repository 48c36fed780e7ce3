"""Apply rules of memories (SPEC §5, D12; decision 0009): PutMemory and DeleteMemory.

Nodes never seal or open here: they check that the envelope's boxes go to exactly the pools that
qualify at this index (fedraft.domain.governance.memories) and store them. Everything is read from
the state and the entry, so every node reaches the same result.
"""

from __future__ import annotations

from collections.abc import Callable

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft._proto.fedraft.v1 import governance_pb2 as gpb
from fedraft._proto.fedraft.v1 import memory_pb2 as mpb
from fedraft.consensus.handlers.context import ApplyContext, Rule, TickContext
from fedraft.domain import commands as c
from fedraft.domain.governance import memories as mem
from fedraft.domain.outcome import Code
from fedraft.storage import governance_schema, memory_schema, placement_schema
from fedraft.storage.state import StateTxn
from fedraft.wire.memory import sealed_to_pb


def _owner_problem(ctx: ApplyContext, record: mpb.MemoryRecord | None, verb: str) -> pb.Result | None:
    if record is not None and record.pool != ctx.principal.pool:
        return ctx.refuse(Code.PERMISSION_DENIED, f"memory {record.key} belongs to pool {record.pool}: only its "
                                                  f"principals may {verb} it ({ctx.principal.name} is of "
                                                  f"{ctx.principal.pool})")
    return None


def _put(ctx: ApplyContext, command: c.Command) -> pb.Result:
    assert isinstance(command, mem.PutMemory)
    policy = governance_schema.policy(ctx.st)
    data_class = policy.data_class(command.data_class)
    if data_class is None:
        known = ", ".join(dc.name for dc in policy.data_classes)
        return ctx.refuse(Code.NOT_FOUND, f"unknown data class {command.data_class!r} (policy has: {known})")
    pool = ctx.principal.pool
    if placement_schema.get_pool(ctx.st, pool) is None:
        return ctx.refuse(Code.FAILED_PRECONDITION, f"the author's pool {pool} is not registered")
    if len(command.sealed[0].box) > mem.max_box_bytes(command.key, pool):  # the value's size cap, exactly
        return ctx.refuse(Code.INVALID_ARGUMENT, mem.box_size_problem(command.sealed[0].pool,
                                                                      len(command.sealed[0].box)))
    existing = memory_schema.get(ctx.st, command.key)
    problem = _owner_problem(ctx, existing, "replace")
    if problem is not None:
        return problem
    outcome = mem.version_problem(command.expected_version, existing.version if existing is not None else 0)
    if outcome is not None:
        return ctx.refuse(*outcome)
    wanted = memory_schema.recipients_of(ctx.st, ctx.genesis, pool, data_class.level)
    outcome = mem.sealed_problem(command.sealed, wanted, data_class.name)
    if outcome is not None:
        return ctx.refuse(*outcome)
    record = mpb.MemoryRecord(
        key=command.key, data_class=data_class.name, level=data_class.level.label, pool=pool,
        author_key_id=ctx.key_id, author=ctx.principal.name,
        version=existing.version + 1 if existing is not None else 1,
        created_index=existing.created_index if existing is not None else ctx.index,
        modified_index=ctx.index, modified_ordinal=ctx.ordinal, modified_ms=ctx.now_ms,
        pools=[s.pool for s in command.sealed], key_ids=[s.key_id for s in command.sealed],
        box_bytes=len(command.sealed[0].box))
    memory_schema.put(ctx.st, record, [sealed_to_pb(s) for s in command.sealed])
    result = ctx.result(message=f"memory {command.key} version {record.version} ({data_class.name}, "
                                f"{data_class.level.label}) sealed to {', '.join(record.pools)}")
    result.governance.CopyFrom(gpb.GovernanceResult(memory=record))
    return result


def _delete(ctx: ApplyContext, command: c.Command) -> pb.Result:
    assert isinstance(command, mem.DeleteMemory)
    existing = memory_schema.get(ctx.st, command.key)
    if existing is None:
        return ctx.refuse(Code.NOT_FOUND, f"no memory {command.key}")
    problem = _owner_problem(ctx, existing, "delete")
    if problem is not None:
        return problem
    outcome = mem.version_problem(command.expected_version, existing.version)
    if outcome is not None:
        return ctx.refuse(*outcome)
    memory_schema.delete(ctx.st, command.key)
    return ctx.result(message=f"deleted memory {command.key} (version {existing.version}) and its "
                              f"{len(existing.pools)} sealed values")


def _check(command: c.Command) -> str | None:
    return mem.static_problem(command)


RULES: dict[type[c.Command], Rule] = {
    mem.PutMemory: Rule(_put, _check),
    mem.DeleteMemory: Rule(_delete, _check),
}
TICKERS: tuple[Callable[[TickContext], None], ...] = ()
DEADLINES: tuple[Callable[[StateTxn, int], int | None], ...] = ()
