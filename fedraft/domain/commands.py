"""Commands as the domain sees them: small frozen values decoded from signed envelopes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Put:
    key: str
    value: bytes


@dataclass(frozen=True)
class Delete:
    key: str
    expected_version: int | None = None


@dataclass(frozen=True)
class CompareAndSet:
    key: str
    value: bytes
    expected_version: int


@dataclass(frozen=True)
class Barrier:
    sequence: int


Command = Put | Delete | CompareAndSet | Barrier

# Which command kinds are "registry writes" (used for role checks and limits).
REGISTRY_COMMANDS = (Put, Delete, CompareAndSet)


def command_name(command: Command) -> str:
    return {Put: "put", Delete: "delete", CompareAndSet: "compare_and_set", Barrier: "barrier"}[type(command)]
