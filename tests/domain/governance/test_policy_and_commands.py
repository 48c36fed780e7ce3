"""SetPolicy settings (key by key) and the static checks of the governance commands."""

from __future__ import annotations

import pytest

from fedraft.domain.governance import commands as gc
from fedraft.domain.governance.policy import GovernancePolicy, apply_settings, describe, settings_problem
from fedraft.domain.placement.model import Latency, Trust
from fedraft.domain.roles import Role

KEY, KID, DIG, SIG = b"k" * 32, b"i" * 16, b"d" * 32, b"s" * 64


def test_defaults_are_specs_numbers() -> None:
    p = GovernancePolicy()
    assert (p.pending_expiry_ms, p.max_validity_ms, p.placement.heartbeat_ms, p.placement.missed_heartbeats) == \
        (3_600_000, 300_000, 10_000, 3)


def test_settings_change_only_what_they_name() -> None:
    p = apply_settings(GovernancePolicy(), (("latency/us-east/eu-west", "80"), ("missed_heartbeats", "2"),
                                            ("pending_expiry_ms", "600000"), ("preemption", "false"),
                                            ("weights.spread", "7")))
    assert isinstance(p, GovernancePolicy)
    assert p.placement.missed_heartbeats == 2 and p.placement.preemption is False
    assert p.placement.weights.spread == 7 and p.placement.weights.free_capacity == 4
    assert p.placement.latencies == (Latency("eu-west", "us-east", 80),)  # regions sorted
    assert p.pending_expiry_ms == 600_000 and p.max_validity_ms == 300_000
    removed = apply_settings(p, (("latency/eu-west/us-east", "none"),))
    assert isinstance(removed, GovernancePolicy) and removed.placement.latencies == ()


@pytest.mark.parametrize(("settings", "fragment"), [
    ((), "at least one"),
    ((("drain_ms", "1"), ("drain_ms", "2")), "each key once"),
    ((("heartbeat_ms", "1"), ("drain_ms", "1")), "sorted"),
    ((("nope", "1"),), "unknown policy key"),
    ((("heartbeat_ms", "999"),), "heartbeat_ms must be 1000..3600000"),
    ((("heartbeat_ms", "-5"),), "whole number"),
    ((("heartbeat_ms", "1e4"),), "whole number"),
    ((("preemption", "yes"),), "true or false"),
    ((("latency/a/a", "5"),), "two different regions"),
    ((("latency/a", "5"),), "latency/REGION_A/REGION_B"),
    ((("latency/A!/b", "5"),), "region"),
    ((("pending_expiry_ms", "1000"),), "pending_expiry_ms must be"),
    ((("max_validity_ms", "99999999"),), "max_validity_ms must be"),
], ids=lambda v: str(v)[:40])
def test_bad_settings_are_refused_with_a_reason(settings: tuple[tuple[str, str], ...], fragment: str) -> None:
    problem = settings_problem(settings)
    assert problem is not None and fragment in problem, problem
    assert apply_settings(GovernancePolicy(), settings) == problem


def test_describe_lists_every_setting_sorted() -> None:
    items = describe(GovernancePolicy())
    keys = [k for k, _ in items]
    assert keys == sorted(keys) and ("preemption", "true") in items and ("heartbeat_ms", "10000") in items
    assert ("weights.free_capacity", "4") in items and ("pending_expiry_ms", "3600000") in items


@pytest.mark.parametrize(("command", "fragment"), [
    (gc.AddPrincipal(b"short", "hq", Role.ADMIN, "a"), "public key must be 32 bytes"),
    (gc.AddPrincipal(KEY, "Bad Pool", Role.ADMIN, "a"), "pool"),
    (gc.AddPrincipal(KEY, "hq", Role.ADMIN, "no spaces"), "principal name"),
    (gc.RevokePrincipal(b"x"), "key id must be 16 bytes"),
    (gc.RotateKey(KID, b"x"), "new public key"),
    (gc.RegisterPool("edge", "EU WEST", "", KEY), "region"),
    (gc.RegisterPool("edge", "", "", b""), "agent public key"),
    (gc.RetirePool(""), "pool"),
    (gc.SetTrust("hq", "hq", Trust.MAX), "two different pools"),
    (gc.SetTrust("hq", "gpu-dc", Trust.NONE), "unpair"),
    (gc.Unpair("hq", "hq"), "two different pools"),
    (gc.SetPolicy((("nope", "1"),)), "unknown policy key"),
    (gc.SetApplyVersion(0), "apply version must be"),
    (gc.Approve(b"x", DIG), "pending id must be 32 bytes"),
    (gc.Approve(DIG, b"x"), "command digest"),
    (gc.Veto(DIG, DIG, ""), "needs a reason"),
    (gc.BreakGlass(DIG, b"x"), "break-glass signature"),
], ids=lambda v: type(v).__name__ if not isinstance(v, str) else v[:20])
def test_static_problems(command: gc.Command, fragment: str) -> None:
    problem = gc.static_problem(command)
    assert problem is not None and fragment in problem, problem


@pytest.mark.parametrize("command", [
    gc.AddPrincipal(KEY, "hq", Role.OPERATOR, "alice.ops"), gc.RevokePrincipal(KID), gc.RotateKey(KID, KEY),
    gc.RegisterPool("edge-1", "eu-west", "gpu", KEY), gc.RetirePool("edge-1"), gc.SetTrust("a", "b", Trust.HIGH),
    gc.Unpair("a", "b"), gc.SetPolicy((("drain_ms", "1000"),)), gc.SetApplyVersion(2), gc.Approve(DIG, DIG),
    gc.Veto(DIG, DIG, "no"), gc.BreakGlass(DIG, SIG),
], ids=lambda v: type(v).__name__)
def test_well_formed_commands_pass(command: gc.Command) -> None:
    assert gc.static_problem(command) is None


def test_which_commands_are_critical() -> None:
    assert all(cls.CRITICAL for cls in gc.CRITICAL_COMMANDS)
    assert not any(cls.CRITICAL for cls in (*gc.VOTES, gc.PairOffer, gc.PairAccept))
    assert gc.removed_keys(gc.RotateKey(KID, KEY)) == gc.removed_keys(gc.RevokePrincipal(KID)) == {KID}
    assert gc.removed_keys(gc.RetirePool("x")) == frozenset()


def test_checkpoint_interval_is_a_policy_key() -> None:
    assert GovernancePolicy().checkpoint_interval == 1000
    changed = apply_settings(GovernancePolicy(), (("checkpoint_interval", "64"),))
    assert isinstance(changed, GovernancePolicy) and changed.checkpoint_interval == 64
    assert dict(describe(changed))["checkpoint_interval"] == "64"
    assert "16.." in str(settings_problem((("checkpoint_interval", "8"),)))
