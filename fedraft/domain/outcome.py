"""The result of one envelope at apply: a code (gRPC numbering) and a reason, returned as a value."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedraft.domain.registry import Record


class Code(IntEnum):
    OK = 0
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16


@dataclass(frozen=True)
class Outcome:
    code: Code
    message: str
    record: Record | None = None
    deleted: Record | None = None

    @property
    def ok(self) -> bool:
        return self.code == Code.OK
