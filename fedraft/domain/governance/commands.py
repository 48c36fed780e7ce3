"""Governance commands (SPEC §5, §6) that have landed: pairing between pools."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fedraft.domain.commands import ADMIN_ONLY, Command
from fedraft.domain.placement.model import Trust
from fedraft.domain.roles import Role


@dataclass(frozen=True)
class PairOffer(Command):
    """One half of a pairing, by an admin of the offering pool (the author's pool)."""

    NAME: ClassVar[str] = "pair_offer"
    ROLES: ClassVar[frozenset[Role]] = ADMIN_ONLY
    to_pool: str
    trust: Trust


@dataclass(frozen=True)
class PairAccept(Command):
    """The other half, by an admin of the pool the offer named."""

    NAME: ClassVar[str] = "pair_accept"
    ROLES: ClassVar[frozenset[Role]] = ADMIN_ONLY
    from_pool: str
