"""Memories: replicated encrypted data (SPEC §5, D12; docs/decisions/0009-memories-and-fanout.md).

A memory belongs to its author's pool. Its value is sealed by the client, before signing, to every
pool that qualifies for its data class: the memory's own pool, and each pool whose *active* pairing
with it has a trust at least the class's level (zero default trust) — among those, the pools that
have a key to seal to. Apply checks, from the state at that index, that the envelope carries a box
for exactly those pools, each sealed to the pool's current key; nodes never seal (sealed boxes are
randomized: sealing at apply would make the nodes diverge). A pool below the level gets no box.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar

from fedraft.domain.commands import ANY_HUMAN, Command
from fedraft.domain.governance.pairing import Pairing
from fedraft.domain.outcome import Code
from fedraft.domain.placement.commands import name_problem
from fedraft.domain.placement.model import Trust
from fedraft.domain.roles import Role

MAX_KEY_CHARS = 256
MAX_VALUE_BYTES = 64 * 1024            # the plaintext value
BOX_OVERHEAD = 48                      # crypto_box_seal: ephemeral public key (32) + MAC (16)
MAX_SEALED_TOTAL = 512 * 1024          # all boxes of one PutMemory (a log entry is at most 1 MiB)
MAX_BOXES = 64
KEY_ID_LEN = 16
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]*")


@dataclass(frozen=True, order=True)
class Sealed:
    """One pool's box: a sealed box to the X25519 form of the pool's Ed25519 key `key_id`."""

    pool: str
    key_id: bytes
    box: bytes


@dataclass(frozen=True)
class PutMemory(Command):
    """Create or replace a memory of the author's pool (submitter+)."""

    NAME: ClassVar[str] = "put_memory"
    ROLES: ClassVar[frozenset[Role]] = ANY_HUMAN
    key: str
    data_class: str
    sealed: tuple[Sealed, ...]
    expected_version: int | None = None  # 0: must not exist


@dataclass(frozen=True)
class DeleteMemory(Command):
    NAME: ClassVar[str] = "delete_memory"
    ROLES: ClassVar[frozenset[Role]] = ANY_HUMAN
    key: str
    expected_version: int | None = None


@dataclass(frozen=True)
class PoolKey:
    """The key a pool's boxes are sealed to: its voter node's key, or its member agent's key."""

    pool: str
    key_id: bytes
    public_key: bytes  # Ed25519


@dataclass(frozen=True)
class Recipient:
    pool: str
    key: PoolKey
    trust: str  # "self" or the pairing's level


@dataclass(frozen=True)
class Recipients:
    """Who receives a value of one class from one pool, and why the other paired pools do not."""

    pool: str
    level: Trust
    recipients: tuple[Recipient, ...]   # sorted by pool
    excluded: tuple[str, ...]           # "pool: why"

    def pools(self) -> tuple[str, ...]:
        return tuple(r.pool for r in self.recipients)


def _varint_len(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def _field_len(n: int) -> int:
    """A length-delimited protobuf field (tag < 16) of n bytes; proto3 leaves an empty one out."""
    return 1 + _varint_len(n) + n if n else 0


def max_box_bytes(key: str, pool: str) -> int:
    """The largest box of memory `key` of `pool`: a sealed MemoryPlaintext {key, owner_pool, value} with
    a value of MAX_VALUE_BYTES (memory.proto), plus the box's overhead."""
    return (BOX_OVERHEAD + _field_len(len(key.encode())) + _field_len(len(pool.encode()))
            + _field_len(MAX_VALUE_BYTES))


def key_problem(key: str) -> str | None:
    if not 0 < len(key) <= MAX_KEY_CHARS or not _KEY.fullmatch(key) or "//" in key or key.endswith("/"):
        return (f"memory key {key[:80]!r} must be 1-{MAX_KEY_CHARS} characters of letters, digits, '.', '_', "
                "':', '/' or '-', starting with a letter or digit, without '//' or a trailing '/'")
    return None


def static_problem(command: Command) -> str | None:
    """What is wrong with a memory command regardless of state."""
    if isinstance(command, DeleteMemory):
        return key_problem(command.key)
    if not isinstance(command, PutMemory):
        return None
    problem = key_problem(command.key) or name_problem("data class", command.data_class)
    if problem is not None:
        return problem
    if not command.sealed:
        return "a memory needs at least one sealed value (its own pool's)"
    if len(command.sealed) > MAX_BOXES:
        return f"at most {MAX_BOXES} sealed values"
    pools = [s.pool for s in command.sealed]
    if pools != sorted(set(pools)):
        return "sealed values must be sorted by pool, one per pool"
    for s in command.sealed:
        problem = name_problem("pool", s.pool)
        if problem is not None:
            return problem
        if len(s.key_id) != KEY_ID_LEN:
            return f"the sealed value for {s.pool} names a key id of {len(s.key_id)} bytes, not {KEY_ID_LEN}"
        if not BOX_OVERHEAD < len(s.box) <= max_box_bytes(command.key, "p" * 63):  # exact at apply
            return box_size_problem(s.pool, len(s.box))
    if len({len(s.box) for s in command.sealed}) != 1:
        return "the sealed values differ in size: every pool's box seals the same plaintext"
    total = sum(len(s.box) for s in command.sealed)
    if total > MAX_SEALED_TOTAL:
        return (f"the sealed values total {total} bytes, over {MAX_SEALED_TOTAL}: a smaller value, or a class "
                "that fewer pools receive")
    return None


def box_size_problem(pool: str, size: int) -> str:
    return f"the sealed value for {pool} has {size} bytes; a box holds a value of at most {MAX_VALUE_BYTES} bytes"


def recipients(pool: str, level: Trust, pairings: Iterable[Pairing], keys: Mapping[str, PoolKey],
               registered: frozenset[str]) -> Recipients:
    """The pools a value of a class at `level` from `pool` is sealed to: the pool itself, and every
    registered pool whose active pairing with it is trusted at `level` or more; each needs a key."""
    chosen: list[Recipient] = []
    excluded: list[str] = []

    def take(other: str, trust: str) -> None:
        key = keys.get(other)
        if key is None:
            excluded.append(f"{other}: has no key to seal to (no voter node or current agent key)")
        else:
            chosen.append(Recipient(other, key, trust))

    take(pool, "self")
    for p in pairings:
        if pool not in (p.pool_a, p.pool_b):
            continue
        other = p.pool_b if p.pool_a == pool else p.pool_a
        if not p.active:
            excluded.append(f"{other}: the pairing is only offered (both halves are needed)")
        elif other not in registered:
            excluded.append(f"{other}: not registered")
        elif p.trust < level:
            excluded.append(f"{other}: trusted at {p.trust.label}, below {level.label}")
        else:
            take(other, p.trust.label)
    return Recipients(pool, level, tuple(sorted(chosen, key=lambda r: r.pool)), tuple(sorted(excluded)))


def sealed_problem(sealed: tuple[Sealed, ...], wanted: Recipients, data_class: str) -> tuple[Code, str] | None:
    """Whether the boxes go to exactly the qualifying pools, each sealed to its current key."""
    qualifying = {r.pool: r for r in wanted.recipients}
    have = {s.pool: s for s in sealed}
    extra = sorted(set(have) - set(qualifying))
    if extra:
        why = {line.split(":", 1)[0]: line for line in wanted.excluded}
        reasons = "; ".join(why.get(p, f"{p}: not paired with {wanted.pool}") for p in extra)
        return (Code.PERMISSION_DENIED,
                f"sealed values for {', '.join(extra)}, which may not receive class {data_class} "
                f"({wanted.level.label}) from {wanted.pool}: {reasons}")
    missing = sorted(set(qualifying) - set(have))
    if missing:
        return (Code.FAILED_PRECONDITION,
                f"no sealed value for {', '.join(missing)}, which qualify for class {data_class} "
                f"({wanted.level.label}) from {wanted.pool}: seal to the current recipients and put again")
    for pool, s in sorted(have.items()):
        current = qualifying[pool].key.key_id
        if s.key_id != current:
            return (Code.FAILED_PRECONDITION,
                    f"the sealed value for {pool} is sealed to key {s.key_id.hex()}, but {pool}'s key is now "
                    f"{current.hex()}: seal to the current recipients and put again")
    return None


def version_problem(expected: int | None, current: int) -> tuple[Code, str] | None:
    if expected is None or expected == current:
        return None
    if expected == 0:
        return Code.FAILED_PRECONDITION, f"the memory exists (version {current}); expected none"
    if current == 0:
        return Code.FAILED_PRECONDITION, f"the memory does not exist; expected version {expected}"
    return Code.FAILED_PRECONDITION, f"the memory is at version {current}, not {expected}"
