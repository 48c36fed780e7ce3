"""Apply rules of the governance area (SPEC §5): pairing, principals, member pools, trust, policy and
the apply version.

The critical commands here run only once approved (handlers/approvals.py calls these rules then, with
the proposer as author). Each writes through to the state; a change that alters what the placement
view sees (pools, pairings, policy) drops the kept placement view so the next envelope rebuilds it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft._proto.fedraft.v1 import governance_pb2 as gpb
from fedraft.consensus.handlers.context import ApplyContext, Rule, TickContext
from fedraft.consensus.handlers.placement import invalidate_placement_view
from fedraft.crypto.signing import key_id_of
from fedraft.domain import commands as c
from fedraft.domain.governance import commands as gc
from fedraft.domain.governance import pairing
from fedraft.domain.governance.policy import apply_settings
from fedraft.domain.outcome import Code
from fedraft.domain.placement.model import Pool, PoolHealth
from fedraft.domain.roles import Role
from fedraft.storage import governance_schema as schema
from fedraft.storage import memory_schema, placement_schema
from fedraft.storage.state import M_APPLY_VERSION, StateTxn


def _changed_views(ctx: ApplyContext) -> None:
    """Pools, pairings or policy changed: the placement view is rebuilt from the state when next needed
    (writes through the state already say so to a kept view; this covers an entry-scoped one)."""
    invalidate_placement_view(ctx)


def _author(ctx: ApplyContext) -> str:
    return ctx.principal.name or ctx.principal.pool


# ---- pairing (not critical: both halves are needed) ----

def _pairing_result(ctx: ApplyContext, outcome: pairing.Pairing | tuple[Code, str]) -> pb.Result:
    if isinstance(outcome, tuple):
        return ctx.refuse(*outcome)
    schema.put_pairing(ctx.st, outcome)
    _changed_views(ctx)
    result = ctx.result()
    result.governance.CopyFrom(gpb.GovernanceResult(state="active" if outcome.active else "offered"))
    return result


def _offer(ctx: ApplyContext, command: c.Command) -> pb.Result:
    assert isinstance(command, gc.PairOffer)
    if placement_schema.get_pool(ctx.st, command.to_pool) is None:
        return ctx.refuse(Code.NOT_FOUND, f"pool {command.to_pool} is not registered")
    current = schema.get_pairing(ctx.st, ctx.principal.pool, command.to_pool)
    return _pairing_result(ctx, pairing.offer(current, ctx.principal.pool, command.to_pool, command.trust))


def _accept(ctx: ApplyContext, command: c.Command) -> pb.Result:
    assert isinstance(command, gc.PairAccept)
    current = schema.get_pairing(ctx.st, ctx.principal.pool, command.from_pool)
    return _pairing_result(ctx, pairing.accept(current, ctx.principal.pool, command.from_pool))


# ---- principals ----

def _voter_node(ctx: ApplyContext, key_id: bytes) -> str | None:
    """The node id whose key genesis pins as `key_id`, if any."""
    return next((v.node_id for v in ctx.genesis.voters if key_id_of(v.public_key) == key_id), None)


def _new_key_problem(ctx: ApplyContext, public_key: bytes) -> pb.Result | None:
    if public_key == ctx.genesis.break_glass_public_key:
        return ctx.refuse(Code.INVALID_ARGUMENT, "that is the break-glass key; it never signs envelopes")
    known = ctx.st.principal(key_id_of(public_key))
    if known is not None:
        state = "a revoked key of" if known.revoked_index else "already the key of"
        return ctx.refuse(Code.ALREADY_EXISTS, f"key {key_id_of(public_key).hex()} is {state} {known.name} "
                                               f"({known.role} of {known.pool}); keys are never reused")
    return None


def _add_principal(ctx: ApplyContext, command: c.Command) -> pb.Result:
    assert isinstance(command, gc.AddPrincipal)
    pool = placement_schema.get_pool(ctx.st, command.pool)
    if pool is None:
        return ctx.refuse(Code.NOT_FOUND, f"pool {command.pool} is not registered")
    if command.role is Role.NODE and pool.voter:
        return ctx.refuse(Code.FAILED_PRECONDITION, f"{command.pool} is a voter pool: its node key is pinned in "
                                                    "genesis")
    problem = _new_key_problem(ctx, command.public_key)
    if problem is not None:
        return problem
    key_id = key_id_of(command.public_key)
    ctx.st.put_principal(pb.Principal(key_id=key_id, public_key=command.public_key, pool=command.pool,
                                      role=command.role.label, name=command.name, added_index=ctx.index))
    return ctx.result(message=f"added {command.name} ({command.role.label} of {command.pool}) with key "
                              f"{key_id.hex()}")


def _current(ctx: ApplyContext, key_id: bytes, verb: str) -> pb.Principal | pb.Result:
    p = ctx.st.principal(key_id)
    if p is None:
        return ctx.refuse(Code.NOT_FOUND, f"no principal has key id {key_id.hex()}")
    if p.revoked_index:
        return ctx.refuse(Code.FAILED_PRECONDITION, f"key {key_id.hex()} of {p.name} was already "
                                                    f"{p.revoked_why} at index {p.revoked_index}")
    node = _voter_node(ctx, key_id)
    if node is not None:
        return ctx.refuse(Code.FAILED_PRECONDITION,
                          f"key {key_id.hex()} is voter node {node}'s key, pinned in genesis: it cannot be {verb} "
                          "(move it to the replacement host, SPEC D4)")
    return p


def _revoke(ctx: ApplyContext, command: c.Command) -> pb.Result:
    assert isinstance(command, gc.RevokePrincipal)
    p = _current(ctx, command.key_id, "revoked")
    if isinstance(p, pb.Result):
        return p
    p.revoked_index, p.revoked_why = ctx.index, f"revoked by {_author(ctx)}"
    ctx.st.put_principal(p)
    return ctx.result(message=f"revoked key {command.key_id.hex()} of {p.name} ({p.role} of {p.pool}): refused "
                              f"from the next envelope on")


def _rotate(ctx: ApplyContext, command: c.Command) -> pb.Result:
    assert isinstance(command, gc.RotateKey)
    old = _current(ctx, command.key_id, "rotated")
    if isinstance(old, pb.Result):
        return old
    problem = _new_key_problem(ctx, command.new_public_key)
    if problem is not None:
        return problem
    new_id = key_id_of(command.new_public_key)
    ctx.st.put_principal(pb.Principal(key_id=new_id, public_key=command.new_public_key, pool=old.pool,
                                      role=old.role, name=old.name, added_index=ctx.index))
    old.revoked_index, old.revoked_why = ctx.index, f"rotated to {new_id.hex()}"
    ctx.st.put_principal(old)
    return ctx.result(message=f"{old.name} now signs with key {new_id.hex()}; key {command.key_id.hex()} is "
                              "refused from the next envelope on")


# ---- member pools ----

def _register_pool(ctx: ApplyContext, command: c.Command) -> pb.Result:
    assert isinstance(command, gc.RegisterPool)
    if placement_schema.get_pool(ctx.st, command.pool) is not None:
        return ctx.refuse(Code.ALREADY_EXISTS, f"pool {command.pool} is registered")
    problem = _new_key_problem(ctx, command.agent_public_key)
    if problem is not None:
        return problem
    # Counted as heard now, so the agent has the usual heartbeat allowance before the pool is DOWN (D7).
    status = PoolHealth(last_heartbeat_ms=ctx.now_ms, changed_ms=ctx.now_ms)
    placement_schema.put_pool(ctx.st, Pool(command.pool, command.region, command.tier, voter=False, status=status))
    key_id = key_id_of(command.agent_public_key)
    ctx.st.put_principal(pb.Principal(key_id=key_id, public_key=command.agent_public_key, pool=command.pool,
                                      role=Role.NODE.label, name=f"{command.pool}-agent", added_index=ctx.index))
    _changed_views(ctx)
    return ctx.result(message=f"registered member pool {command.pool}; its agent signs with key {key_id.hex()}")


def _retire_pool(ctx: ApplyContext, command: c.Command) -> pb.Result:
    assert isinstance(command, gc.RetirePool)
    pool = placement_schema.get_pool(ctx.st, command.pool)
    if pool is None:
        return ctx.refuse(Code.NOT_FOUND, f"pool {command.pool} is not registered")
    if pool.voter:
        return ctx.refuse(Code.FAILED_PRECONDITION, f"{command.pool} is a voter pool: voters are fixed at genesis")
    placement_schema.delete_pool(ctx.st, command.pool)
    revoked = 0
    for p in list(schema.principals(ctx.st)):
        if p.pool == command.pool and not p.revoked_index:
            p.revoked_index, p.revoked_why = ctx.index, "pool retired"
            ctx.st.put_principal(p)
            revoked += 1
    unpaired = 0
    for pair in list(schema.pairings(ctx.st)):
        if command.pool in (pair.pool_a, pair.pool_b):
            schema.delete_pairing(ctx.st, pair.pool_a, pair.pool_b)
            unpaired += 1
    memories = memory_schema.drop_pool(ctx.st, command.pool)  # its memories and its boxes (decision 0009)
    _changed_views(ctx)
    return ctx.result(message=f"retired pool {command.pool}: {revoked} keys revoked, {unpaired} pairings removed, "
                              f"{memories} memories changed; its work fails over at the next Tick")


# ---- trust ----

def _set_trust(ctx: ApplyContext, command: c.Command) -> pb.Result:
    assert isinstance(command, gc.SetTrust)
    current = schema.get_pairing(ctx.st, command.pool_a, command.pool_b)
    if current is None or not current.active:
        return ctx.refuse(Code.FAILED_PRECONDITION, f"{command.pool_a} and {command.pool_b} are not paired: "
                                                    "their admins pair them first (pair offer, pair accept)")
    schema.put_pairing(ctx.st, replace(current, trust=command.trust))
    _changed_views(ctx)
    return ctx.result(message=f"{current.pool_a} and {current.pool_b} trust each other at {command.trust.label} "
                              f"(was {current.trust.label})")


def _unpair(ctx: ApplyContext, command: c.Command) -> pb.Result:
    assert isinstance(command, gc.Unpair)
    if not schema.delete_pairing(ctx.st, command.pool_a, command.pool_b):
        return ctx.refuse(Code.NOT_FOUND, f"{command.pool_a} and {command.pool_b} have no pairing or offer")
    _changed_views(ctx)
    return ctx.result(message=f"unpaired {command.pool_a} and {command.pool_b}: back to zero trust")


# ---- policy and apply version ----

def _set_policy(ctx: ApplyContext, command: c.Command) -> pb.Result:
    assert isinstance(command, gc.SetPolicy)
    updated = apply_settings(schema.policy(ctx.st), command.settings)
    if isinstance(updated, str):
        return ctx.refuse(Code.INVALID_ARGUMENT, updated)
    schema.put_policy(ctx.st, updated)
    _changed_views(ctx)
    return ctx.result(message="policy set: " + ", ".join(f"{k}={v}" for k, v in command.settings))


def _set_apply_version(ctx: ApplyContext, command: c.Command) -> pb.Result:
    assert isinstance(command, gc.SetApplyVersion)
    before = ctx.st.meta_int(M_APPLY_VERSION) or 1
    ctx.st.set_meta_int(M_APPLY_VERSION, command.version)
    return ctx.result(message=f"apply version {command.version} from the next envelope on (was {before}); a node "
                              "older than that stops applying until upgraded")


def _check(command: c.Command) -> str | None:
    return gc.static_problem(command)


RULES: dict[type[c.Command], Rule] = {
    gc.PairOffer: Rule(_offer, _check),
    gc.PairAccept: Rule(_accept, _check),
    gc.AddPrincipal: Rule(_add_principal, _check),
    gc.RevokePrincipal: Rule(_revoke, _check),
    gc.RotateKey: Rule(_rotate, _check),
    gc.RegisterPool: Rule(_register_pool, _check),
    gc.RetirePool: Rule(_retire_pool, _check),
    gc.SetTrust: Rule(_set_trust, _check),
    gc.Unpair: Rule(_unpair, _check),
    gc.SetPolicy: Rule(_set_policy, _check),
    gc.SetApplyVersion: Rule(_set_apply_version, _check),
}
TICKERS: tuple[Callable[[TickContext], None], ...] = ()
DEADLINES: tuple[Callable[[StateTxn, int], int | None], ...] = ()
