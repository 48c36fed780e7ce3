"""Wire forms of the governance area (proto/fedraft/v1/governance.proto): commands and stored records.

FROM_PB maps the name of a field of `GovernanceCommand`'s oneof to a decoder; TO_PB maps a domain
command class to an encoder filling `envelope.governance`.
"""

from __future__ import annotations

from collections.abc import Callable

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft._proto.fedraft.v1 import governance_pb2 as gpb
from fedraft.domain.commands import Command
from fedraft.domain.governance import commands as gc
from fedraft.domain.governance.pairing import Pairing
from fedraft.domain.placement.model import Trust
from fedraft.errors import DecodeError


def _trust(text: str) -> Trust:
    try:
        return Trust.parse(text)
    except ValueError as exc:
        raise DecodeError(str(exc)) from None


FROM_PB: dict[str, Callable[[pb.Envelope], Command]] = {
    "pair_offer": lambda env: gc.PairOffer(env.governance.pair_offer.to_pool,
                                           _trust(env.governance.pair_offer.trust)),
    "pair_accept": lambda env: gc.PairAccept(env.governance.pair_accept.from_pool),
}


def _offer_to(cmd: Command, env: pb.Envelope) -> None:
    assert isinstance(cmd, gc.PairOffer)
    env.governance.pair_offer.CopyFrom(gpb.PairOffer(to_pool=cmd.to_pool, trust=cmd.trust.label))


def _accept_to(cmd: Command, env: pb.Envelope) -> None:
    assert isinstance(cmd, gc.PairAccept)
    env.governance.pair_accept.from_pool = cmd.from_pool


TO_PB: dict[type[Command], Callable[[Command, pb.Envelope], None]] = {
    gc.PairOffer: _offer_to,
    gc.PairAccept: _accept_to,
}


def pairing_to_pb(p: Pairing) -> gpb.PairingRecord:
    return gpb.PairingRecord(pool_a=p.pool_a, pool_b=p.pool_b, trust=p.trust.label, offered_by=p.offered_by,
                             active=p.active)


def pairing_from_pb(r: gpb.PairingRecord) -> Pairing:
    return Pairing(r.pool_a, r.pool_b, _trust(r.trust), r.offered_by, r.active)
