"""Governance commands and records round-trip through their wire forms, and the digest covers them."""

from __future__ import annotations

import pytest

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.crypto.envelopes import build_envelope, command_digest_of, parse_envelope, pending_id_of
from fedraft.crypto.signing import Identity, Signer
from fedraft.domain.commands import Command
from fedraft.domain.governance import approvals as ap
from fedraft.domain.governance import commands as gc
from fedraft.domain.governance.policy import GovernancePolicy, apply_settings
from fedraft.domain.placement.model import Trust
from fedraft.domain.roles import Role
from fedraft.storage import governance_schema
from fedraft.storage.state import REPLICATED_DBS
from fedraft.wire.commands import command_from_pb, command_to_pb
from fedraft.wire.governance import pending_from_pb, pending_to_pb, policy_from_pb, policy_to_pb

KEY, KID, DIG = b"k" * 32, b"i" * 16, b"d" * 32
COMMANDS: list[Command] = [
    gc.AddPrincipal(KEY, "hq", Role.OPERATOR, "alice"), gc.RevokePrincipal(KID), gc.RotateKey(KID, KEY),
    gc.RegisterPool("edge", "eu", "gpu", KEY), gc.RetirePool("edge"), gc.SetTrust("a", "b", Trust.MAX),
    gc.Unpair("a", "b"), gc.SetPolicy((("drain_ms", "1"), ("preemption", "false"))), gc.SetApplyVersion(3),
    gc.Approve(DIG, DIG), gc.Veto(DIG, DIG, "no"), gc.BreakGlass(DIG, b"s" * 64),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.NAME)
def test_commands_round_trip(command: Command) -> None:
    env = pb.Envelope()
    command_to_pb(command, env)
    assert command_from_pb(env) == command


def test_pending_records_round_trip() -> None:
    op = ap.PendingOp(DIG, "rotate_key", DIG, ap.Proposer(KID, "hq", "hq-admin", "admin", b"r" * 16), 5, 100, 200,
                      (KID,), (ap.Vote("gpu-dc", KID, 6), ap.Vote("hq", KID, 5)), ap.Vote("x", KID, 7, "why"),
                      ap.Status.EXECUTED, 9, ap.Override(9, KID, (("cpu-branch", "down"),)), b"env", b"res")
    assert pending_from_pb(pending_to_pb(op)) == op


def test_policy_records_round_trip() -> None:
    p = apply_settings(GovernancePolicy(), (("latency/a/b", "5"), ("weights.latency", "9")))
    assert isinstance(p, GovernancePolicy)
    assert policy_from_pb(policy_to_pb(p)) == p
    assert policy_from_pb(policy_to_pb(GovernancePolicy())) == GovernancePolicy()


def test_pending_id_is_the_hash_of_the_signed_envelope_and_the_digest_ignores_the_window() -> None:
    signer = Signer(Identity.generate())
    a = build_envelope(signer, b"c" * 32, gc.Unpair("a", "b"), now_ms=1)
    b = build_envelope(signer, b"c" * 32, gc.Unpair("a", "b"), now_ms=2)
    assert pending_id_of(a) != pending_id_of(b)
    assert command_digest_of(parse_envelope(bytes(a.body))) == command_digest_of(parse_envelope(bytes(b.body)))
    again = pb.Signed()
    again.ParseFromString(a.SerializeToString(deterministic=True))
    assert pending_id_of(again) == pending_id_of(a)


def test_governance_databases_are_in_the_state_digest() -> None:
    assert set(governance_schema.DBS) <= set(REPLICATED_DBS)
