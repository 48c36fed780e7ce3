"""Wire forms of the placement commands (proto/fedraft/v1/placement.proto).

FROM_PB maps the name of a field of `PlacementCommand`'s oneof to a decoder; TO_PB maps a domain
command class to an encoder filling `envelope.placement`.
"""

from __future__ import annotations

from collections.abc import Callable

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.domain.commands import Command

FROM_PB: dict[str, Callable[[pb.Envelope], Command]] = {}

TO_PB: dict[type[Command], Callable[[Command, pb.Envelope], None]] = {}
