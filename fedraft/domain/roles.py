"""Roles and who may issue what (SPEC §5). Rules as data, read top to bottom."""

from __future__ import annotations

from enum import IntEnum


class Role(IntEnum):
    """Ordered: submitter < operator < admin. `node` is a separate kind, not a rank above admin."""

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


# command name -> the roles that may issue it
PERMITTED: dict[str, frozenset[Role]] = {
    "put": frozenset({Role.OPERATOR, Role.ADMIN}),
    "delete": frozenset({Role.OPERATOR, Role.ADMIN}),
    "compare_and_set": frozenset({Role.OPERATOR, Role.ADMIN}),
    "barrier": frozenset({Role.NODE}),
}


def may_issue(role: Role, command_name: str) -> bool:
    return role in PERMITTED.get(command_name, frozenset())
