"""Commands as the domain sees them: small frozen values decoded from signed envelopes.

Every command class names itself (`NAME`, used in messages and role checks), the roles that may
issue it (`ROLES`) and whether it is critical (`CRITICAL`: recorded as pending, executed only once
every voter pool approved, SPEC §6). Areas (governance, placement) define their commands in their
own modules on the same base; the wire layer maps each to its protobuf form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fedraft.domain.roles import Role

ANY_HUMAN = frozenset({Role.SUBMITTER, Role.OPERATOR, Role.ADMIN})
OPERATOR_UP = frozenset({Role.OPERATOR, Role.ADMIN})
ADMIN_ONLY = frozenset({Role.ADMIN})
NODE_ONLY = frozenset({Role.NODE})


@dataclass(frozen=True)
class Command:
    NAME: ClassVar[str] = "command"
    ROLES: ClassVar[frozenset[Role]] = frozenset()
    CRITICAL: ClassVar[bool] = False


@dataclass(frozen=True)
class Put(Command):
    NAME: ClassVar[str] = "put"
    ROLES: ClassVar[frozenset[Role]] = OPERATOR_UP
    key: str
    value: bytes


@dataclass(frozen=True)
class Delete(Command):
    NAME: ClassVar[str] = "delete"
    ROLES: ClassVar[frozenset[Role]] = OPERATOR_UP
    key: str
    expected_version: int | None = None


@dataclass(frozen=True)
class CompareAndSet(Command):
    NAME: ClassVar[str] = "compare_and_set"
    ROLES: ClassVar[frozenset[Role]] = OPERATOR_UP
    key: str
    value: bytes
    expected_version: int


@dataclass(frozen=True)
class Barrier(Command):
    """A no-op the leader appends to serve linearizable reads."""

    NAME: ClassVar[str] = "barrier"
    ROLES: ClassVar[frozenset[Role]] = NODE_ONLY
    sequence: int


@dataclass(frozen=True)
class Tick(Command):
    """The leader's clock reached a stored deadline (SPEC D6)."""

    NAME: ClassVar[str] = "tick"
    ROLES: ClassVar[frozenset[Role]] = NODE_ONLY
    due_ms: int = 0


@dataclass(frozen=True)
class Cosign(Command):
    """A node's signature over the checkpoint at `index` (SPEC §4): nodes only, never critical."""

    NAME: ClassVar[str] = "cosign"
    ROLES: ClassVar[frozenset[Role]] = NODE_ONLY
    index: int
    chain_head: bytes
    state_digest: bytes
    signature: bytes


RegistryCommand = Put | Delete | CompareAndSet
REGISTRY_COMMANDS = (Put, Delete, CompareAndSet)


def command_name(command: Command) -> str:
    return command.NAME
