"""The approval rules of critical operations (SPEC §6), one table row per rule, read top to bottom."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fedraft.domain.governance import approvals as ap
from fedraft.domain.governance.approvals import Ballot, Federation, Kind, PendingOp, Status, Vote
from fedraft.domain.outcome import Code

VOTERS = ("cpu-branch", "gpu-dc", "hq")
FED = Federation(VOTERS)
PID, DIGEST = b"\xaa" * 32, b"\xdd" * 32
HQ_ADMIN, DC_ADMIN, CPU_ADMIN, EDGE_ADMIN = b"h" * 16, b"d" * 16, b"c" * 16, b"e" * 16
NOW, EXPIRES = 1_000, 1_000 + 3_600_000


def proposed(removed: tuple[bytes, ...] = (), fed: Federation = FED) -> PendingOp:
    return ap.propose(PID, "set_policy", DIGEST, ap.Proposer(HQ_ADMIN, "hq", "hq-admin", "admin", b"r" * 16),
                      index=10, now_ms=NOW, expiry_ms=3_600_000, removed_keys=removed, fed=fed)


def ballot(kind: Kind, key: bytes, pool: str, *, admin: bool = True, now: int = NOW + 1,
           digest: bytes = DIGEST) -> Ballot:
    return Ballot(kind, key, pool, admin, now, digest if kind is not Kind.BREAK_GLASS else b"", "why")


APPROVE, VETO, BREAK = Kind.APPROVE, Kind.VETO, Kind.BREAK_GLASS
EXECUTED = replace(proposed(), status=Status.EXECUTED, closed_index=12)
VETOED = replace(proposed(), status=Status.VETOED, closed_index=11, veto=Vote("gpu-dc", DC_ADMIN, 11, "no"))
EXPIRED = replace(proposed(), status=Status.EXPIRED, closed_index=13)
ROTATING_DC = proposed(removed=(DC_ADMIN,))
DC_APPROVED = replace(proposed(), approvals=(Vote("gpu-dc", DC_ADMIN, 11), Vote("hq", HQ_ADMIN, 10)))
CPU_DOWN = Federation(VOTERS, down=frozenset({"cpu-branch"}))

# (case, operation, ballot, federation, expected code or None when the vote counts, fragment of the reason)
CASES = [
    ("approve by an admin of a voter pool", proposed(), ballot(APPROVE, DC_ADMIN, "gpu-dc"), FED, None, ""),
    ("approve after execution", EXECUTED, ballot(APPROVE, DC_ADMIN, "gpu-dc"), FED,
     Code.FAILED_PRECONDITION, "already executed at index 12"),
    ("veto after execution", EXECUTED, ballot(VETO, DC_ADMIN, "gpu-dc"), FED,
     Code.FAILED_PRECONDITION, "already executed"),
    ("approve after a veto", VETOED, ballot(APPROVE, CPU_ADMIN, "cpu-branch"), FED,
     Code.ABORTED, "vetoed by gpu-dc at index 11: no"),
    ("a second veto", VETOED, ballot(VETO, CPU_ADMIN, "cpu-branch"), FED, Code.ABORTED, "vetoed"),
    ("break-glass after a veto", VETOED, ballot(BREAK, CPU_ADMIN, "cpu-branch"), CPU_DOWN, Code.ABORTED, "vetoed"),
    ("approve once expired", EXPIRED, ballot(APPROVE, DC_ADMIN, "gpu-dc"), FED,
     Code.DEADLINE_EXCEEDED, "expired"),
    ("approve at the expiry, before its Tick", proposed(), ballot(APPROVE, DC_ADMIN, "gpu-dc", now=EXPIRES), FED,
     Code.DEADLINE_EXCEEDED, "expired"),
    ("approve just before the expiry", proposed(), ballot(APPROVE, DC_ADMIN, "gpu-dc", now=EXPIRES - 1), FED,
     None, ""),
    ("approve naming another command", proposed(), ballot(APPROVE, DC_ADMIN, "gpu-dc", digest=b"\x01" * 32), FED,
     Code.INVALID_ARGUMENT, "digest does not match"),
    ("approve by a non-admin", proposed(), ballot(APPROVE, b"o" * 16, "gpu-dc", admin=False), FED,
     Code.PERMISSION_DENIED, "only an admin"),
    ("veto by a non-admin", proposed(), ballot(VETO, b"o" * 16, "gpu-dc", admin=False), FED,
     Code.PERMISSION_DENIED, "only an admin"),
    ("approve by an admin of a member pool", proposed(), ballot(APPROVE, EDGE_ADMIN, "edge"), FED,
     Code.PERMISSION_DENIED, "edge is not a voter pool"),
    ("veto by an admin of a member pool", proposed(), ballot(VETO, EDGE_ADMIN, "edge"), FED,
     Code.PERMISSION_DENIED, "not a voter pool"),
    ("approve by the key the command rotates", ROTATING_DC, ballot(APPROVE, DC_ADMIN, "gpu-dc"), FED,
     Code.PERMISSION_DENIED, "revokes or rotates out"),
    ("veto by the key the command revokes", ROTATING_DC, ballot(VETO, DC_ADMIN, "gpu-dc"), FED,
     Code.PERMISSION_DENIED, "may not vote on it"),
    ("approve by another admin of that pool", ROTATING_DC, ballot(APPROVE, b"D" * 16, "gpu-dc"), FED, None, ""),
    ("approve twice by the proposer's pool", proposed(), ballot(APPROVE, b"H" * 16, "hq"), FED,
     Code.ALREADY_EXISTS, "pool hq already approved"),
    ("approve twice by one pool", DC_APPROVED, ballot(APPROVE, b"D" * 16, "gpu-dc"), FED,
     Code.ALREADY_EXISTS, "gpu-dc already approved"),
    ("veto by a pool that approved", DC_APPROVED, ballot(VETO, DC_ADMIN, "gpu-dc"), FED, None, ""),
    ("approve by an admin of a DOWN pool", proposed(), ballot(APPROVE, CPU_ADMIN, "cpu-branch"), CPU_DOWN, None, ""),
    ("veto by an admin of a DOWN pool", proposed(), ballot(VETO, CPU_ADMIN, "cpu-branch"), CPU_DOWN, None, ""),
    ("break-glass with every pool up and staffed", DC_APPROVED, ballot(BREAK, HQ_ADMIN, "hq"), FED,
     Code.FAILED_PRECONDITION, "degraded mode only"),
    ("break-glass with a live pool missing", proposed(), ballot(BREAK, HQ_ADMIN, "hq"), CPU_DOWN,
     Code.FAILED_PRECONDITION, "still waiting for the approval of gpu-dc"),
    ("break-glass: the missing pool is DOWN", DC_APPROVED, ballot(BREAK, HQ_ADMIN, "hq"), CPU_DOWN, None, ""),
    ("break-glass: the missing pool has no admin who may vote", DC_APPROVED, ballot(BREAK, HQ_ADMIN, "hq"),
     Federation(VOTERS, without_admin=frozenset({"cpu-branch"})), None, ""),
    ("break-glass submitted by an admin of a member pool", DC_APPROVED, ballot(BREAK, EDGE_ADMIN, "edge"), CPU_DOWN,
     None, ""),
    ("break-glass once expired", DC_APPROVED, ballot(BREAK, HQ_ADMIN, "hq", now=EXPIRES), CPU_DOWN,
     Code.DEADLINE_EXCEEDED, "expired"),
    ("break-glass after execution", EXECUTED, ballot(BREAK, HQ_ADMIN, "hq"), CPU_DOWN,
     Code.FAILED_PRECONDITION, "already executed"),
]


@pytest.mark.parametrize(("op", "vote", "fed", "code", "fragment"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_vote_rules(op: PendingOp, vote: Ballot, fed: Federation, code: Code | None, fragment: str) -> None:
    refusal = ap.judge(op, vote, fed)
    if code is None:
        assert refusal is None
    else:
        assert refusal is not None and refusal[0] == code and fragment in refusal[1], refusal


def test_the_rules_table_names_each_rule_once() -> None:
    names = [r.name for r in ap.VOTE_RULES]
    assert len(names) == len(set(names))


def test_the_proposers_pool_counts_as_approved_and_the_others_are_awaited() -> None:
    op = proposed()
    assert [v.pool for v in op.approvals] == ["hq"] and op.expires_ms == EXPIRES
    assert ap.waiting_for(op, FED) == ("cpu-branch", "gpu-dc") and not ap.ready(op, FED)
    member = ap.propose(PID, "unpair", DIGEST, ap.Proposer(EDGE_ADMIN, "edge", "e", "admin", b""), index=1,
                        now_ms=0, expiry_ms=10, removed_keys=(), fed=FED)
    assert member.approvals == ()  # an admin of a member pool may propose; its pool does not vote


def test_it_executes_when_every_voter_pool_approved() -> None:
    op = proposed()
    step = ap.approve(op, ballot(APPROVE, DC_ADMIN, "gpu-dc"), FED, 11)
    assert isinstance(step, PendingOp) and not ap.ready(step, FED)
    done = ap.approve(step, ballot(APPROVE, CPU_ADMIN, "cpu-branch"), FED, 12)
    assert isinstance(done, PendingOp) and ap.ready(done, FED)
    assert [v.pool for v in done.approvals] == list(VOTERS)
    closed = ap.executed(done, 12, b"result")
    assert (closed.status, closed.closed_index, closed.result) == (Status.EXECUTED, 12, b"result")


def test_a_down_pool_does_not_excuse_an_ordinary_approval() -> None:
    step = ap.approve(proposed(), ballot(APPROVE, DC_ADMIN, "gpu-dc"), CPU_DOWN, 11)
    assert isinstance(step, PendingOp) and not ap.ready(step, CPU_DOWN)
    assert ap.excused(step, CPU_DOWN) == (("cpu-branch", "down"),)


def test_a_veto_closes_it_with_the_reason() -> None:
    out = ap.veto(proposed(), replace(ballot(VETO, DC_ADMIN, "gpu-dc"), reason="not now"), FED, 11)
    assert isinstance(out, PendingOp)
    assert (out.status, out.closed_index, out.veto) == (Status.VETOED, 11, Vote("gpu-dc", DC_ADMIN, 11, "not now"))
    assert not ap.ready(out, FED)


def test_break_glass_records_the_override_and_makes_it_ready() -> None:
    out = ap.break_glass(DC_APPROVED, ballot(BREAK, HQ_ADMIN, "hq"), CPU_DOWN, 14)
    assert isinstance(out, PendingOp) and ap.ready(out, CPU_DOWN)
    assert out.override == ap.Override(14, HQ_ADMIN, (("cpu-branch", "down"),))


def test_expiry() -> None:
    assert ap.expire(proposed(), EXPIRES - 1, 20) is None
    expired = ap.expire(proposed(), EXPIRES, 20)
    assert expired is not None and (expired.status, expired.closed_index) == (Status.EXPIRED, 20)
    assert ap.expire(EXECUTED, EXPIRES + 1, 21) is None  # only open operations expire


@pytest.mark.parametrize(("admins", "removed", "expected"), [
    ([(HQ_ADMIN, "hq"), (DC_ADMIN, "gpu-dc"), (CPU_ADMIN, "cpu-branch")], [], set()),
    ([(HQ_ADMIN, "hq"), (DC_ADMIN, "gpu-dc")], [], {"cpu-branch"}),               # all revoked
    ([(HQ_ADMIN, "hq"), (DC_ADMIN, "gpu-dc"), (CPU_ADMIN, "cpu-branch")], [DC_ADMIN], {"gpu-dc"}),  # its only admin
    ([(HQ_ADMIN, "hq"), (DC_ADMIN, "gpu-dc"), (b"D" * 16, "gpu-dc"), (CPU_ADMIN, "cpu-branch")], [DC_ADMIN], set()),
], ids=["all staffed", "all keys revoked", "only admin removed by the command", "another admin left"])
def test_pools_without_an_admin_who_may_vote(admins: list[tuple[bytes, str]], removed: list[bytes],
                                             expected: set[str]) -> None:
    assert ap.pools_without_admin(VOTERS, admins, removed) == frozenset(expected)
