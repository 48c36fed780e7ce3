"""Envelope command <-> domain command, dispatched to the area that owns each command."""

from __future__ import annotations

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.domain.commands import Command
from fedraft.errors import DecodeError
from fedraft.wire import core, governance, placement

_AREAS = {"governance": governance.FROM_PB, "placement": placement.FROM_PB}
_TO_PB = {**core.TO_PB, **governance.TO_PB, **placement.TO_PB}


def command_from_pb(env: pb.Envelope) -> Command:
    kind = env.WhichOneof("command")
    if kind in core.FROM_PB:
        return core.FROM_PB[kind](env)
    if kind in _AREAS:
        inner = getattr(env, kind).WhichOneof("command")
        decoder = _AREAS[kind].get(inner or "")
        if decoder is not None:
            return decoder(env)
        raise DecodeError(f"envelope carries an unknown {kind} command {inner!r}")
    raise DecodeError("envelope carries no known command")


def command_to_pb(command: Command, env: pb.Envelope) -> None:
    encoder = _TO_PB.get(type(command))
    if encoder is None:
        raise TypeError(f"no wire form for {type(command).__name__}")
    encoder(command, env)
