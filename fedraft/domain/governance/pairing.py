"""Reciprocal pairing (SPEC §5): active only once both halves are in the log; zero default trust."""

from __future__ import annotations

from dataclasses import dataclass

from fedraft.domain.outcome import Code
from fedraft.domain.placement.model import Trust


@dataclass(frozen=True)
class Pairing:
    pool_a: str          # the lower id of the two
    pool_b: str
    trust: Trust
    offered_by: str
    active: bool = False


def pair_key(x: str, y: str) -> tuple[str, str]:
    return (x, y) if x < y else (y, x)


def offer(current: Pairing | None, by_pool: str, to_pool: str, trust: Trust) -> Pairing | tuple[Code, str]:
    if by_pool == to_pool:
        return Code.INVALID_ARGUMENT, "a pool cannot pair with itself"
    if trust == Trust.NONE:
        return Code.INVALID_ARGUMENT, "offer a trust level above none (unpairing is a critical operation)"
    if current is not None and current.active:
        return Code.ALREADY_EXISTS, f"{by_pool} and {to_pool} are already paired at {current.trust.label} " \
                                    "(changing trust is the critical SetTrust)"
    a, b = pair_key(by_pool, to_pool)
    return Pairing(a, b, trust, offered_by=by_pool)


def accept(current: Pairing | None, by_pool: str, from_pool: str) -> Pairing | tuple[Code, str]:
    if current is None or current.offered_by != from_pool:
        return Code.FAILED_PRECONDITION, f"no standing offer from {from_pool} to {by_pool}"
    if current.active:
        return Code.ALREADY_EXISTS, f"{from_pool} and {by_pool} are already paired"
    if by_pool not in (current.pool_a, current.pool_b):  # pragma: no cover - keyed by the pair
        return Code.PERMISSION_DENIED, "the offer names another pool"
    return Pairing(current.pool_a, current.pool_b, current.trust, current.offered_by, active=True)
