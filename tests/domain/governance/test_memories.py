"""Memories in the pure domain (decision 0009): data classes in the policy, key format, static checks of
PutMemory, who receives a class, and the box-set check as a table."""

from __future__ import annotations

import pytest

from fedraft.domain.governance.memories import (
    DeleteMemory,
    PoolKey,
    PutMemory,
    Sealed,
    key_problem,
    max_box_bytes,
    recipients,
    sealed_problem,
    static_problem,
)
from fedraft.domain.governance.pairing import Pairing
from fedraft.domain.governance.policy import (
    DEFAULT_DATA_CLASSES,
    DataClass,
    GovernancePolicy,
    apply_settings,
    describe,
    settings_problem,
)
from fedraft.domain.outcome import Code
from fedraft.domain.placement.model import Trust

KID = b"k" * 16


def _key(pool: str) -> PoolKey:
    return PoolKey(pool, pool.encode().ljust(16, b"."), b"p" * 32)


KEYS = {p: _key(p) for p in ("hq", "gpu-dc", "cpu-branch", "edge")}
REGISTERED = frozenset(KEYS) | {"keyless"}
PAIRINGS = [Pairing("gpu-dc", "hq", Trust.HIGH, "hq", active=True),
            Pairing("cpu-branch", "hq", Trust.STANDARD, "hq", active=True),
            Pairing("edge", "hq", Trust.MAX, "hq", active=False),
            Pairing("hq", "keyless", Trust.MAX, "hq", active=True),
            Pairing("cpu-branch", "gpu-dc", Trust.MAX, "gpu-dc", active=True)]


def test_default_data_classes_and_policy_keys() -> None:
    p = GovernancePolicy()
    assert p.data_classes == DEFAULT_DATA_CLASSES
    assert [(dc.name, dc.level) for dc in p.data_classes] == \
        [("internal", Trust.HIGH), ("public", Trust.STANDARD), ("secret", Trust.MAX)]
    changed = apply_settings(p, (("class/internal", "max"), ("class/pii", "high"), ("class/public", "none")))
    assert isinstance(changed, GovernancePolicy)
    assert changed.data_classes == (DataClass("internal", Trust.MAX), DataClass("pii", Trust.HIGH),
                                    DataClass("secret", Trust.MAX))
    assert changed.data_class("pii") == DataClass("pii", Trust.HIGH) and changed.data_class("public") is None
    assert ("class/pii", "high") in describe(changed) and ("class/public", "standard") in describe(p)


@pytest.mark.parametrize(("settings", "fragment"), [
    ((("class/x", "none "),), "standard, high, max"),
    ((("class/x", "low"),), "standard, high, max"),
    ((("class/Bad!", "high"),), "data class 'Bad!'"),
    ((("class/", "high"),), "data class ''"),
])
def test_bad_class_settings(settings: tuple[tuple[str, str], ...], fragment: str) -> None:
    problem = settings_problem(settings)
    assert problem is not None and fragment in problem, problem


def test_at_least_one_class_remains() -> None:
    removed = (("class/internal", "none"), ("class/public", "none"), ("class/secret", "none"))
    assert apply_settings(GovernancePolicy(), removed) == "at least one data class must remain (memories name one)"


@pytest.mark.parametrize(("key", "ok"), [
    ("notes/plan", True), ("a", True), ("team:ml/run-1.v2", True), ("x" * 256, True),
    ("", False), ("/abs", False), ("a//b", False), ("dir/", False), ("x" * 257, False), ("sp ace", False),
    ("-dash", False), ("ünï", False),
])
def test_key_format(key: str, ok: bool) -> None:
    assert (key_problem(key) is None) == ok


def _sealed(*pools: str, size: int = 100) -> tuple[Sealed, ...]:
    return tuple(Sealed(p, KID, b"b" * size) for p in pools)


@pytest.mark.parametrize(("command", "fragment"), [
    (PutMemory("k", "internal", ()), "at least one sealed value"),
    (PutMemory("k", "Internal", _sealed("hq")), "data class 'Internal'"),
    (PutMemory("k", "internal", _sealed("hq", "gpu-dc")), "sorted by pool"),
    (PutMemory("k", "internal", _sealed("hq", "hq")), "sorted by pool, one per pool"),
    (PutMemory("k", "internal", (Sealed("hq", b"short", b"b" * 100),)), "key id of 5 bytes"),
    (PutMemory("k", "internal", _sealed("hq", size=48)), "has 48 bytes"),
    (PutMemory("k", "internal", (Sealed("a", KID, b"b" * 100), Sealed("b", KID, b"b" * 101))), "differ in size"),
    (PutMemory("k", "internal", tuple(Sealed(f"p{i:02}", KID, b"b" * 100) for i in range(65))), "at most 64"),
    (PutMemory("k", "internal", tuple(Sealed(f"p{i:02}", KID, b"b" * 60_000) for i in range(9))), "total 540000"),
    (DeleteMemory("/k"), "memory key"),
], ids=lambda v: str(v)[:30])
def test_static_problems(command: PutMemory | DeleteMemory, fragment: str) -> None:
    problem = static_problem(command)
    assert problem is not None and fragment in problem, problem


def test_max_box_bytes_is_the_sealed_plaintext_of_a_full_value() -> None:
    # 48 (box) + key field (1+1+1) + pool field (1+1+2) + value field (1+3+65536)
    assert max_box_bytes("k", "hq") == 48 + 3 + 4 + 65540


def test_recipients_are_the_pool_itself_and_the_pools_paired_at_the_level() -> None:
    def who(level: Trust) -> tuple[list[str], list[str]]:
        r = recipients("hq", level, PAIRINGS, KEYS, REGISTERED)
        return list(r.pools()), list(r.excluded)

    assert who(Trust.STANDARD) == (["cpu-branch", "gpu-dc", "hq"], [
        "edge: the pairing is only offered (both halves are needed)",
        "keyless: has no key to seal to (no voter node or current agent key)"])
    assert who(Trust.HIGH)[0] == ["gpu-dc", "hq"]
    assert "cpu-branch: trusted at standard, below high" in who(Trust.HIGH)[1]
    assert who(Trust.MAX)[0] == ["hq"]
    # another pool's view: gpu-dc trusts cpu-branch at max
    r = recipients("gpu-dc", Trust.MAX, PAIRINGS, KEYS, REGISTERED)
    assert [(x.pool, x.trust) for x in r.recipients] == [("cpu-branch", "max"), ("gpu-dc", "self")]


WANT = recipients("hq", Trust.HIGH, PAIRINGS, KEYS, REGISTERED)


def _boxes(*pools: str, key_id: bytes | None = None) -> tuple[Sealed, ...]:
    return tuple(Sealed(p, key_id or (KEYS[p].key_id if p in KEYS else KID), b"b" * 100) for p in sorted(pools))


@pytest.mark.parametrize(("sealed", "expected"), [
    (_boxes("gpu-dc", "hq"), None),
    (_boxes("hq"), (Code.FAILED_PRECONDITION, "no sealed value for gpu-dc")),
    (_boxes("cpu-branch", "gpu-dc", "hq"), (Code.PERMISSION_DENIED, "cpu-branch: trusted at standard, below high")),
    (_boxes("edge", "gpu-dc", "hq"), (Code.PERMISSION_DENIED, "edge: the pairing is only offered")),
    (_boxes("gpu-dc", "hq", "zz"), (Code.PERMISSION_DENIED, "zz: not paired with hq")),
    (_boxes("gpu-dc", "hq", key_id=KID), (Code.FAILED_PRECONDITION, "is sealed to key 6b6b")),
], ids=["exact", "missing", "extra below level", "extra offered only", "extra unpaired", "stale key"])
def test_the_box_set_must_match_the_qualifying_pools(sealed: tuple[Sealed, ...],
                                                     expected: tuple[Code, str] | None) -> None:
    problem = sealed_problem(sealed, WANT, "internal")
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and problem[0] == expected[0] and expected[1] in problem[1], problem


def test_policy_records_carry_data_classes_only_once_they_differ_from_the_defaults() -> None:
    from fedraft.wire.governance import policy_from_pb, policy_to_pb

    assert list(policy_to_pb(GovernancePolicy()).data_classes) == []  # the bytes of a record from before
    assert policy_from_pb(policy_to_pb(GovernancePolicy())) == GovernancePolicy()
    changed = apply_settings(GovernancePolicy(), (("class/pii", "max"),))
    assert isinstance(changed, GovernancePolicy)
    assert [(r.name, r.level) for r in policy_to_pb(changed).data_classes] == \
        [("internal", "high"), ("pii", "max"), ("public", "standard"), ("secret", "max")]
    assert policy_from_pb(policy_to_pb(changed)) == changed
