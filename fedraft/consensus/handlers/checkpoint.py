"""Apply rule of Cosign (SPEC §4): a voter node's signature over a checkpoint this state recorded.

A Cosign is accepted only if the state recorded a checkpoint at its index with the same chain head
and state digest (apply computed them on this node at that index: a node whose state diverged signs
a digest the others do not have, and its Cosign is refused here with both digests named), if the
author is a genesis voter node (a member pool's agent also has the node role) and if the signature
verifies under the author's key. A node's second Cosign of one checkpoint changes nothing. The
checkpoint is complete when a majority of the genesis voters cosigned it.
"""

from __future__ import annotations

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.consensus.handlers.context import ApplyContext, Rule
from fedraft.crypto.checkpoint import HASH_LEN, majority, verify_cosignature
from fedraft.crypto.signing import SIG_LEN
from fedraft.domain import commands as c
from fedraft.domain.outcome import Code
from fedraft.errors import SignatureError
from fedraft.storage import checkpoint_schema


def _check(command: c.Command) -> str | None:
    assert isinstance(command, c.Cosign)
    if command.index <= 0:
        return "a checkpoint index is positive"
    if len(command.chain_head) != HASH_LEN or len(command.state_digest) != HASH_LEN:
        return f"chain head and state digest have {HASH_LEN} bytes"
    if len(command.signature) != SIG_LEN:
        return f"a cosignature has {SIG_LEN} bytes"
    return None


def _cosign(ctx: ApplyContext, command: c.Command) -> pb.Result:
    assert isinstance(command, c.Cosign)
    node_id = ctx.principal.name
    voter = ctx.genesis.voter(node_id)
    if voter is None or voter.pool != ctx.principal.pool:
        return ctx.refuse(Code.PERMISSION_DENIED, f"{node_id} is not a voter node: only voters cosign checkpoints")
    record = checkpoint_schema.get(ctx.st, command.index)
    if record is None:
        return ctx.refuse(Code.FAILED_PRECONDITION, f"no checkpoint at index {command.index}")
    if bytes(record.chain_head) != command.chain_head or bytes(record.state_digest) != command.state_digest:
        return ctx.refuse(Code.FAILED_PRECONDITION,
                          f"{node_id}'s checkpoint {command.index} differs from this state's: chain head "
                          f"{command.chain_head.hex()[:16]} vs {bytes(record.chain_head).hex()[:16]}, state digest "
                          f"{command.state_digest.hex()[:16]} vs {bytes(record.state_digest).hex()[:16]}")
    try:
        verify_cosignature(bytes(ctx.principal.public_key), ctx.genesis.cluster_id, command.index,
                           command.chain_head, command.state_digest, command.signature)
    except SignatureError:
        return ctx.refuse(Code.UNAUTHENTICATED,
                          f"{node_id}'s cosignature of checkpoint {command.index} does not verify")
    signed = {s.node_id for s in record.cosignatures}
    needed = majority(len(ctx.genesis.voters))
    if node_id in signed:
        return ctx.result(message=f"{node_id} cosigned checkpoint {command.index} before")
    record.cosignatures.append(pb.Cosignature(node_id=node_id, public_key=bytes(ctx.principal.public_key),
                                              signature=command.signature, log_index=ctx.index))
    signed.add(node_id)
    if not record.complete_index and len(signed) >= needed:
        record.complete_index = ctx.index
    checkpoint_schema.put(ctx.st, record)
    state = "complete" if record.complete_index else f"{len(signed)} of {needed} needed"
    return ctx.result(message=f"checkpoint {command.index}: {state}")


RULES: dict[type[c.Command], Rule] = {c.Cosign: Rule(_cosign, _check)}
