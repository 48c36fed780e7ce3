"""Apply on real LMDB: signatures, authenticity, de-dup, idempotence, and determinism."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.consensus.applier import Applier
from fedraft.crypto.chain import GENESIS_HEAD, next_head
from fedraft.crypto.envelopes import build_envelope
from fedraft.crypto.signing import Identity, Signer
from fedraft.domain import commands as c
from fedraft.domain.outcome import Code
from fedraft.storage.state import StateStore
from tests.helpers import Fed, make_federation, sign_entry

T0 = 1_800_000_000_000


@pytest.fixture()
def fed() -> Fed:
    return make_federation()


def _store(tmp: Path, fed: Fed, name: str = "a") -> StateStore:
    return StateStore(tmp / name, fed.genesis, map_size=64 << 20)


def _env(fed: Fed, who: Identity, command: c.Command, now: int = T0, **kw: object) -> pb.Signed:
    return build_envelope(Signer(who), fed.cluster_id, command, now_ms=now, **kw)  # type: ignore[arg-type]


def _apply(store: StateStore, index: int, term: int, data: bytes) -> list[pb.Result]:
    applied = Applier(store).apply(index, term, data)
    store.commit()
    assert applied is not None
    return applied.results


def test_put_get_and_chain(tmp_path: Path, fed: Fed) -> None:
    store = _store(tmp_path, fed)
    data = sign_entry(fed, "hq", 1, [_env(fed, fed.admins["hq"], c.Put("/routes/a", b"1"))], T0)
    results = _apply(store, 2, 1, data)
    assert [r.code for r in results] == [Code.OK]
    assert results[0].record.version == 1 and results[0].index == 2
    with store.read() as s:
        assert s.registry_get("/routes/a").value == b"1"  # type: ignore[union-attr]
        assert s.applied_index == 2
        assert s.chain_head == next_head(GENESIS_HEAD, data)
        assert s.archive_get(2) == data


def test_replay_is_idempotent(tmp_path: Path, fed: Fed) -> None:
    store = _store(tmp_path, fed)
    data = sign_entry(fed, "hq", 1, [_env(fed, fed.admins["hq"], c.Put("/routes/a", b"1"))], T0)
    _apply(store, 2, 1, data)
    digest = store.digest()
    assert Applier(store).apply(2, 1, data) is None  # a restart replays applied entries: no effect
    store.commit()
    assert store.digest() == digest


def test_repeated_request_returns_first_result(tmp_path: Path, fed: Fed) -> None:
    store = _store(tmp_path, fed)
    env = _env(fed, fed.admins["hq"], c.Put("/routes/a", b"1"))
    first = _apply(store, 2, 1, sign_entry(fed, "hq", 1, [env], T0))[0]
    again = _apply(store, 3, 1, sign_entry(fed, "hq", 1, [env], T0 + 10))[0]
    assert again == first
    with store.read() as s:
        assert s.registry_get("/routes/a").version == 1  # type: ignore[union-attr]


def test_request_id_reuse_with_other_body_is_refused(tmp_path: Path, fed: Fed) -> None:
    store = _store(tmp_path, fed)
    rid = b"r" * 16
    _apply(store, 2, 1, sign_entry(fed, "hq", 1, [_env(fed, fed.admins["hq"], c.Put("/routes/a", b"1"),
                                                        request_id=rid)], T0))
    res = _apply(store, 3, 1, sign_entry(fed, "hq", 1, [_env(fed, fed.admins["hq"], c.Put("/routes/a", b"2"),
                                                              request_id=rid)], T0))
    assert res[0].code == Code.INVALID_ARGUMENT and "reused" in res[0].message


@pytest.mark.parametrize("case", ["bad_sig", "unknown_key", "wrong_cluster", "expired", "truncated_body",
                                  "future", "node_writes_registry"])
def test_bad_envelopes_are_rejected_with_reasons(tmp_path: Path, fed: Fed, case: str) -> None:
    store = _store(tmp_path, fed)
    admin = fed.admins["hq"]
    env = _env(fed, admin, c.Put("/routes/a", b"1"))
    expect = {"bad_sig": Code.UNAUTHENTICATED, "unknown_key": Code.UNAUTHENTICATED,
              "wrong_cluster": Code.UNAUTHENTICATED, "expired": Code.DEADLINE_EXCEEDED,
              "truncated_body": Code.UNAUTHENTICATED, "future": Code.INVALID_ARGUMENT,
              "node_writes_registry": Code.PERMISSION_DENIED}[case]
    if case == "bad_sig":
        env.sig = bytes(64)
    elif case == "unknown_key":
        env = _env(fed, Identity.generate(), c.Put("/routes/a", b"1"))
    elif case == "wrong_cluster":
        env = build_envelope(Signer(admin), hashlib.sha256(b"other").digest(), c.Put("/routes/a", b"1"), now_ms=T0)
    elif case == "expired":
        env = _env(fed, admin, c.Put("/routes/a", b"1"), now=T0 - 200_000, validity_ms=100_000)
    elif case == "truncated_body":
        env.body = env.body[:-3]
    elif case == "future":
        env = _env(fed, admin, c.Put("/routes/a", b"1"), now=T0 + 120_000)
    elif case == "node_writes_registry":
        env = _env(fed, fed.nodes["gpu-dc"], c.Put("/routes/a", b"1"))
    result = _apply(store, 2, 1, sign_entry(fed, "hq", 1, [env], T0))[0]
    assert result.code == expect, result.message
    assert result.message
    with store.read() as s:
        assert s.registry_get("/routes/a") is None
        assert s.applied_index == 2  # the entry itself applied; only the envelope was refused


@pytest.mark.parametrize("case", ["garbage", "unsigned_by_voter", "bad_entry_sig", "term_mismatch",
                                  "leader_id_lies", "second_leader_same_term", "older_term"])
def test_bad_entries_are_rejected_as_a_whole(tmp_path: Path, fed: Fed, case: str) -> None:
    store = _store(tmp_path, fed)
    _apply(store, 2, 3, sign_entry(fed, "hq", 3, [], T0))  # term 3 led by hq
    env = _env(fed, fed.admins["hq"], c.Put("/routes/a", b"1"))
    term, slot_term = 3, 3
    data = sign_entry(fed, "hq", term, [env], T0)
    if case == "garbage":
        data = b"\x01\x02garbage"
    elif case == "unsigned_by_voter":
        fed.nodes["hq"] = Identity.generate()
        data = sign_entry(fed, "hq", term, [env], T0)
    elif case == "bad_entry_sig":
        signed = pb.Signed()
        signed.ParseFromString(data)
        signed.sig = bytes(64)
        data = signed.SerializeToString()
    elif case == "term_mismatch":
        slot_term = 4
    elif case == "leader_id_lies":
        entry = pb.LogEntry(term=3, leader_id="gpu-dc", leader_time_ms=T0, envelopes=[env])
        body = entry.SerializeToString()
        signer = Signer(fed.nodes["hq"])
        from fedraft.crypto.signing import CTX_ENTRY

        data = pb.Signed(body=body, sig=signer.sign(CTX_ENTRY, fed.cluster_id, body),
                         key_id=signer.key_id).SerializeToString()
    elif case == "second_leader_same_term":
        data = sign_entry(fed, "gpu-dc", 3, [env], T0)
    elif case == "older_term":
        data = sign_entry(fed, "hq", 2, [env], T0)
        slot_term = 2
    results = _apply(store, 3, slot_term, data)
    assert all(r.code == Code.UNAVAILABLE for r in results)
    with store.read() as s:
        assert s.registry_get("/routes/a") is None
        assert s.applied_index == 3
        assert s.archive_get(3) == data  # kept so the exported log verifies


def test_batched_envelopes_see_each_other(tmp_path: Path, fed: Fed) -> None:
    store = _store(tmp_path, fed)
    a = fed.admins["hq"]
    envs = [_env(fed, a, c.CompareAndSet("/settings/x", b"1", 0)),
            _env(fed, a, c.CompareAndSet("/settings/x", b"2", 1)),
            _env(fed, a, c.CompareAndSet("/settings/x", b"3", 1))]
    results = _apply(store, 2, 1, sign_entry(fed, "hq", 1, envs, T0))
    assert [r.code for r in results] == [Code.OK, Code.OK, Code.FAILED_PRECONDITION]
    assert [r.ordinal for r in results] == [0, 1, 2]


def test_dedup_records_are_pruned_after_expiry(tmp_path: Path, fed: Fed) -> None:
    store = _store(tmp_path, fed)
    _apply(store, 2, 1, sign_entry(fed, "hq", 1, [_env(fed, fed.admins["hq"], c.Put("/routes/a", b"1"),
                                                        validity_ms=1000)], T0))
    with store.read() as s:
        assert s.txn.stat(s._dbs[b"dedup"])["entries"] == 1
    _apply(store, 3, 1, sign_entry(fed, "hq", 1, [], T0 + 5000))
    with store.read() as s:
        assert s.txn.stat(s._dbs[b"dedup"])["entries"] == 0


OPS = st.lists(st.tuples(st.sampled_from(["put", "cas", "delete"]), st.sampled_from(["/routes/a", "/settings/b"]),
                         st.binary(max_size=8), st.integers(0, 3)), min_size=1, max_size=25)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS, split=st.integers(1, 5))
def test_two_appliers_reach_identical_state(tmp_path_factory: pytest.TempPathFactory, ops: list, split: int) -> None:
    fed = make_federation()
    tmp = tmp_path_factory.mktemp("det")
    a, b = _store(tmp, fed, "a"), _store(tmp, fed, "b")
    admin = fed.admins["gpu-dc"]
    envs = []
    for kind, key, value, version in ops:
        cmd: c.Command = (c.Put(key, value) if kind == "put" else c.CompareAndSet(key, value, version)
                          if kind == "cas" else c.Delete(key))
        envs.append(_env(fed, admin, cmd))
    entries = [sign_entry(fed, "hq", 1, envs[i:i + split], T0 + i) for i in range(0, len(envs), split)]
    for store in (a, b):
        for i, data in enumerate(entries):
            _apply(store, i + 2, 1, data)
    assert a.digest() == b.digest()
    a.close()
    b.close()
