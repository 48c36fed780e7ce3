"""Roles (SPEC §5). Which command a role may issue is declared on each command class (`ROLES`)."""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedraft.domain.commands import Command


class Role(IntEnum):
    """Ordered: submitter < operator < admin. `node` (a voter node or a member pool's agent) is a
    separate kind, not a rank above admin."""

    SUBMITTER = 1
    OPERATOR = 2
    ADMIN = 3
    NODE = 10

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r} (one of: node, admin, operator, submitter)") from None

    @property
    def label(self) -> str:
        return self.name.lower()


def may_issue(role: Role, command: Command) -> bool:
    return role in type(command).ROLES
