"""Critical operations at apply (SPEC §6): proposals become pending, votes, execution, break-glass, expiry.

`propose` is what dispatch calls for any command whose class is CRITICAL, instead of its rule. The
rules of the pending life and of every vote are in fedraft/domain/governance/approvals.py; this module
gathers the facts they need from the state (voter pools, which are DOWN, which have no admin who may
vote), stores the outcome, and runs the command's own rule at the index of its last approval — with
the proposal's author, request id and envelope, so the command applies as if it had just arrived.
The execution's result is kept on the pending record and reported in the approving vote's result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from google.protobuf.message import DecodeError as ProtoDecodeError

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft._proto.fedraft.v1 import governance_pb2 as gpb
from fedraft.consensus.handlers.context import ApplyContext, Rule, TickContext
from fedraft.crypto.envelopes import command_digest_of, parse_envelope, pending_id_of
from fedraft.crypto.signing import CTX_BREAKGLASS, verify
from fedraft.domain import commands as c
from fedraft.domain.governance import approvals as ap
from fedraft.domain.governance import commands as gc
from fedraft.domain.outcome import Code
from fedraft.domain.placement.model import Health
from fedraft.errors import DecodeError, SignatureError
from fedraft.storage import governance_schema as schema
from fedraft.storage import placement_schema
from fedraft.storage.state import StateTxn
from fedraft.wire.commands import command_from_pb

Execute = Callable[[ApplyContext, c.Command], pb.Result]


def _federation(ctx: ApplyContext | TickContext, removed_keys: tuple[bytes, ...] | frozenset[bytes]) -> ap.Federation:
    """The facts of SPEC §6 at this index: voter pools (fixed at genesis), which are DOWN, which have no
    admin key that may vote on an operation removing `removed_keys`."""
    voters = tuple(sorted({v.pool for v in ctx.genesis.voters}))
    down = set()
    for pool_id in voters:
        pool = placement_schema.get_pool(ctx.st, pool_id)
        if pool is None or pool.status.health is Health.DOWN:
            down.add(pool_id)
    without = ap.pools_without_admin(voters, schema.admins(ctx.st), removed_keys)
    return ap.Federation(voters, frozenset(down), without)


def _detail(op: ap.PendingOp, fed: ap.Federation) -> gpb.GovernanceResult:
    detail = gpb.GovernanceResult(
        pending_id=op.pending_id, state=op.status.value, command=op.command, command_digest=op.command_digest,
        approved=[v.pool for v in op.approvals], waiting_for=list(ap.waiting_for(op, fed)),
        expires_ms=op.expires_ms, break_glass=op.override is not None,
        excused=[f"{pool}: {why}" for pool, why in op.override.excused] if op.override is not None else [])
    if op.result:
        executed = pb.Result()
        executed.ParseFromString(op.result)
        detail.result_code, detail.result_message = executed.code, executed.message
    return detail


def _answer(ctx: ApplyContext, op: ap.PendingOp, fed: ap.Federation, message: str,
            code: Code = Code.OK) -> pb.Result:
    result = ctx.result(code, message)
    result.governance.CopyFrom(_detail(op, fed))
    return result


def _short(op: ap.PendingOp) -> str:
    return f"{op.command} {op.pending_id.hex()[:12]}"


def _execute(ctx: ApplyContext, op: ap.PendingOp, execute: Execute) -> tuple[ap.PendingOp, str]:
    """Run the pending command's own rule now, as its proposer; (the closed operation, what happened)."""
    signed = pb.Signed()
    try:
        signed.ParseFromString(op.envelope)
        command = command_from_pb(parse_envelope(bytes(signed.body)))
    except (ProtoDecodeError, DecodeError) as exc:  # pragma: no cover - it decoded when it was proposed
        result = ctx.result(Code.INVALID_ARGUMENT, f"stored proposal does not decode: {exc}")
    else:
        p = op.proposer
        known = ctx.st.principal(p.key_id)
        principal = pb.Principal(key_id=p.key_id, public_key=known.public_key if known is not None else b"",
                                 pool=p.pool, role=p.role, name=p.name)
        as_proposer = replace(ctx, key_id=p.key_id, request_id=p.request_id, principal=principal, signed=signed)
        result = execute(as_proposer, command)
    closed = ap.executed(op, ctx.index, result.SerializeToString(deterministic=True))
    verdict = "done" if result.code == Code.OK else f"refused at execution: {Code(result.code).name}"
    return closed, f"{_short(op)} executed at index {ctx.index}, {verdict}" + \
        (f": {result.message}" if result.message else "")


def propose(ctx: ApplyContext, command: c.Command, execute: Execute) -> pb.Result:
    """A critical command arrived: record it as pending (SPEC §6); the proposer's pool has approved."""
    assert ctx.signed is not None, "the applier passes the envelope of every command"
    pending_id = pending_id_of(ctx.signed)
    if schema.get_pending(ctx.st, pending_id) is not None:  # pragma: no cover - de-dup answers a replay first
        return ctx.refuse(Code.ALREADY_EXISTS, f"{command.NAME} {pending_id.hex()[:12]} is already recorded")
    removed = gc.removed_keys(command)
    fed = _federation(ctx, removed)
    p = ctx.principal
    op = ap.propose(pending_id, command.NAME, command_digest_of(parse_envelope(bytes(ctx.signed.body))),
                    ap.Proposer(ctx.key_id, p.pool, p.name, p.role, ctx.request_id), index=ctx.index,
                    now_ms=ctx.now_ms, expiry_ms=schema.policy(ctx.st).pending_expiry_ms, removed_keys=removed,
                    fed=fed, envelope=ctx.signed.SerializeToString(deterministic=True))
    message = f"{_short(op)} is pending: waiting for {', '.join(ap.waiting_for(op, fed))}"
    if ap.ready(op, fed):  # a federation of one voter pool
        op, message = _execute(ctx, op, execute)
    schema.put_pending(ctx.st, op)
    return _answer(ctx, op, fed, message)


def _vote(ctx: ApplyContext, kind: ap.Kind, pending_id: bytes, digest: bytes, reason: str,
          execute: Execute) -> pb.Result:
    op = schema.get_pending(ctx.st, pending_id)
    if op is None:
        return ctx.refuse(Code.NOT_FOUND, f"no critical operation {pending_id.hex()[:12]} "
                                          "(`fedraft pending` lists them)")
    expired = ap.expire(op, ctx.now_ms, ctx.index)
    if expired is not None:  # its Tick has not come yet: close it now, then refuse the vote as late
        op = expired
        schema.put_pending(ctx.st, op)
    fed = _federation(ctx, op.removed_keys)
    ballot = ap.Ballot(kind, ctx.key_id, ctx.principal.pool, ctx.principal.role == "admin", ctx.now_ms, digest,
                       reason)
    transition = {ap.Kind.APPROVE: ap.approve, ap.Kind.VETO: ap.veto, ap.Kind.BREAK_GLASS: ap.break_glass}[kind]
    outcome = transition(op, ballot, fed, ctx.index)
    if isinstance(outcome, tuple):
        return _answer(ctx, op, fed, outcome[1], outcome[0])
    op = outcome
    by = f"{ctx.principal.name or ctx.key_id.hex()} of {ctx.principal.pool}"
    if kind is ap.Kind.VETO:
        message = f"{_short(op)} vetoed by {by}: {reason}"
    elif kind is ap.Kind.BREAK_GLASS:
        excused = "; ".join(f"{pool}: {why}" for pool, why in op.override.excused) if op.override else ""
        message = f"break-glass override by {by} (excused {excused})"
    else:
        message = f"approved by {by}"
    if ap.ready(op, fed):
        op, executed = _execute(ctx, op, execute)
        message = f"{message}; {executed}"
    elif op.status is ap.Status.PENDING:
        message = f"{message}; waiting for {', '.join(ap.waiting_for(op, fed))}"
    schema.put_pending(ctx.st, op)
    return _answer(ctx, op, fed, message)


def _break_glass_signature(ctx: ApplyContext, command: gc.BreakGlass) -> pb.Result | None:
    try:
        verify(ctx.genesis.break_glass_public_key, CTX_BREAKGLASS, ctx.genesis.cluster_id, command.pending_id,
               command.signature)
    except SignatureError:
        return ctx.refuse(Code.UNAUTHENTICATED, "the break-glass signature does not verify: it must be the "
                                                "genesis break-glass key's signature over this pending id")
    return None


def rules(execute: Execute) -> dict[type[c.Command], Rule]:
    """Apply rules of Approve, Veto and BreakGlass; `execute` runs a command's own rule."""

    def approve(ctx: ApplyContext, command: c.Command) -> pb.Result:
        assert isinstance(command, gc.Approve)
        return _vote(ctx, ap.Kind.APPROVE, command.pending_id, command.command_digest, "", execute)

    def veto(ctx: ApplyContext, command: c.Command) -> pb.Result:
        assert isinstance(command, gc.Veto)
        return _vote(ctx, ap.Kind.VETO, command.pending_id, command.command_digest, command.reason, execute)

    def break_glass(ctx: ApplyContext, command: c.Command) -> pb.Result:
        assert isinstance(command, gc.BreakGlass)
        bad = _break_glass_signature(ctx, command)
        if bad is not None:
            return bad
        return _vote(ctx, ap.Kind.BREAK_GLASS, command.pending_id, b"", "", execute)

    def check(command: c.Command) -> str | None:
        return gc.static_problem(command)

    return {gc.Approve: Rule(approve, check), gc.Veto: Rule(veto, check), gc.BreakGlass: Rule(break_glass, check)}


def _expire(ctx: TickContext) -> None:
    for pending_id in schema.due_pending(ctx.st, ctx.now_ms):
        op = schema.get_pending(ctx.st, pending_id)
        closed = ap.expire(op, ctx.now_ms, ctx.index) if op is not None else None
        if closed is not None:
            schema.put_pending(ctx.st, closed)


def _deadline(st: StateTxn, _term_start_ms: int) -> int | None:
    return schema.earliest_expiry(st)


TICKERS: tuple[Callable[[TickContext], None], ...] = (_expire,)
DEADLINES: tuple[Callable[[StateTxn, int], int | None], ...] = (_deadline,)
