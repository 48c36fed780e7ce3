"""The fan-out rules (decision 0009) as a table: each row changes one fact of a good query and names the
code and reason the receiving node answers with."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fedraft.domain.governance.fanout import FANOUT_RULES, QueryFacts, query_problem, targets
from fedraft.domain.governance.pairing import Pairing
from fedraft.domain.outcome import Code
from fedraft.domain.placement.model import Trust

NOW = 1_800_000_000_000
GOOD = QueryFacts(author_known=True, author_name="alice", author_pool="hq", author_role="submitter",
                  author_revoked="", origin_pool="hq", receiver_pool="gpu-dc",
                  pairing=Pairing("gpu-dc", "hq", Trust.HIGH, "hq", active=True), level="high", text="gpu quota",
                  issued_ms=NOW - 1000, expires_ms=NOW + 59_000, now_ms=NOW, nonce_len=16, max_results=10)

ROWS = [
    ("unknown author", dict(author_known=False), Code.UNAUTHENTICATED, "not a principal"),
    ("revoked author", dict(author_revoked="revoked by hq-admin at index 7"), Code.UNAUTHENTICATED,
     "alice was revoked by hq-admin at index 7"),
    ("author of another pool", dict(author_pool="cpu-branch"), Code.PERMISSION_DENIED,
     "alice belongs to pool cpu-branch, not to the query's origin hq"),
    ("a node authors", dict(author_role="node"), Code.PERMISSION_DENIED, "a node principal may not author"),
    ("bad level", dict(level="none"), Code.INVALID_ARGUMENT, "not standard, high or max"),
    ("blank text", dict(text="   "), Code.INVALID_ARGUMENT, "1-512 characters"),
    ("long text", dict(text="x" * 513), Code.INVALID_ARGUMENT, "1-512 characters"),
    ("short nonce", dict(nonce_len=8), Code.INVALID_ARGUMENT, "nonce must be 16 bytes"),
    ("too many results", dict(max_results=51), Code.INVALID_ARGUMENT, "at most 50"),
    ("window too long", dict(expires_ms=NOW + 400_000), Code.INVALID_ARGUMENT, "1 ms to 300 s"),
    ("issued in the future", dict(issued_ms=NOW + 31_000, expires_ms=NOW + 60_000), Code.INVALID_ARGUMENT,
     "issued in the future"),
    ("expired", dict(issued_ms=NOW - 61_000, expires_ms=NOW - 1_000), Code.DEADLINE_EXCEEDED, "expired 1000 ms ago"),
    ("unpaired origin", dict(pairing=None), Code.PERMISSION_DENIED, "hq is not paired with gpu-dc"),
    ("offer only", dict(pairing=Pairing("gpu-dc", "hq", Trust.HIGH, "hq")), Code.PERMISSION_DENIED, "only offered"),
    ("trust too low", dict(pairing=Pairing("gpu-dc", "hq", Trust.STANDARD, "hq", active=True)),
     Code.PERMISSION_DENIED, "gpu-dc trusts hq at standard, below the query's level high"),
]


def test_a_good_query_passes_and_its_origin_node_needs_no_pairing() -> None:
    assert query_problem(GOOD) is None
    assert query_problem(replace(GOOD, receiver_pool="hq", pairing=None)) is None
    assert query_problem(replace(GOOD, level="standard")) is None  # a lower level than the pairing's: fine


@pytest.mark.parametrize(("change", "code", "fragment"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_each_rule_refuses_with_its_reason(change: dict[str, object], code: Code, fragment: str) -> None:
    problem = query_problem(replace(GOOD, **change))  # type: ignore[arg-type]
    assert problem is not None and problem[0] == code and fragment in problem[1], problem


def test_the_rules_are_named() -> None:
    assert next(name for name, _ in FANOUT_RULES) == "author known and not revoked"


def test_targets_are_the_pools_paired_at_the_level() -> None:
    pairings = [Pairing("gpu-dc", "hq", Trust.HIGH, "hq", active=True),
                Pairing("cpu-branch", "hq", Trust.STANDARD, "hq", active=True),
                Pairing("edge", "hq", Trust.MAX, "edge"),
                Pairing("cpu-branch", "gpu-dc", Trust.MAX, "gpu-dc", active=True)]
    assert targets("hq", Trust.HIGH, pairings) == (
        [("gpu-dc", Trust.HIGH)], ["cpu-branch: trusted at standard, below high", "edge: the pairing is only offered"])
    assert targets("hq", Trust.STANDARD, pairings)[0] == [("cpu-branch", Trust.STANDARD), ("gpu-dc", Trust.HIGH)]
