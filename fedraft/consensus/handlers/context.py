"""What an area's apply handler gets: the state transaction and the facts of the envelope being applied."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.domain.commands import Command
from fedraft.domain.genesis import Genesis
from fedraft.domain.outcome import Code
from fedraft.storage.state import StateTxn


@dataclass
class EntryScope:
    """Lives for one entry: areas keep views they built from the state here, so the envelopes of one
    entry share them (each handler writes its changes through to the state as it goes)."""

    caches: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ApplyContext:
    st: StateTxn
    genesis: Genesis
    index: int
    ordinal: int
    now_ms: int              # effective time (SPEC D6)
    term_start_ms: int       # effective time of the current leader term's first entry (SPEC D7)
    key_id: bytes            # the author's key id
    request_id: bytes
    principal: pb.Principal  # the author as the state knew it when the envelope applied
    scope: EntryScope
    # The envelope as it appears in the log entry (a critical command's pending id is its hash). When a
    # critical command executes at its last approval, author and envelope are the proposal's.
    signed: pb.Signed | None = None

    def result(self, code: Code = Code.OK, message: str = "") -> pb.Result:
        return pb.Result(code=int(code), message=message, index=self.index, ordinal=self.ordinal)

    def refuse(self, code: Code, message: str) -> pb.Result:
        return self.result(code, message)


Handler = Callable[[ApplyContext, Command], pb.Result]
StaticCheck = Callable[[Command], str | None]


@dataclass(frozen=True)
class Rule:
    """How one command class applies; `check` is what is wrong with it regardless of state
    (run at the API and again at apply)."""

    apply: Handler
    check: StaticCheck | None = None


@dataclass(frozen=True)
class TickContext:
    st: StateTxn
    genesis: Genesis
    index: int
    now_ms: int
    term_start_ms: int
    scope: EntryScope
