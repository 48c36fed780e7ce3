"""Critical operations (SPEC §6): the life of a pending operation and the rules every vote passes.

A critical command does not run when it arrives. It becomes a PendingOp named by its pending id (the
sha256 of its signed envelope), and the proposing admin's pool counts as approved. Then:

    state     event                                               next state
    pending   Approve, and every voter pool has now approved      executed (at this index)
    pending   Approve, some voter pool still missing              pending
    pending   Veto (from any voter pool, even one that approved)  vetoed, for good, reason kept
    pending   BreakGlass in degraded mode (below)                 executed, override recorded
    pending   a Tick or a vote at or after the expiry             expired
    executed / vetoed / expired                                   (final: every vote is refused)

Degraded mode, judged at the vote's index: a voter pool that has not approved is *excused* when it is
DOWN, or when it has no admin key that may vote on this operation (all revoked, or all removed by the
operation itself). A BreakGlass then executes the operation if every voter pool that has not approved
is excused, and at least one is. Excused pools do not block an ordinary Approve: it still needs every
voter pool, so the break-glass signature is always an explicit, recorded act.

Every vote is judged by VOTE_RULES, top to bottom; the first rule that objects refuses the vote with
its code and reason. Nothing here reads a clock: `now_ms` is the entry's effective time (SPEC D6).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from enum import Enum

from fedraft.domain.outcome import Code

Refusal = tuple[Code, str]


class Status(Enum):
    PENDING = "pending"
    EXECUTED = "executed"  # ran at closed_index; its own result says whether the command succeeded
    VETOED = "vetoed"
    EXPIRED = "expired"


class Kind(Enum):
    APPROVE = "approve"
    VETO = "veto"
    BREAK_GLASS = "break-glass"


@dataclass(frozen=True, order=True)
class Vote:
    pool: str
    key_id: bytes
    index: int
    reason: str = ""  # a veto's reason


@dataclass(frozen=True)
class Override:
    """A degraded-mode execution with the break-glass key: who submitted it and which pools it excused."""

    index: int
    key_id: bytes
    excused: tuple[tuple[str, str], ...]  # (pool, why), sorted by pool


@dataclass(frozen=True)
class Proposer:
    """The author of the critical command, as the state knew it when it was proposed."""

    key_id: bytes
    pool: str
    name: str
    role: str
    request_id: bytes


@dataclass(frozen=True)
class PendingOp:
    pending_id: bytes
    command: str                  # the command's NAME
    command_digest: bytes         # what voters name to say what they vote on
    proposer: Proposer
    proposed_index: int
    proposed_ms: int
    expires_ms: int
    removed_keys: tuple[bytes, ...] = ()  # keys the command revokes or rotates: they may not vote on it
    approvals: tuple[Vote, ...] = ()      # one per voter pool, sorted by pool
    veto: Vote | None = None
    status: Status = Status.PENDING
    closed_index: int = 0                 # where it was executed, vetoed or expired
    override: Override | None = None
    envelope: bytes = b""                 # the proposal's signed envelope (opaque here)
    result: bytes = b""                   # the execution's result (opaque here)

    def approval(self, pool: str) -> Vote | None:
        return next((v for v in self.approvals if v.pool == pool), None)


@dataclass(frozen=True)
class Federation:
    """What the rules need to know of the federation at the vote's index."""

    voter_pools: tuple[str, ...]              # sorted
    down: frozenset[str] = frozenset()        # voter pools DOWN
    without_admin: frozenset[str] = frozenset()  # voter pools with no admin key that may vote on this op


@dataclass(frozen=True)
class Ballot:
    kind: Kind
    key_id: bytes
    pool: str
    admin: bool
    now_ms: int
    command_digest: bytes = b""  # Approve and Veto name it; BreakGlass does not
    reason: str = ""


# ---- the rules -------------------------------------------------------------------------------------

Check = Callable[[PendingOp, Ballot, Federation], str | None]


@dataclass(frozen=True)
class VoteRule:
    name: str
    kinds: frozenset[Kind]
    code: Code
    check: Check


def _executed(op: PendingOp, _b: Ballot, _f: Federation) -> str | None:
    if op.status is Status.EXECUTED:
        return f"{op.command} {op.pending_id.hex()[:12]} was already executed at index {op.closed_index}"
    return None


def _vetoed(op: PendingOp, _b: Ballot, _f: Federation) -> str | None:
    if op.status is Status.VETOED and op.veto is not None:
        return f"{op.command} {op.pending_id.hex()[:12]} was vetoed by {op.veto.pool} at index " \
               f"{op.veto.index}: {op.veto.reason}"
    return None


def _expired(op: PendingOp, b: Ballot, _f: Federation) -> str | None:
    if op.status is Status.EXPIRED or b.now_ms >= op.expires_ms:
        return f"{op.command} {op.pending_id.hex()[:12]} expired at {op.expires_ms} (effective ms); propose it again"
    return None


def _digest(op: PendingOp, b: Ballot, _f: Federation) -> str | None:
    if b.command_digest != op.command_digest:
        return f"the command digest does not match pending {op.command} {op.pending_id.hex()[:12]} " \
               f"(its digest is {op.command_digest.hex()[:12]}…): you would vote on something else"
    return None


def _admin(_op: PendingOp, b: Ballot, _f: Federation) -> str | None:
    return None if b.admin else "only an admin may vote on a critical operation"


def _voter_pool(_op: PendingOp, b: Ballot, f: Federation) -> str | None:
    if b.pool not in f.voter_pools:
        return f"pool {b.pool} is not a voter pool: admins of {', '.join(f.voter_pools)} vote on critical operations"
    return None


def _removed_key(op: PendingOp, b: Ballot, _f: Federation) -> str | None:
    if b.key_id in op.removed_keys:
        return f"this key is the one {op.command} revokes or rotates out: it may not vote on it"
    return None


def _twice(op: PendingOp, b: Ballot, _f: Federation) -> str | None:
    earlier = op.approval(b.pool)
    if earlier is not None:
        return f"pool {b.pool} already approved {op.command} {op.pending_id.hex()[:12]} at index {earlier.index}"
    return None


def _not_degraded(op: PendingOp, _b: Ballot, f: Federation) -> str | None:
    if not excused(op, f):
        return "no voter pool that has yet to approve is down or without an admin who may vote: the " \
               f"break-glass key is for degraded mode only (waiting for {', '.join(waiting_for(op, f))})"
    return None


def _live_missing(op: PendingOp, _b: Ballot, f: Federation) -> str | None:
    excused_pools = {pool for pool, _ in excused(op, f)}
    live = [p for p in waiting_for(op, f) if p not in excused_pools]
    if live:
        return f"still waiting for the approval of {', '.join(live)}: the break-glass key stands in only " \
               "for pools that are down or have no admin who may vote"
    return None


_ALL = frozenset(Kind)
_VOTERS = frozenset({Kind.APPROVE, Kind.VETO})
_APPROVE = frozenset({Kind.APPROVE})
_BREAK_GLASS = frozenset({Kind.BREAK_GLASS})

VOTE_RULES: tuple[VoteRule, ...] = (
    #        rule                      votes it judges  code                      objects when
    VoteRule("already executed",       _ALL,            Code.FAILED_PRECONDITION, _executed),
    VoteRule("vetoed",                 _ALL,            Code.ABORTED,             _vetoed),
    VoteRule("expired",                _ALL,            Code.DEADLINE_EXCEEDED,   _expired),
    VoteRule("other command",          _VOTERS,         Code.INVALID_ARGUMENT,    _digest),
    VoteRule("not an admin",           _VOTERS,         Code.PERMISSION_DENIED,   _admin),
    VoteRule("not a voter pool",       _VOTERS,         Code.PERMISSION_DENIED,   _voter_pool),
    VoteRule("key the command removes", _VOTERS,        Code.PERMISSION_DENIED,   _removed_key),
    VoteRule("pool approved before",   _APPROVE,        Code.ALREADY_EXISTS,      _twice),
    VoteRule("not degraded",           _BREAK_GLASS,    Code.FAILED_PRECONDITION, _not_degraded),
    VoteRule("a live pool missing",    _BREAK_GLASS,    Code.FAILED_PRECONDITION, _live_missing),
)


def judge(op: PendingOp, ballot: Ballot, fed: Federation) -> Refusal | None:
    """The first rule that objects to this vote, as (code, reason); None when the vote counts."""
    for rule in VOTE_RULES:
        if ballot.kind in rule.kinds:
            reason = rule.check(op, ballot, fed)
            if reason is not None:
                return rule.code, reason
    return None


# ---- transitions -----------------------------------------------------------------------------------

def propose(pending_id: bytes, command: str, command_digest: bytes, proposer: Proposer, *, index: int,
            now_ms: int, expiry_ms: int, removed_keys: Iterable[bytes], fed: Federation,
            envelope: bytes = b"") -> PendingOp:
    """A new pending operation; the proposer's pool counts as approved when it is a voter pool.

    That holds even when the command rotates the proposer's own key: rotating one's key is ordinary,
    and every other voter pool still has to approve."""
    approvals = (Vote(proposer.pool, proposer.key_id, index),) if proposer.pool in fed.voter_pools else ()
    return PendingOp(pending_id, command, command_digest, proposer, index, now_ms, now_ms + expiry_ms,
                     tuple(sorted(set(removed_keys))), approvals, envelope=envelope)


def waiting_for(op: PendingOp, fed: Federation) -> tuple[str, ...]:
    """Voter pools that have not approved, sorted."""
    approved = {v.pool for v in op.approvals}
    return tuple(p for p in fed.voter_pools if p not in approved)


def excused(op: PendingOp, fed: Federation) -> tuple[tuple[str, str], ...]:
    """Pools still missing that degraded mode excuses, with why."""
    out = []
    for pool in waiting_for(op, fed):
        if pool in fed.down:
            out.append((pool, "down"))
        elif pool in fed.without_admin:
            out.append((pool, "no admin key that may vote on it"))
    return tuple(out)


def approve(op: PendingOp, ballot: Ballot, fed: Federation, index: int) -> PendingOp | Refusal:
    refusal = judge(op, ballot, fed)
    if refusal is not None:
        return refusal
    votes = (*op.approvals, Vote(ballot.pool, ballot.key_id, index))
    return replace(op, approvals=tuple(sorted(votes)))


def veto(op: PendingOp, ballot: Ballot, fed: Federation, index: int) -> PendingOp | Refusal:
    refusal = judge(op, ballot, fed)
    if refusal is not None:
        return refusal
    return replace(op, veto=Vote(ballot.pool, ballot.key_id, index, ballot.reason), status=Status.VETOED,
                   closed_index=index)


def break_glass(op: PendingOp, ballot: Ballot, fed: Federation, index: int) -> PendingOp | Refusal:
    """The override, recorded; the caller executes the operation at once (ready() is then true).
    The caller has checked the break-glass signature over the pending id."""
    refusal = judge(op, ballot, fed)
    if refusal is not None:
        return refusal
    return replace(op, override=Override(index, ballot.key_id, excused(op, fed)))


def ready(op: PendingOp, fed: Federation) -> bool:
    """Pending, and every voter pool approved or a break-glass override stands in for the rest."""
    return op.status is Status.PENDING and (op.override is not None or not waiting_for(op, fed))


def executed(op: PendingOp, index: int, result: bytes) -> PendingOp:
    return replace(op, status=Status.EXECUTED, closed_index=index, result=result)


def expire(op: PendingOp, now_ms: int, index: int) -> PendingOp | None:
    """The operation closed as expired, if it is pending and its time is up; else None."""
    if op.status is Status.PENDING and now_ms >= op.expires_ms:
        return replace(op, status=Status.EXPIRED, closed_index=index)
    return None


def pools_without_admin(voter_pools: Iterable[str], admins: Iterable[tuple[bytes, str]],
                        removed_keys: Iterable[bytes]) -> frozenset[str]:
    """Voter pools none of whose current admin keys (key id, pool) may vote on an operation that
    removes `removed_keys`."""
    removed = set(removed_keys)
    staffed = {pool for key_id, pool in admins if key_id not in removed}
    return frozenset(p for p in voter_pools if p not in staffed)
