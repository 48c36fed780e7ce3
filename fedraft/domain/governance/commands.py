"""Governance commands (SPEC §5, §6): pairing, principals, member pools, trust, policy, apply version,
and the votes on critical operations (Approve, Veto, BreakGlass).

Every command here is issued by an admin. The critical ones wait as pending operations until an admin
of every voter pool approved them (see approvals.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fedraft.domain.commands import ADMIN_ONLY, Command
from fedraft.domain.governance.policy import settings_problem
from fedraft.domain.placement.commands import name_problem
from fedraft.domain.placement.model import Trust
from fedraft.domain.roles import Role

PUBLIC_KEY_LEN = 32
KEY_ID_LEN = 16
DIGEST_LEN = 32
SIGNATURE_LEN = 64
MAX_REASON = 512
MAX_APPLY_VERSION = 65_535
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


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


# ---- critical operations ----

@dataclass(frozen=True)
class AddPrincipal(Command):
    NAME: ClassVar[str] = "add_principal"
    ROLES: ClassVar[frozenset[Role]] = ADMIN_ONLY
    CRITICAL: ClassVar[bool] = True
    public_key: bytes
    pool: str
    role: Role
    name: str


@dataclass(frozen=True)
class RevokePrincipal(Command):
    NAME: ClassVar[str] = "revoke_principal"
    ROLES: ClassVar[frozenset[Role]] = ADMIN_ONLY
    CRITICAL: ClassVar[bool] = True
    key_id: bytes


@dataclass(frozen=True)
class RotateKey(Command):
    """Replace a principal's key: same pool, role and name; the old key is refused from then on."""

    NAME: ClassVar[str] = "rotate_key"
    ROLES: ClassVar[frozenset[Role]] = ADMIN_ONLY
    CRITICAL: ClassVar[bool] = True
    key_id: bytes
    new_public_key: bytes


@dataclass(frozen=True)
class RegisterPool(Command):
    """A member pool (not a voter) and its agent's key (role node)."""

    NAME: ClassVar[str] = "register_pool"
    ROLES: ClassVar[frozenset[Role]] = ADMIN_ONLY
    CRITICAL: ClassVar[bool] = True
    pool: str
    region: str
    tier: str
    agent_public_key: bytes


@dataclass(frozen=True)
class RetirePool(Command):
    NAME: ClassVar[str] = "retire_pool"
    ROLES: ClassVar[frozenset[Role]] = ADMIN_ONLY
    CRITICAL: ClassVar[bool] = True
    pool: str


@dataclass(frozen=True)
class SetTrust(Command):
    """Change an active pairing's trust level, in both directions."""

    NAME: ClassVar[str] = "set_trust"
    ROLES: ClassVar[frozenset[Role]] = ADMIN_ONLY
    CRITICAL: ClassVar[bool] = True
    pool_a: str
    pool_b: str
    trust: Trust


@dataclass(frozen=True)
class Unpair(Command):
    NAME: ClassVar[str] = "unpair"
    ROLES: ClassVar[frozenset[Role]] = ADMIN_ONLY
    CRITICAL: ClassVar[bool] = True
    pool_a: str
    pool_b: str


@dataclass(frozen=True)
class SetPolicy(Command):
    """Change some policy settings (key, value), sorted by key; the others keep their values."""

    NAME: ClassVar[str] = "set_policy"
    ROLES: ClassVar[frozenset[Role]] = ADMIN_ONLY
    CRITICAL: ClassVar[bool] = True
    settings: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class SetApplyVersion(Command):
    """SPEC D16: the apply rules every node uses from the next envelope on."""

    NAME: ClassVar[str] = "set_apply_version"
    ROLES: ClassVar[frozenset[Role]] = ADMIN_ONLY
    CRITICAL: ClassVar[bool] = True
    version: int


# ---- votes on critical operations ----

@dataclass(frozen=True)
class Approve(Command):
    NAME: ClassVar[str] = "approve"
    ROLES: ClassVar[frozenset[Role]] = ADMIN_ONLY
    pending_id: bytes
    command_digest: bytes


@dataclass(frozen=True)
class Veto(Command):
    NAME: ClassVar[str] = "veto"
    ROLES: ClassVar[frozenset[Role]] = ADMIN_ONLY
    pending_id: bytes
    command_digest: bytes
    reason: str


@dataclass(frozen=True)
class BreakGlass(Command):
    """Carries the break-glass key's signature over a pending id (degraded mode, SPEC §6)."""

    NAME: ClassVar[str] = "break_glass"
    ROLES: ClassVar[frozenset[Role]] = ADMIN_ONLY
    pending_id: bytes
    signature: bytes


CRITICAL_COMMANDS = (AddPrincipal, RevokePrincipal, RotateKey, RegisterPool, RetirePool, SetTrust, Unpair,
                     SetPolicy, SetApplyVersion)
VOTES = (Approve, Veto, BreakGlass)


def removed_keys(command: Command) -> frozenset[bytes]:
    """The keys a command revokes or rotates out: they may not vote on it (SPEC §6)."""
    if isinstance(command, RevokePrincipal | RotateKey):
        return frozenset({command.key_id})
    return frozenset()


def principal_name_problem(value: str) -> str | None:
    if not 0 < len(value) <= 64 or not set(value) <= _NAME_CHARS:
        return f"principal name {value!r} must be 1-64 ASCII letters, digits, '-', '_' or '.'"
    return None


def _size(what: str, value: bytes, size: int) -> str | None:
    return None if len(value) == size else f"{what} must be {size} bytes, got {len(value)}"


def _pools(*pools: str) -> str | None:
    for pool in pools:
        problem = name_problem("pool", pool)
        if problem is not None:
            return problem
    return None


def static_problem(command: Command) -> str | None:
    """What is wrong with a governance command regardless of state."""
    if isinstance(command, PairOffer):
        return _pools(command.to_pool)
    if isinstance(command, PairAccept):
        return _pools(command.from_pool)
    if isinstance(command, AddPrincipal):
        return (_size("public key", command.public_key, PUBLIC_KEY_LEN) or _pools(command.pool)
                or principal_name_problem(command.name))
    if isinstance(command, RevokePrincipal):
        return _size("key id", command.key_id, KEY_ID_LEN)
    if isinstance(command, RotateKey):
        return (_size("key id", command.key_id, KEY_ID_LEN)
                or _size("new public key", command.new_public_key, PUBLIC_KEY_LEN))
    if isinstance(command, RegisterPool):
        return (_pools(command.pool) or _optional_name("region", command.region)
                or _optional_name("tier", command.tier)
                or _size("agent public key", command.agent_public_key, PUBLIC_KEY_LEN))
    if isinstance(command, RetirePool):
        return _pools(command.pool)
    if isinstance(command, SetTrust | Unpair):
        problem = _pools(command.pool_a, command.pool_b)
        if problem is None and command.pool_a == command.pool_b:
            problem = "name two different pools"
        if problem is None and isinstance(command, SetTrust) and command.trust == Trust.NONE:
            problem = "trust none would leave a pairing that carries nothing: unpair the pools instead"
        return problem
    if isinstance(command, SetPolicy):
        return settings_problem(command.settings)
    if isinstance(command, SetApplyVersion):
        if not 1 <= command.version <= MAX_APPLY_VERSION:
            return f"apply version must be 1..{MAX_APPLY_VERSION}"
        return None
    if isinstance(command, Approve | Veto | BreakGlass):
        problem = _size("pending id", command.pending_id, DIGEST_LEN)
        if problem is None and isinstance(command, Approve | Veto):
            problem = _size("command digest", command.command_digest, DIGEST_LEN)
        if problem is None and isinstance(command, Veto) and not 0 < len(command.reason) <= MAX_REASON:
            problem = f"a veto needs a reason of 1-{MAX_REASON} characters"
        if problem is None and isinstance(command, BreakGlass):
            problem = _size("break-glass signature", command.signature, SIGNATURE_LEN)
        return problem
    return None


def _optional_name(what: str, value: str) -> str | None:
    return name_problem(what, value) if value else None
