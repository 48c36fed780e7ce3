"""The registry: versioned keys under /routes/ and /settings/ (SPEC D8, etcd's model).

Per key, `version` counts 1..n and resets on delete; `mod_revision` is (index, ordinal of the envelope
in its entry); CompareAndSet with expected version 0 means "must not exist".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from fedraft.domain.commands import CompareAndSet, Delete, Put
from fedraft.domain.outcome import Code, Outcome

PREFIXES = ("/routes/", "/settings/")
MAX_KEY_BYTES = 512
MAX_VALUE_BYTES = 4096
_CONTROL = re.compile("[\x00-\x1f\x7f]")


@dataclass(frozen=True, order=True)
class Revision:
    index: int
    ordinal: int


@dataclass(frozen=True)
class Record:
    key: str
    value: bytes
    version: int
    create_revision: Revision
    mod_revision: Revision


class RegistryView(Protocol):
    def registry_get(self, key: str) -> Record | None: ...


@dataclass(frozen=True)
class SetRecord:
    record: Record


@dataclass(frozen=True)
class RemoveRecord:
    key: str


RegistryWrite = SetRecord | RemoveRecord


def key_problem(key: str) -> str | None:
    if not key.startswith(PREFIXES):
        return f"registry keys live under {' or '.join(PREFIXES)}; got {key!r}"
    if key in PREFIXES:
        return "a key needs a name after its prefix"
    if len(key.encode()) > MAX_KEY_BYTES:
        return f"key longer than {MAX_KEY_BYTES} bytes"
    if _CONTROL.search(key):
        return "key contains control characters"
    return None


def value_problem(value: bytes) -> str | None:
    if len(value) > MAX_VALUE_BYTES:
        return f"value of {len(value)} bytes exceeds the {MAX_VALUE_BYTES}-byte limit"
    return None


def static_problem(command: Put | Delete | CompareAndSet) -> str | None:
    """What is wrong with the command regardless of state (checked at the API and at apply)."""
    problem = key_problem(command.key)
    if problem is None and isinstance(command, Put | CompareAndSet):
        problem = value_problem(command.value)
    return problem


def _written(view: RegistryView, key: str, value: bytes, rev: Revision) -> Record:
    old = view.registry_get(key)
    if old is None:
        return Record(key, value, 1, rev, rev)
    return Record(key, value, old.version + 1, old.create_revision, rev)


def apply(
    view: RegistryView, command: Put | Delete | CompareAndSet, rev: Revision
) -> tuple[Outcome, list[RegistryWrite]]:
    problem = static_problem(command)
    if problem is not None:
        return Outcome(Code.INVALID_ARGUMENT, problem), []
    if isinstance(command, Put):
        record = _written(view, command.key, command.value, rev)
        return Outcome(Code.OK, "", record=record), [SetRecord(record)]
    current = view.registry_get(command.key)
    current_version = current.version if current is not None else 0
    if isinstance(command, CompareAndSet):
        if current_version != command.expected_version:
            return Outcome(Code.FAILED_PRECONDITION,
                           f"version of {command.key} is {current_version}, expected {command.expected_version}",
                           record=current), []
        record = _written(view, command.key, command.value, rev)
        return Outcome(Code.OK, "", record=record), [SetRecord(record)]
    if command.expected_version is not None and current_version != command.expected_version:
        return Outcome(Code.FAILED_PRECONDITION,
                       f"version of {command.key} is {current_version}, expected {command.expected_version}",
                       record=current), []
    if current is None:
        return Outcome(Code.NOT_FOUND, f"{command.key} does not exist"), []
    return Outcome(Code.OK, "", deleted=current), [RemoveRecord(command.key)]
