"""The catalog's pure rules as tables: publish, report a replica, promote a master, static checks."""

from __future__ import annotations

import pytest

from fedraft.domain.catalog import rules
from fedraft.domain.catalog.commands import PromoteMaster, PublishModel, ReportReplica, static_problem
from fedraft.domain.catalog.model import CatalogEntry, ModelVersion, Replica
from fedraft.domain.commands import Command
from fedraft.domain.outcome import Code
from fedraft.domain.roles import Role, may_issue

D1, D2, D3 = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
NOW = 5_000


def entry(*, master: str = "hq", versions: tuple[int, ...] = (1, 2),
          replicas: tuple[tuple[str, int], ...] = ()) -> CatalogEntry:
    return CatalogEntry("llama", master, tuple(ModelVersion(v, bytes([v]) * 32, 1000 * v, published_by=master)
                                               for v in versions),
                        tuple(Replica(p, v, 100) for p, v in sorted(replicas)))


# --- who may issue what --------------------------------------------------------------------------

ROLE_TABLE = [
    (PublishModel("m", 1, D1, 1), {Role.OPERATOR, Role.ADMIN}),
    (ReportReplica("m", 1, "hq"), {Role.NODE, Role.OPERATOR, Role.ADMIN}),
    (PromoteMaster("m", "hq"), {Role.ADMIN}),
]


@pytest.mark.parametrize(("command", "allowed"), ROLE_TABLE, ids=[c.NAME for c, _ in ROLE_TABLE])
def test_roles(command: Command, allowed: set[Role]) -> None:
    assert {r for r in Role if may_issue(r, command)} == allowed


def test_only_promote_master_is_critical() -> None:
    assert PromoteMaster.CRITICAL is True
    assert not getattr(PublishModel, "CRITICAL", False) and not getattr(ReportReplica, "CRITICAL", False)


# --- static checks -------------------------------------------------------------------------------

STATIC = [
    (PublishModel("llama-7b", 1, D1, 1), None),
    (PublishModel("llama-7b", 2**63 - 1, D1, 1, 80_000), None),
    (PublishModel("Llama", 1, D1, 1), "model 'Llama'"),
    (PublishModel("", 1, D1, 1), "model ''"),
    (PublishModel("m", 0, D1, 1), "version is a whole number from 1"),
    (PublishModel("m", 2**63, D1, 1), "version is a whole number from 1"),
    (PublishModel("m", 1, b"\x01" * 31, 1), "digest is 32 bytes"),
    (PublishModel("m", 1, b"", 1), "digest is 32 bytes"),
    (PublishModel("m", 1, D1, 0), "size_bytes must be at least 1"),
    (PublishModel("m", 1, D1, 1, 2**41), "gpu_memory_mb must be"),
    (ReportReplica("m", 1, "gpu-dc"), None),
    (ReportReplica("m", 1), None),                       # the author's own pool
    (ReportReplica("m", 0, "gpu-dc"), "version is a whole number"),
    (ReportReplica("m", 1, "GPU"), "pool 'GPU'"),
    (PromoteMaster("m", "gpu-dc"), None),
    (PromoteMaster("m", ""), "pool ''"),
    (PromoteMaster("m!", "gpu-dc"), "model 'm!'"),
]


@pytest.mark.parametrize(("command", "fragment"), STATIC, ids=[repr(c) for c, _ in STATIC])
def test_static_problems(command: Command, fragment: str | None) -> None:
    problem = static_problem(command)
    if fragment is None:
        assert problem is None
    else:
        assert problem is not None and fragment in problem


# --- PublishModel --------------------------------------------------------------------------------

PUBLISH = [
    # (existing entry, author's pool, version, expected code or None for a new entry)
    (None, "hq", 1, None),
    (None, "gpu-dc", 7, None),                          # any positive version may come first
    (entry(), "hq", 3, None),
    (entry(), "hq", 10, None),                           # gaps are allowed
    (entry(), "gpu-dc", 3, Code.PERMISSION_DENIED),      # only the master publishes
    (entry(replicas=(("gpu-dc", 2),)), "gpu-dc", 3, Code.PERMISSION_DENIED),  # a satellite neither
    (entry(), "hq", 2, Code.ALREADY_EXISTS),
    (entry(), "hq", 1, Code.ALREADY_EXISTS),
    (entry(versions=(1, 5)), "hq", 3, Code.FAILED_PRECONDITION),  # versions only increase
]


@pytest.mark.parametrize(("current", "pool", "version", "code"), PUBLISH)
def test_publish(current: CatalogEntry | None, pool: str, version: int, code: Code | None) -> None:
    command = PublishModel("llama", version, D3, 42, 16_000)
    out = rules.publish(current, pool, command, NOW, 9)
    if code is not None:
        assert isinstance(out, tuple) and out[0] == code, out
        return
    assert isinstance(out, CatalogEntry)
    new = ModelVersion(version, D3, 42, 16_000, published_ms=NOW, published_index=9, published_by=pool)
    assert out.latest == new
    assert out.master == (current.master if current else pool)
    assert out.versions == ((*current.versions, new) if current else (new,))
    assert out.replicas == (current.replicas if current else ())
    assert out.master_since_ms == (current.master_since_ms if current else NOW)


def test_refusals_say_why() -> None:
    out = rules.publish(entry(), "gpu-dc", PublishModel("llama", 3, D1, 1), NOW, 1)
    assert out == (Code.PERMISSION_DENIED, "only the master pool hq publishes llama (a satellite cannot; the "
                                           "master moves by the critical PromoteMaster)")
    out = rules.publish(entry(versions=(4,)), "hq", PublishModel("llama", 3, D1, 1), NOW, 1)
    assert out == (Code.FAILED_PRECONDITION, "llama versions only increase: 3 is below the latest, 4")


# --- ReportReplica -------------------------------------------------------------------------------

REPORT = [
    # (existing entry, author's pool, command pool, version, outcome: code, "unchanged", or replicas after)
    (None, "gpu-dc", "gpu-dc", 1, Code.NOT_FOUND),
    (entry(), "gpu-dc", "gpu-dc", 3, Code.NOT_FOUND),                     # version not published
    (entry(), "gpu-dc", "cpu-branch", 2, Code.PERMISSION_DENIED),         # only one's own pool
    (entry(), "hq", "gpu-dc", 2, Code.PERMISSION_DENIED),                 # the master's admin neither
    (entry(), "hq", "hq", 2, "unchanged"),                                # the master holds it
    (entry(), "gpu-dc", "gpu-dc", 2, (("gpu-dc", 2),)),
    (entry(), "gpu-dc", "", 2, (("gpu-dc", 2),)),                         # "" is the author's pool
    (entry(), "gpu-dc", "gpu-dc", 1, (("gpu-dc", 1),)),                   # an older version is recorded
    (entry(replicas=(("gpu-dc", 1),)), "gpu-dc", "gpu-dc", 2, (("gpu-dc", 2),)),  # newer replaces older
    (entry(replicas=(("gpu-dc", 2),)), "gpu-dc", "gpu-dc", 1, "unchanged"),       # the newer copy stays
    (entry(replicas=(("gpu-dc", 2),)), "gpu-dc", "gpu-dc", 2, (("gpu-dc", 2),)),  # re-verified: time refreshed
    (entry(replicas=(("gpu-dc", 2),)), "cpu-branch", "cpu-branch", 2, (("cpu-branch", 2), ("gpu-dc", 2))),
]


@pytest.mark.parametrize(("current", "author", "pool", "version", "expected"), REPORT)
def test_report_replica(current: CatalogEntry | None, author: str, pool: str, version: int,
                        expected: Code | str | tuple[tuple[str, int], ...]) -> None:
    out = rules.report_replica(current, author, ReportReplica("llama", version, pool), NOW)
    if isinstance(expected, Code):
        assert isinstance(out, tuple) and out[0] == expected, out
    elif expected == "unchanged":
        assert isinstance(out, rules.Unchanged) and out.reason
    else:
        assert isinstance(out, CatalogEntry) and current is not None
        assert [(r.pool, r.version) for r in out.replicas] == list(expected)
        assert out.replica(author) == Replica(author, version, NOW)
        assert (out.master, out.versions) == (current.master, current.versions)


# --- PromoteMaster -------------------------------------------------------------------------------

PROMOTE = [
    # (existing entry, proposer's pool, target, expected code or None)
    (None, "hq", "gpu-dc", Code.NOT_FOUND),
    (entry(replicas=(("gpu-dc", 2),)), "gpu-dc", "gpu-dc", Code.PERMISSION_DENIED),  # self-promotion
    (entry(), "hq", "hq", Code.PERMISSION_DENIED),                    # the master's own admin, too
    (entry(replicas=(("gpu-dc", 2),)), "cpu-branch", "hq", Code.ALREADY_EXISTS),
    (entry(), "hq", "gpu-dc", Code.FAILED_PRECONDITION),              # no replica at all
    (entry(replicas=(("gpu-dc", 1),)), "hq", "gpu-dc", Code.FAILED_PRECONDITION),  # an old version only
    (entry(replicas=(("gpu-dc", 2),)), "hq", "gpu-dc", None),         # the master hands over
    (entry(replicas=(("gpu-dc", 2),)), "cpu-branch", "gpu-dc", None),  # a third pool proposes
]


@pytest.mark.parametrize(("current", "by", "target", "code"), PROMOTE)
def test_promote(current: CatalogEntry | None, by: str, target: str, code: Code | None) -> None:
    out = rules.promote(current, by, "llama", target, NOW)
    if code is not None:
        assert isinstance(out, tuple) and out[0] == code, out
        return
    assert isinstance(out, CatalogEntry) and current is not None
    assert out.master == target and out.master_since_ms == NOW
    assert out.replica(target) is None                          # the master is never a satellite
    assert out.replica(current.master) == Replica(current.master, current.latest.version, NOW)
    assert out.versions == current.versions
    assert out.holders() == tuple(sorted({target, current.master}))


def test_self_promotion_is_named() -> None:
    out = rules.promote(entry(replicas=(("gpu-dc", 2),)), "gpu-dc", "llama", "gpu-dc", NOW)
    assert isinstance(out, tuple) and "a satellite never promotes itself" in out[1]


def test_missing_latest_replica_is_named() -> None:
    out = rules.promote(entry(replicas=(("gpu-dc", 1),)), "hq", "llama", "gpu-dc", NOW)
    assert out == (Code.FAILED_PRECONDITION, "gpu-dc holds version 1 of llama; a new master must hold the latest "
                                             "version, 2 (its node reports it with ReportReplica)")


def test_after_promotion_only_the_new_master_publishes() -> None:
    promoted = rules.promote(entry(replicas=(("gpu-dc", 2),)), "hq", "llama", "gpu-dc", NOW)
    assert isinstance(promoted, CatalogEntry)
    refused = rules.publish(promoted, "hq", PublishModel("llama", 3, D3, 1), NOW, 1)
    assert isinstance(refused, tuple) and refused[0] == Code.PERMISSION_DENIED
    later = rules.publish(promoted, "gpu-dc", PublishModel("llama", 3, D3, 1), NOW, 1)
    assert isinstance(later, CatalogEntry) and later.latest.published_by == "gpu-dc"
    assert later.holders() == ("gpu-dc",)                       # hq holds 2, not the new latest


# --- holders: what data locality reads -----------------------------------------------------------

HOLDERS = [
    (entry(), ("hq",)),
    (entry(replicas=(("gpu-dc", 2), ("cpu-branch", 1))), ("gpu-dc", "hq")),
    (entry(master="zeta", replicas=(("alpha", 2),)), ("alpha", "zeta")),
]


@pytest.mark.parametrize(("current", "holders"), HOLDERS)
def test_holders_are_the_master_and_satellites_on_the_latest(current: CatalogEntry,
                                                             holders: tuple[str, ...]) -> None:
    assert current.holders() == holders


def test_entry_lookups() -> None:
    e = entry(replicas=(("gpu-dc", 1),))
    assert e.version(2) is not None and e.version(9) is None
    assert e.replica("gpu-dc") == Replica("gpu-dc", 1, 100) and e.replica("hq") is None
