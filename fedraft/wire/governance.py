"""Wire forms of the governance area (proto/fedraft/v1/governance.proto): commands and stored records.

FROM_PB maps the name of a field of `GovernanceCommand`'s oneof to a decoder; TO_PB maps a domain
command class to an encoder filling `envelope.governance`. Memory commands (wire/memory.py) travel in
the same oneof and are merged in.
"""

from __future__ import annotations

from collections.abc import Callable

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft._proto.fedraft.v1 import governance_pb2 as gpb
from fedraft.domain.commands import Command
from fedraft.domain.governance import approvals as ap
from fedraft.domain.governance import commands as gc
from fedraft.domain.governance.pairing import Pairing
from fedraft.domain.governance.policy import (
    DEFAULT_CHECKPOINT_INTERVAL,
    DEFAULT_DATA_CLASSES,
    DataClass,
    GovernancePolicy,
)
from fedraft.domain.placement.model import Latency, Policy, Trust, Weights
from fedraft.domain.roles import Role
from fedraft.errors import DecodeError
from fedraft.wire import memory


def _trust(text: str) -> Trust:
    try:
        return Trust.parse(text)
    except ValueError as exc:
        raise DecodeError(str(exc)) from None


def _role(text: str) -> Role:
    try:
        return Role.parse(text)
    except ValueError as exc:
        raise DecodeError(str(exc)) from None


def _add_principal(env: pb.Envelope) -> Command:
    m = env.governance.add_principal
    return gc.AddPrincipal(bytes(m.public_key), m.pool, _role(m.role), m.name)


def _register_pool(env: pb.Envelope) -> Command:
    m = env.governance.register_pool
    return gc.RegisterPool(m.pool, m.region, m.tier, bytes(m.agent_public_key))


FROM_PB: dict[str, Callable[[pb.Envelope], Command]] = {
    "pair_offer": lambda env: gc.PairOffer(env.governance.pair_offer.to_pool,
                                           _trust(env.governance.pair_offer.trust)),
    "pair_accept": lambda env: gc.PairAccept(env.governance.pair_accept.from_pool),
    "add_principal": _add_principal,
    "revoke_principal": lambda env: gc.RevokePrincipal(bytes(env.governance.revoke_principal.key_id)),
    "rotate_key": lambda env: gc.RotateKey(bytes(env.governance.rotate_key.key_id),
                                           bytes(env.governance.rotate_key.new_public_key)),
    "register_pool": _register_pool,
    "retire_pool": lambda env: gc.RetirePool(env.governance.retire_pool.pool),
    "set_trust": lambda env: gc.SetTrust(env.governance.set_trust.pool_a, env.governance.set_trust.pool_b,
                                         _trust(env.governance.set_trust.trust)),
    "unpair": lambda env: gc.Unpair(env.governance.unpair.pool_a, env.governance.unpair.pool_b),
    "set_policy": lambda env: gc.SetPolicy(tuple((s.key, s.value) for s in env.governance.set_policy.settings)),
    "set_apply_version": lambda env: gc.SetApplyVersion(env.governance.set_apply_version.version),
    "approve": lambda env: gc.Approve(bytes(env.governance.approve.pending_id),
                                      bytes(env.governance.approve.command_digest)),
    "veto": lambda env: gc.Veto(bytes(env.governance.veto.pending_id), bytes(env.governance.veto.command_digest),
                                env.governance.veto.reason),
    "break_glass": lambda env: gc.BreakGlass(bytes(env.governance.break_glass.pending_id),
                                             bytes(env.governance.break_glass.signature)),
    **memory.FROM_PB,
}


def _to(cmd: Command, env: pb.Envelope) -> None:
    g = env.governance
    if isinstance(cmd, gc.PairOffer):
        g.pair_offer.CopyFrom(gpb.PairOffer(to_pool=cmd.to_pool, trust=cmd.trust.label))
    elif isinstance(cmd, gc.PairAccept):
        g.pair_accept.from_pool = cmd.from_pool
    elif isinstance(cmd, gc.AddPrincipal):
        g.add_principal.CopyFrom(gpb.AddPrincipal(public_key=cmd.public_key, pool=cmd.pool, role=cmd.role.label,
                                                  name=cmd.name))
    elif isinstance(cmd, gc.RevokePrincipal):
        g.revoke_principal.key_id = cmd.key_id
    elif isinstance(cmd, gc.RotateKey):
        g.rotate_key.CopyFrom(gpb.RotateKey(key_id=cmd.key_id, new_public_key=cmd.new_public_key))
    elif isinstance(cmd, gc.RegisterPool):
        g.register_pool.CopyFrom(gpb.RegisterPool(pool=cmd.pool, region=cmd.region, tier=cmd.tier,
                                                  agent_public_key=cmd.agent_public_key))
    elif isinstance(cmd, gc.RetirePool):
        g.retire_pool.pool = cmd.pool
    elif isinstance(cmd, gc.SetTrust):
        g.set_trust.CopyFrom(gpb.SetTrust(pool_a=cmd.pool_a, pool_b=cmd.pool_b, trust=cmd.trust.label))
    elif isinstance(cmd, gc.Unpair):
        g.unpair.CopyFrom(gpb.Unpair(pool_a=cmd.pool_a, pool_b=cmd.pool_b))
    elif isinstance(cmd, gc.SetPolicy):
        g.set_policy.CopyFrom(gpb.SetPolicy(settings=[gpb.PolicySetting(key=k, value=v) for k, v in cmd.settings]))
    elif isinstance(cmd, gc.SetApplyVersion):
        g.set_apply_version.version = cmd.version
    elif isinstance(cmd, gc.Approve):
        g.approve.CopyFrom(gpb.Approve(pending_id=cmd.pending_id, command_digest=cmd.command_digest))
    elif isinstance(cmd, gc.Veto):
        g.veto.CopyFrom(gpb.Veto(pending_id=cmd.pending_id, command_digest=cmd.command_digest, reason=cmd.reason))
    elif isinstance(cmd, gc.BreakGlass):
        g.break_glass.CopyFrom(gpb.BreakGlass(pending_id=cmd.pending_id, signature=cmd.signature))
    else:  # pragma: no cover - TO_PB lists exactly the classes above
        raise TypeError(type(cmd).__name__)


TO_PB: dict[type[Command], Callable[[Command, pb.Envelope], None]] = {
    cls: _to for cls in (gc.PairOffer, gc.PairAccept, *gc.CRITICAL_COMMANDS, *gc.VOTES)
} | memory.TO_PB


# ---- stored records ----

def pairing_to_pb(p: Pairing) -> gpb.PairingRecord:
    return gpb.PairingRecord(pool_a=p.pool_a, pool_b=p.pool_b, trust=p.trust.label, offered_by=p.offered_by,
                             active=p.active)


def pairing_from_pb(r: gpb.PairingRecord) -> Pairing:
    return Pairing(r.pool_a, r.pool_b, _trust(r.trust), r.offered_by, r.active)


def _vote_to_pb(v: ap.Vote) -> gpb.VoteRecord:
    return gpb.VoteRecord(pool=v.pool, key_id=v.key_id, index=v.index, reason=v.reason)


def _vote_from_pb(r: gpb.VoteRecord) -> ap.Vote:
    return ap.Vote(r.pool, bytes(r.key_id), r.index, r.reason)


def pending_to_pb(op: ap.PendingOp) -> gpb.PendingRecord:
    p = op.proposer
    rec = gpb.PendingRecord(
        pending_id=op.pending_id, command=op.command, command_digest=op.command_digest, envelope=op.envelope,
        proposer_key_id=p.key_id, proposer_pool=p.pool, proposer_name=p.name, proposer_role=p.role,
        request_id=p.request_id, proposed_index=op.proposed_index, proposed_ms=op.proposed_ms,
        expires_ms=op.expires_ms, removed_keys=list(op.removed_keys),
        approvals=[_vote_to_pb(v) for v in op.approvals], state=op.status.value, closed_index=op.closed_index,
        result=op.result)
    if op.veto is not None:
        rec.veto.CopyFrom(_vote_to_pb(op.veto))
    if op.override is not None:
        rec.override.CopyFrom(gpb.OverrideRecord(
            index=op.override.index, key_id=op.override.key_id,
            excused=[gpb.ExcusedPool(pool=pool, why=why) for pool, why in op.override.excused]))
    return rec


def pending_from_pb(r: gpb.PendingRecord) -> ap.PendingOp:
    try:
        status = ap.Status(r.state)
    except ValueError:
        raise DecodeError(f"unknown pending state {r.state!r}") from None
    override = (ap.Override(r.override.index, bytes(r.override.key_id),
                            tuple((e.pool, e.why) for e in r.override.excused))
                if r.HasField("override") else None)
    return ap.PendingOp(
        pending_id=bytes(r.pending_id), command=r.command, command_digest=bytes(r.command_digest),
        proposer=ap.Proposer(bytes(r.proposer_key_id), r.proposer_pool, r.proposer_name, r.proposer_role,
                             bytes(r.request_id)),
        proposed_index=r.proposed_index, proposed_ms=r.proposed_ms, expires_ms=r.expires_ms,
        removed_keys=tuple(bytes(k) for k in r.removed_keys), approvals=tuple(_vote_from_pb(v) for v in r.approvals),
        veto=_vote_from_pb(r.veto) if r.HasField("veto") else None, status=status, closed_index=r.closed_index,
        override=override, envelope=bytes(r.envelope), result=bytes(r.result))


def policy_to_pb(policy: GovernancePolicy) -> gpb.PolicyRecord:
    p, w = policy.placement, policy.placement.weights
    return gpb.PolicyRecord(
        heartbeat_ms=p.heartbeat_ms, missed_heartbeats=p.missed_heartbeats, hysteresis_ms=p.hysteresis_ms,
        return_window_ms=p.return_window_ms, drain_ms=p.drain_ms, rebalance_threshold_pct=p.rebalance_threshold_pct,
        max_moves_per_tick=p.max_moves_per_tick, tick_interval_ms=p.tick_interval_ms, preemption=p.preemption,
        weight_free_capacity=w.free_capacity, weight_preferred_region=w.preferred_region,
        weight_data_locality=w.data_locality, weight_latency=w.latency, weight_specialty=w.specialty,
        weight_spread=w.spread,
        latencies=[gpb.LatencyRecord(region_a=lat.region_a, region_b=lat.region_b, ms=lat.ms)
                   for lat in p.latencies],
        pending_expiry_ms=policy.pending_expiry_ms, max_validity_ms=policy.max_validity_ms,
        # Written only once they differ from the defaults: a record from before data classes reads the same.
        data_classes=([gpb.DataClassRecord(name=dc.name, level=dc.level.label) for dc in policy.data_classes]
                      if policy.data_classes != DEFAULT_DATA_CLASSES else []),
        checkpoint_interval=policy.checkpoint_interval)


def policy_from_pb(r: gpb.PolicyRecord) -> GovernancePolicy:
    weights = Weights(r.weight_free_capacity, r.weight_preferred_region, r.weight_data_locality, r.weight_latency,
                      r.weight_specialty, r.weight_spread)
    placement = Policy(heartbeat_ms=r.heartbeat_ms, missed_heartbeats=r.missed_heartbeats,
                       hysteresis_ms=r.hysteresis_ms, return_window_ms=r.return_window_ms, drain_ms=r.drain_ms,
                       rebalance_threshold_pct=r.rebalance_threshold_pct, max_moves_per_tick=r.max_moves_per_tick,
                       tick_interval_ms=r.tick_interval_ms, preemption=r.preemption, weights=weights,
                       latencies=tuple(Latency(lat.region_a, lat.region_b, lat.ms) for lat in r.latencies))
    classes = tuple(sorted(DataClass(dc.name, _trust(dc.level)) for dc in r.data_classes))
    return GovernancePolicy(placement, r.pending_expiry_ms, r.max_validity_ms, classes or DEFAULT_DATA_CLASSES,
                            r.checkpoint_interval or DEFAULT_CHECKPOINT_INTERVAL)
