"""Wire forms of the core commands: the registry, barriers and ticks."""

from __future__ import annotations

from collections.abc import Callable

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.domain import commands as c


def _put(env: pb.Envelope) -> c.Command:
    return c.Put(env.put.key, env.put.value)


def _delete(env: pb.Envelope) -> c.Command:
    d = env.delete
    return c.Delete(d.key, d.expected_version if d.HasField("expected_version") else None)


def _cas(env: pb.Envelope) -> c.Command:
    s = env.compare_and_set
    return c.CompareAndSet(s.key, s.value, s.expected_version)


FROM_PB: dict[str, Callable[[pb.Envelope], c.Command]] = {
    "put": _put,
    "delete": _delete,
    "compare_and_set": _cas,
    "barrier": lambda env: c.Barrier(env.barrier.sequence),
    "tick": lambda env: c.Tick(env.tick.due_ms),
    "cosign": lambda env: c.Cosign(env.cosign.index, bytes(env.cosign.chain_head), bytes(env.cosign.state_digest),
                                   bytes(env.cosign.signature)),
}


def _put_to(cmd: c.Command, env: pb.Envelope) -> None:
    assert isinstance(cmd, c.Put)
    env.put.key, env.put.value = cmd.key, cmd.value


def _delete_to(cmd: c.Command, env: pb.Envelope) -> None:
    assert isinstance(cmd, c.Delete)
    env.delete.key = cmd.key
    if cmd.expected_version is not None:
        env.delete.expected_version = cmd.expected_version


def _cas_to(cmd: c.Command, env: pb.Envelope) -> None:
    assert isinstance(cmd, c.CompareAndSet)
    cas = env.compare_and_set
    cas.key, cas.value, cas.expected_version = cmd.key, cmd.value, cmd.expected_version


def _barrier_to(cmd: c.Command, env: pb.Envelope) -> None:
    assert isinstance(cmd, c.Barrier)
    env.barrier.sequence = cmd.sequence


def _tick_to(cmd: c.Command, env: pb.Envelope) -> None:
    assert isinstance(cmd, c.Tick)
    env.tick.due_ms = cmd.due_ms


def _cosign_to(cmd: c.Command, env: pb.Envelope) -> None:
    assert isinstance(cmd, c.Cosign)
    env.cosign.CopyFrom(pb.Cosign(index=cmd.index, chain_head=cmd.chain_head, state_digest=cmd.state_digest,
                                  signature=cmd.signature))


TO_PB: dict[type[c.Command], Callable[[c.Command, pb.Envelope], None]] = {
    c.Put: _put_to,
    c.Delete: _delete_to,
    c.CompareAndSet: _cas_to,
    c.Barrier: _barrier_to,
    c.Tick: _tick_to,
    c.Cosign: _cosign_to,
}
