"""Who may ask whom in a cross-pool fan-out (SPEC §5 zero default trust; decision 0009).

A query is signed by a principal of its origin pool and names a trust level. The origin pool's node
sends it to each pool whose active pairing with the origin is trusted at that level or more; each of
those nodes checks, from its own replicated state, the facts below before it answers. The rules are
a table (FANOUT_RULES, top to bottom; the first that objects refuses). The signature, the nonce
cache and the clock are the service's; this module only judges the facts it is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fedraft.domain.governance.pairing import Pairing
from fedraft.domain.outcome import Code
from fedraft.domain.placement.model import Trust
from fedraft.domain.roles import Role

MAX_WINDOW_MS = 5 * 60 * 1000   # expires - issued
CLOCK_SKEW_MS = 30_000          # a query issued up to this far in the receiver's future is accepted
MAX_TEXT = 512
MAX_RESULTS = 50
NONCE_LEN = 16
HUMAN_ROLES = frozenset({Role.SUBMITTER.label, Role.OPERATOR.label, Role.ADMIN.label})


@dataclass(frozen=True)
class QueryFacts:
    """What a receiving (or the origin) node knows about one signed query."""

    author_known: bool
    author_name: str
    author_pool: str
    author_role: str
    author_revoked: str          # "" or why (e.g. "revoked by hq-admin at index 7")
    origin_pool: str             # as the query claims
    receiver_pool: str           # the pool of the node judging
    pairing: Pairing | None      # between origin and receiver (None when they are the same pool)
    level: str                   # as the query names it
    text: str
    issued_ms: int
    expires_ms: int
    now_ms: int
    nonce_len: int
    max_results: int


Rule = Callable[[QueryFacts], tuple[Code, str] | None]


def _author(f: QueryFacts) -> tuple[Code, str] | None:
    if not f.author_known:
        return Code.UNAUTHENTICATED, "the query's author key is not a principal of this federation"
    if f.author_revoked:
        return Code.UNAUTHENTICATED, f"the query's author key of {f.author_name} was {f.author_revoked}"
    return None


def _origin(f: QueryFacts) -> tuple[Code, str] | None:
    if f.author_pool != f.origin_pool:
        return (Code.PERMISSION_DENIED,
                f"{f.author_name} belongs to pool {f.author_pool}, not to the query's origin {f.origin_pool}")
    return None


def _role(f: QueryFacts) -> tuple[Code, str] | None:
    if f.author_role not in HUMAN_ROLES:
        return Code.PERMISSION_DENIED, f"a {f.author_role} principal may not author a fan-out query"
    return None


def _shape(f: QueryFacts) -> tuple[Code, str] | None:
    if f.level not in ("standard", "high", "max"):
        return Code.INVALID_ARGUMENT, f"query level {f.level!r} is not standard, high or max"
    if not 0 < len(f.text) <= MAX_TEXT or not f.text.strip():
        return Code.INVALID_ARGUMENT, f"query text must be 1-{MAX_TEXT} characters, not blank"
    if f.nonce_len != NONCE_LEN:
        return Code.INVALID_ARGUMENT, f"query nonce must be {NONCE_LEN} bytes"
    if f.max_results > MAX_RESULTS:
        return Code.INVALID_ARGUMENT, f"max_results is at most {MAX_RESULTS}"
    return None


def _window(f: QueryFacts) -> tuple[Code, str] | None:
    if not 0 < f.expires_ms - f.issued_ms <= MAX_WINDOW_MS:
        return Code.INVALID_ARGUMENT, f"a query is valid for 1 ms to {MAX_WINDOW_MS // 1000} s after it is issued"
    if f.issued_ms > f.now_ms + CLOCK_SKEW_MS:
        return Code.INVALID_ARGUMENT, "the query is issued in the future (check the author's clock)"
    if f.now_ms >= f.expires_ms:
        return Code.DEADLINE_EXCEEDED, f"the query expired {f.now_ms - f.expires_ms} ms ago"
    return None


def _pairing(f: QueryFacts) -> tuple[Code, str] | None:
    if f.receiver_pool == f.origin_pool:
        return None
    p = f.pairing
    if p is None or not p.active:
        state = "only offered" if p is not None else "not paired"
        return (Code.PERMISSION_DENIED,
                f"pool {f.origin_pool} is {state} with {f.receiver_pool}: zero default trust, no fan-out")
    if p.trust < Trust.parse(f.level):
        return (Code.PERMISSION_DENIED,
                f"{f.receiver_pool} trusts {f.origin_pool} at {p.trust.label}, below the query's level {f.level}")
    return None


# The first rule that objects refuses the query.
FANOUT_RULES: tuple[tuple[str, Rule], ...] = (
    ("author known and not revoked", _author),
    ("author belongs to the origin pool", _origin),
    ("author is a person (submitter, operator, admin)", _role),
    ("level, text, nonce and limits well formed", _shape),
    ("inside its validity window", _window),
    ("origin paired with the receiver at the query's level", _pairing),
)


def query_problem(facts: QueryFacts) -> tuple[Code, str] | None:
    for _name, rule in FANOUT_RULES:
        problem = rule(facts)
        if problem is not None:
            return problem
    return None


def targets(origin: str, level: Trust, pairings: list[Pairing]) -> tuple[list[tuple[str, Trust]], list[str]]:
    """The pools a query from `origin` at `level` goes to (pool, pairing trust), and the paired pools
    it skips ("pool: why"), both sorted by pool."""
    chosen: list[tuple[str, Trust]] = []
    skipped: list[str] = []
    for p in pairings:
        if origin not in (p.pool_a, p.pool_b):
            continue
        other = p.pool_b if p.pool_a == origin else p.pool_a
        if not p.active:
            skipped.append(f"{other}: the pairing is only offered")
        elif p.trust < level:
            skipped.append(f"{other}: trusted at {p.trust.label}, below {level.label}")
        else:
            chosen.append((other, p.trust))
    return sorted(chosen), sorted(skipped)
