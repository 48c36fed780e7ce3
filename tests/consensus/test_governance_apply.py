"""Critical operations and the governance commands through the real Applier on LMDB (SPEC §5, §6):
pending until every voter pool approves, veto, de-dup of a replayed vote, revocation from the next
envelope on, degraded mode with the break-glass key, expiry on Tick, and determinism across stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.consensus.applier import ApplyVersionTooNew
from fedraft.consensus.handlers import approvals, next_deadline
from fedraft.crypto.envelopes import command_digest_of, parse_envelope, pending_id_of
from fedraft.crypto.signing import CTX_BREAKGLASS, Identity
from fedraft.domain import commands as c
from fedraft.domain.governance import commands as gc
from fedraft.domain.governance.commands import PairAccept, PairOffer
from fedraft.domain.outcome import Code
from fedraft.domain.placement import commands as pc
from fedraft.domain.placement.model import Trust
from fedraft.domain.roles import Role
from fedraft.storage import governance_schema as gov
from fedraft.storage import placement_schema
from fedraft.storage.state import StateStore
from tests.consensus.test_placement_apply import T0, Log
from tests.helpers import Fed, make_federation

POOLS = ("cpu-branch", "gpu-dc", "hq")


@pytest.fixture()
def fed() -> Fed:
    return make_federation()


@pytest.fixture()
def log(tmp_path: Path, fed: Fed) -> Log:
    return Log(fed, [StateStore(tmp_path / "a", fed.genesis, map_size=64 << 20),
                     StateStore(tmp_path / "b", fed.genesis, map_size=64 << 20)])


def ok(result: pb.Result) -> pb.Result:
    assert result.code == Code.OK, result
    return result


def refused(result: pb.Result, code: Code, fragment: str) -> None:
    assert (Code(result.code), fragment in result.message) == (code, True), result


class Proposal:
    """A critical command proposed in the log: its envelope, pending id and digest."""

    def __init__(self, log: Log, who: Identity, command: c.Command) -> None:
        self.log = log
        self.env = log.env(who, command)
        self.id = pending_id_of(self.env)
        self.digest = command_digest_of(parse_envelope(bytes(self.env.body)))
        self.result = log.apply(self.env)[0]

    def approve(self, who: Identity) -> pb.Result:
        return self.log.one(who, gc.Approve(self.id, self.digest))

    def veto(self, who: Identity, reason: str) -> pb.Result:
        return self.log.one(who, gc.Veto(self.id, self.digest, reason))

    def break_glass(self, who: Identity, signer: Identity | None = None) -> pb.Result:
        sig = (signer or self.log.fed.break_glass).sign(CTX_BREAKGLASS, self.log.fed.cluster_id, self.id)
        return self.log.one(who, gc.BreakGlass(self.id, sig))

    def state(self) -> str:
        with self.log.stores[0].read() as st:
            op = gov.get_pending(st, self.id)
        assert op is not None
        return op.status.value


def enact(log: Log, command: c.Command, by: str = "hq") -> pb.Result:
    """Propose as `by`'s admin, approve by every other voter pool; the execution's result."""
    p = Proposal(log, log.fed.admins[by], command)
    ok(p.result)
    last = None
    for pool in POOLS:
        if pool != by:
            last = ok(p.approve(log.fed.admins[pool]))
    assert last is not None and last.governance.state == "executed", last
    return last


def principal(log: Log, key_id: bytes) -> pb.Principal | None:
    with log.stores[0].read() as st:
        return st.principal(key_id)


# ---- the pending life ----------------------------------------------------------------------------

def test_a_critical_command_waits_for_every_voter_pool_then_executes_at_the_last_approval(log: Log) -> None:
    fed = log.fed
    alice = Identity.generate()
    p = Proposal(log, fed.admins["hq"], gc.AddPrincipal(alice.public_key, "hq", Role.OPERATOR, "alice"))
    g = ok(p.result).governance
    assert (g.state, list(g.approved), list(g.waiting_for)) == ("pending", ["hq"], ["cpu-branch", "gpu-dc"])
    assert g.pending_id == p.id and g.expires_ms == T0 + 3_600_000
    assert principal(log, alice.key_id) is None  # not executed on arrival
    r = ok(p.approve(fed.admins["gpu-dc"]))
    assert r.governance.state == "pending" and list(r.governance.waiting_for) == ["cpu-branch"]
    assert principal(log, alice.key_id) is None
    r = ok(p.approve(fed.admins["cpu-branch"]))
    assert r.governance.state == "executed" and r.governance.result_code == Code.OK
    assert "executed at index" in r.message and "added alice" in r.governance.result_message
    added = principal(log, alice.key_id)
    assert added is not None and (added.pool, added.role, added.added_index) == ("hq", "operator", log.index)
    with log.stores[0].read() as st:
        op = gov.get_pending(st, p.id)
    assert op is not None and op.closed_index == log.index
    executed = pb.Result()
    executed.ParseFromString(op.result)
    assert executed.code == Code.OK and executed.index == log.index
    # the new operator may act from the next envelope on
    ok(log.one(alice, c.Put("/routes/a", b"1")))


def test_every_vote_rule_refuses_with_its_reason(log: Log) -> None:
    fed = log.fed
    op_key, edge_agent, edge_admin = Identity.generate(), Identity.generate(), Identity.generate()
    enact(log, gc.AddPrincipal(op_key.public_key, "hq", Role.OPERATOR, "op"))
    enact(log, gc.RegisterPool("edge", "eu", "cpu", edge_agent.public_key))
    enact(log, gc.AddPrincipal(edge_admin.public_key, "edge", Role.ADMIN, "edge-admin"))

    p = Proposal(log, fed.admins["hq"], gc.SetPolicy((("drain_ms", "30000"),)))
    refused(p.approve(op_key), Code.PERMISSION_DENIED, "role operator may not issue approve")
    refused(p.approve(edge_admin), Code.PERMISSION_DENIED, "edge is not a voter pool")
    refused(p.approve(fed.admins["hq"]), Code.ALREADY_EXISTS, "pool hq already approved")  # the proposer's pool
    refused(log.one(fed.admins["gpu-dc"], gc.Approve(p.id, b"\x01" * 32)), Code.INVALID_ARGUMENT,
            "command digest does not match")
    refused(log.one(fed.admins["gpu-dc"], gc.Approve(b"\x02" * 32, p.digest)), Code.NOT_FOUND,
            "no critical operation")
    ok(p.approve(fed.admins["gpu-dc"]))
    refused(p.approve(fed.admins["gpu-dc"]), Code.ALREADY_EXISTS, "pool gpu-dc already approved")
    assert p.state() == "pending"
    ok(p.approve(fed.admins["cpu-branch"]))
    refused(p.approve(fed.admins["cpu-branch"]), Code.FAILED_PRECONDITION, "already executed")
    refused(p.veto(fed.admins["gpu-dc"], "too late"), Code.FAILED_PRECONDITION, "already executed")


def test_one_veto_rejects_it_for_good_with_the_reason(log: Log) -> None:
    fed = log.fed
    p = Proposal(log, fed.admins["hq"], gc.SetApplyVersion(1))
    ok(p.approve(fed.admins["gpu-dc"]))
    r = ok(p.veto(fed.admins["gpu-dc"], "not during the migration window"))  # even a pool that approved
    assert r.governance.state == "vetoed" and "not during the migration window" in r.message
    refused(p.approve(fed.admins["cpu-branch"]), Code.ABORTED, "vetoed by gpu-dc")
    refused(p.veto(fed.admins["cpu-branch"], "me too"), Code.ABORTED, "not during the migration window")
    refused(p.break_glass(fed.admins["hq"]), Code.ABORTED, "vetoed")
    assert p.state() == "vetoed"


def test_a_replayed_approval_envelope_returns_its_first_result(log: Log) -> None:
    fed = log.fed
    p = Proposal(log, fed.admins["hq"], gc.SetPolicy((("max_moves_per_tick", "4"),)))
    vote = log.env(fed.admins["gpu-dc"], gc.Approve(p.id, p.digest))
    first = ok(log.apply(vote)[0])
    assert log.apply(vote)[0] == first  # de-dup (D3): not counted again, same index
    with log.stores[0].read() as st:
        op = gov.get_pending(st, p.id)
    assert op is not None and [v.pool for v in op.approvals] == ["gpu-dc", "hq"]
    assert p.state() == "pending"


def test_expiry_on_tick_closes_it_and_late_votes_are_refused(log: Log) -> None:
    fed = log.fed
    p = Proposal(log, fed.admins["hq"], gc.Unpair("hq", "gpu-dc"))
    with log.stores[0].read() as st:
        assert [d(st, T0) for d in approvals.DEADLINES] == [T0 + 3_600_000]  # the leader's Tick is due then
        assert next_deadline(st, T0) is not None
    for step in range(1, 61):  # an hour of heartbeats, one a minute (effective time steps at most 60 s)
        log.now = T0 + step * 60_000
        for pool in POOLS:
            ok(log.one(fed.nodes[pool], pc.PoolHeartbeat(pool)))
    assert log.now == T0 + 3_600_000
    ok(log.one(fed.nodes["hq"], c.Tick(log.now)))
    assert p.state() == "expired"
    with log.stores[0].read() as st:
        assert gov.earliest_expiry(st) is None
    refused(p.approve(fed.admins["gpu-dc"]), Code.DEADLINE_EXCEEDED, "expired")


def test_a_vote_after_the_expiry_closes_it_even_before_the_tick(log: Log) -> None:
    fed = log.fed
    enact(log, gc.SetPolicy((("pending_expiry_ms", "60000"),)))
    p = Proposal(log, fed.admins["hq"], gc.Unpair("hq", "gpu-dc"))
    assert ok(p.result).governance.expires_ms == log.now + 60_000
    log.now += 60_000
    refused(p.approve(fed.admins["gpu-dc"]), Code.DEADLINE_EXCEEDED, "expired")
    assert p.state() == "expired"


# ---- principals: revocation and rotation ---------------------------------------------------------

def test_a_revoked_key_is_refused_from_the_next_envelope_and_its_earlier_entries_stay(log: Log) -> None:
    fed = log.fed
    bob = Identity.generate()
    enact(log, gc.AddPrincipal(bob.public_key, "gpu-dc", Role.OPERATOR, "bob"))
    ok(log.one(bob, c.Put("/routes/bob", b"before")))
    p = Proposal(log, fed.admins["hq"], gc.RevokePrincipal(bob.key_id))
    ok(p.approve(fed.admins["gpu-dc"]))
    # the last approval and bob's next envelope in one entry: revocation takes effect for the next one (D9)
    last = log.env(fed.admins["cpu-branch"], gc.Approve(p.id, p.digest))
    r_vote, r_bob = log.apply(last, log.env(bob, c.Put("/routes/bob", b"after")))
    assert ok(r_vote).governance.state == "executed"
    refused(r_bob, Code.UNAUTHENTICATED, "was revoked by hq-admin at index")
    with log.stores[0].read() as st:
        assert st.registry_get("/routes/bob").value == b"before"  # type: ignore[union-attr]
    stored = principal(log, bob.key_id)
    assert stored is not None and stored.revoked_index == log.index
    # a revoked key is never added again
    r = enact(log, gc.AddPrincipal(bob.public_key, "gpu-dc", Role.OPERATOR, "bob2"))
    assert r.governance.result_code == Code.ALREADY_EXISTS and "a revoked key" in r.governance.result_message


def test_a_rotated_key_cannot_vote_on_its_own_rotation_and_break_glass_stands_in(log: Log) -> None:
    fed = log.fed
    old, new = fed.admins["gpu-dc"], Identity.generate()
    p = Proposal(log, fed.admins["hq"], gc.RotateKey(old.key_id, new.public_key))
    refused(p.approve(old), Code.PERMISSION_DENIED, "revokes or rotates out")
    refused(p.veto(old, "keep my key"), Code.PERMISSION_DENIED, "revokes or rotates out")
    ok(p.approve(fed.admins["cpu-branch"]))
    assert p.state() == "pending"  # gpu-dc has not approved: its only admin may not
    r = ok(p.break_glass(fed.admins["cpu-branch"]))
    assert r.governance.state == "executed" and r.governance.break_glass
    assert list(r.governance.excused) == ["gpu-dc: no admin key that may vote on it"]
    refused(log.one(old, c.Put("/routes/x", b"1")), Code.UNAUTHENTICATED, "rotated to")
    ok(log.one(new, c.Put("/routes/x", b"1")))
    rotated = principal(log, new.key_id)
    assert rotated is not None and (rotated.name, rotated.pool, rotated.role) == ("gpu-dc-admin", "gpu-dc", "admin")


def test_an_admin_rotating_its_own_key_counts_as_its_pool(log: Log) -> None:
    fed = log.fed
    new = Identity.generate()
    r = enact(log, gc.RotateKey(fed.admins["cpu-branch"].key_id, new.public_key), by="cpu-branch")
    assert r.governance.result_code == Code.OK
    ok(log.one(new, c.Put("/routes/y", b"1")))


def test_voter_node_keys_and_unknown_keys_cannot_be_revoked(log: Log) -> None:
    r = enact(log, gc.RevokePrincipal(log.fed.nodes["gpu-dc"].key_id))
    assert r.governance.result_code == Code.FAILED_PRECONDITION and "pinned in genesis" in r.governance.result_message
    r = enact(log, gc.RevokePrincipal(b"\x07" * 16))
    assert r.governance.result_code == Code.NOT_FOUND


# ---- degraded mode ---------------------------------------------------------------------------------

def _take_down(log: Log, pool: str) -> None:
    """Every other pool beats for 40 s of effective time; `pool` stays silent; a Tick marks it DOWN."""
    for step in range(1, 5):
        log.now = T0 + step * 10_000
        for other in POOLS:
            if other != pool:
                ok(log.one(log.fed.nodes[other], pc.PoolHeartbeat(other)))
        ok(log.one(log.fed.nodes["hq"], c.Tick(log.now)))
    with log.stores[0].read() as st:
        assert placement_schema.get_pool(st, pool).status.health.value == "down"  # type: ignore[union-attr]


def test_degraded_mode_executes_with_the_live_pools_and_the_break_glass_key(log: Log) -> None:
    fed = log.fed
    carol = Identity.generate()
    p = Proposal(log, fed.admins["hq"], gc.AddPrincipal(carol.public_key, "hq", Role.SUBMITTER, "carol"))
    refused(p.break_glass(fed.admins["gpu-dc"]), Code.FAILED_PRECONDITION, "degraded mode only")
    _take_down(log, "cpu-branch")
    refused(p.break_glass(fed.admins["gpu-dc"]), Code.FAILED_PRECONDITION, "still waiting for the approval of gpu-dc")
    refused(p.break_glass(fed.admins["gpu-dc"], signer=Identity.generate()), Code.UNAUTHENTICATED,
            "break-glass signature does not verify")
    ok(p.approve(fed.admins["gpu-dc"]))
    assert p.state() == "pending"  # two of three approvals are not enough without the break-glass key
    r = ok(p.break_glass(fed.admins["gpu-dc"]))
    assert r.governance.state == "executed" and r.governance.break_glass
    assert list(r.governance.excused) == ["cpu-branch: down"] and "break-glass override" in r.message
    assert principal(log, carol.key_id) is not None
    with log.stores[0].read() as st:
        op = gov.get_pending(st, p.id)
    assert op is not None and op.override is not None and op.override.excused == (("cpu-branch", "down"),)
    assert op.override.key_id == fed.admins["gpu-dc"].key_id and op.override.index == log.index


def test_an_admin_of_a_down_pool_may_still_veto(log: Log) -> None:
    fed = log.fed
    _take_down(log, "cpu-branch")
    p = Proposal(log, fed.admins["hq"], gc.SetPolicy((("preemption", "false"),)))
    ok(p.veto(fed.admins["cpu-branch"], "no"))
    refused(p.break_glass(fed.admins["gpu-dc"]), Code.ABORTED, "vetoed")


# ---- pools, trust, policy, apply version ------------------------------------------------------------

def test_member_pools_register_and_retire(log: Log) -> None:
    fed = log.fed
    agent = Identity.generate()
    r = enact(log, gc.RegisterPool("edge-1", "eu-west", "gpu", agent.public_key))
    assert r.governance.result_code == Code.OK
    with log.stores[0].read() as st:
        pool = placement_schema.get_pool(st, "edge-1")
    assert pool is not None and not pool.voter and (pool.region, pool.tier) == ("eu-west", "gpu")
    ok(log.one(agent, pc.PoolHeartbeat("edge-1")))
    edge_admin = Identity.generate()
    enact(log, gc.AddPrincipal(edge_admin.public_key, "edge-1", Role.ADMIN, "edge-admin"))
    ok(log.one(fed.admins["hq"], PairOffer("edge-1", Trust.HIGH)))
    assert ok(log.one(edge_admin, PairAccept("hq"))).governance.state == "active"
    assert enact(log, gc.RegisterPool("edge-1", "", "", Identity.generate().public_key)
                 ).governance.result_code == Code.ALREADY_EXISTS
    assert enact(log, gc.RetirePool("gpu-dc")).governance.result_code == Code.FAILED_PRECONDITION
    r = enact(log, gc.RetirePool("edge-1"))
    assert r.governance.result_code == Code.OK and "1 pairings removed" in r.governance.result_message
    refused(log.one(agent, pc.PoolHeartbeat("edge-1")), Code.UNAUTHENTICATED, "pool retired")
    with log.stores[0].read() as st:
        assert placement_schema.get_pool(st, "edge-1") is None
        assert gov.get_pairing(st, "hq", "edge-1") is None


def test_set_trust_and_unpair_need_a_pairing(log: Log) -> None:
    r = enact(log, gc.SetTrust("hq", "gpu-dc", Trust.MAX))
    assert r.governance.result_code == Code.FAILED_PRECONDITION and "not paired" in r.governance.result_message
    log.pair("hq", "gpu-dc", Trust.STANDARD)
    assert enact(log, gc.SetTrust("gpu-dc", "hq", Trust.MAX)).governance.result_code == Code.OK
    with log.stores[0].read() as st:
        assert gov.get_pairing(st, "hq", "gpu-dc").trust is Trust.MAX  # type: ignore[union-attr]
    assert enact(log, gc.Unpair("hq", "gpu-dc")).governance.result_code == Code.OK
    assert enact(log, gc.Unpair("hq", "gpu-dc")).governance.result_code == Code.NOT_FOUND
    refused(log.one(log.fed.admins["hq"], gc.SetTrust("hq", "hq", Trust.MAX)), Code.INVALID_ARGUMENT, "two different")


def test_set_policy_is_what_placement_and_validation_read(log: Log) -> None:
    refused(log.one(log.fed.admins["hq"], gc.SetPolicy((("heartbeat_ms", "5"),))), Code.INVALID_ARGUMENT,
            "heartbeat_ms must be")
    refused(log.one(log.fed.admins["hq"], gc.SetPolicy((("nope", "1"),))), Code.INVALID_ARGUMENT, "unknown policy key")
    enact(log, gc.SetPolicy((("latency/us-east/eu-west", "80"), ("max_validity_ms", "20000"),
                             ("missed_heartbeats", "2"), ("weights.spread", "5"))))
    with log.stores[0].read() as st:
        placement = placement_schema.policy(st)
    assert placement.missed_heartbeats == 2 and placement.weights.spread == 5
    assert placement.latency_ms("us-east", "eu-west") == 80 and placement.heartbeat_ms == 10_000
    long_window = log.env(log.fed.admins["hq"], c.Put("/routes/w", b"1"))  # 120 s window > 20 s
    refused(log.apply(long_window)[0], Code.INVALID_ARGUMENT, "validity window longer than 20000 ms")


def test_set_apply_version_stops_a_node_too_old_for_it(log: Log) -> None:
    r = enact(log, gc.SetApplyVersion(1))
    assert r.governance.result_code == Code.OK
    enact(log, gc.SetApplyVersion(2))
    with pytest.raises(ApplyVersionTooNew, match="apply version 2"):
        log.one(log.fed.admins["hq"], c.Put("/routes/v", b"1"))


def test_envelopes_after_set_apply_version_in_the_same_entry_are_not_applied_under_the_old_rules(
        log: Log) -> None:
    fed = log.fed
    p = Proposal(log, fed.admins["hq"], gc.SetApplyVersion(2))
    ok(p.approve(fed.admins["gpu-dc"]))
    last = log.env(fed.admins["cpu-branch"], gc.Approve(p.id, p.digest))
    with pytest.raises(ApplyVersionTooNew):
        log.apply(last, log.env(fed.admins["hq"], c.Put("/routes/after", b"1")))


def test_a_federation_of_one_voter_executes_on_proposal(tmp_path: Path) -> None:
    fed = make_federation(("hq",))
    log = Log(fed, [StateStore(tmp_path / "solo", fed.genesis, map_size=64 << 20)])
    r = ok(log.one(fed.admins["hq"], gc.SetPolicy((("drain_ms", "1000"),))))
    assert r.governance.state == "executed" and r.governance.result_code == Code.OK


def test_two_stores_reach_identical_state_through_governance(log: Log) -> None:
    fed = log.fed
    enact(log, gc.AddPrincipal(Identity.generate().public_key, "hq", Role.OPERATOR, "dave"))
    log.pair("hq", "gpu-dc")
    enact(log, gc.SetTrust("hq", "gpu-dc", Trust.MAX))
    p = Proposal(log, fed.admins["gpu-dc"], gc.Unpair("hq", "gpu-dc"))
    ok(p.veto(fed.admins["hq"], "keep it"))
    _take_down(log, "cpu-branch")
    q = Proposal(log, fed.admins["hq"], gc.SetPolicy((("drain_ms", "5000"),)))
    ok(q.approve(fed.admins["gpu-dc"]))
    ok(q.break_glass(fed.admins["hq"]))
    assert log.stores[0].digest() == log.stores[1].digest()
