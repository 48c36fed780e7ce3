"""Wire forms of memories (proto/fedraft/v1/memory.proto). The commands travel in GovernanceCommand's
oneof, so wire/governance.py merges FROM_PB and TO_PB."""

from __future__ import annotations

from collections.abc import Callable

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft._proto.fedraft.v1 import memory_pb2 as mpb
from fedraft.domain.commands import Command
from fedraft.domain.governance import memories as mem


def sealed_to_pb(s: mem.Sealed) -> mpb.SealedValue:
    return mpb.SealedValue(pool=s.pool, key_id=s.key_id, box=s.box)


def sealed_from_pb(m: mpb.SealedValue) -> mem.Sealed:
    return mem.Sealed(m.pool, bytes(m.key_id), bytes(m.box))


def _put(env: pb.Envelope) -> Command:
    m = env.governance.put_memory
    return mem.PutMemory(m.key, m.data_class, tuple(sealed_from_pb(s) for s in m.sealed),
                         m.expected_version if m.HasField("expected_version") else None)


def _delete(env: pb.Envelope) -> Command:
    m = env.governance.delete_memory
    return mem.DeleteMemory(m.key, m.expected_version if m.HasField("expected_version") else None)


FROM_PB: dict[str, Callable[[pb.Envelope], Command]] = {"put_memory": _put, "delete_memory": _delete}


def _to(cmd: Command, env: pb.Envelope) -> None:
    g = env.governance
    if isinstance(cmd, mem.PutMemory):
        g.put_memory.CopyFrom(mpb.PutMemory(key=cmd.key, data_class=cmd.data_class,
                                            sealed=[sealed_to_pb(s) for s in cmd.sealed]))
        if cmd.expected_version is not None:
            g.put_memory.expected_version = cmd.expected_version
    elif isinstance(cmd, mem.DeleteMemory):
        g.delete_memory.CopyFrom(mpb.DeleteMemory(key=cmd.key))
        if cmd.expected_version is not None:
            g.delete_memory.expected_version = cmd.expected_version
    else:  # pragma: no cover - TO_PB lists exactly the classes above
        raise TypeError(type(cmd).__name__)


TO_PB: dict[type[Command], Callable[[Command, pb.Envelope], None]] = {mem.PutMemory: _to, mem.DeleteMemory: _to}
