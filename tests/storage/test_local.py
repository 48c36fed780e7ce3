"""The pool-local store: hash-chained journals, idempotent keys, verification, local tables (SPEC §5, D14)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedraft.errors import CallerError, OperatorError
from fedraft.storage.local import (
    AUDIT,
    INCIDENTS,
    ZERO_HASH,
    LocalStore,
    Pending,
    applied_key,
    canonical,
    record_hash,
    snapshot_key,
)


def _applied(index: int, ordinal: int = 0, code: int = 0, command: str = "put") -> Pending:
    return Pending({"kind": "applied", "index": index, "ordinal": ordinal, "command": command, "code": code},
                   applied_key(index, ordinal))


@pytest.fixture()
def store(tmp_path: Path) -> LocalStore:
    s = LocalStore(tmp_path / "local", map_size=16 << 20)
    yield s
    s.close()


def _raw(store: LocalStore, chain: str, seq: int) -> bytes:
    with store.env.begin() as txn:
        return bytes(txn.get(seq.to_bytes(8, "big"), db=store._dbs[chain.encode()]))


def _put_raw(store: LocalStore, chain: str, seq: int, value: bytes | None) -> None:
    with store.env.begin(write=True) as txn:
        db = store._dbs[chain.encode()]
        if value is None:
            txn.delete(seq.to_bytes(8, "big"), db=db)
        else:
            txn.put(seq.to_bytes(8, "big"), value, db=db)


def test_append_chains_records_and_reads_them_back(store: LocalStore) -> None:
    seqs = store.append(AUDIT, [_applied(2), _applied(2, 1), _applied(3)], audited_index=3)
    assert seqs == [1, 2, 3]
    records = store.records(AUDIT)
    assert [(r["seq"], r["index"], r["ordinal"]) for r in records] == [(1, 2, 0), (2, 2, 1), (3, 3, 0)]
    prev = ZERO_HASH
    for r in records:
        body = {k: v for k, v in r.items() if k not in ("hash", "prev_hash")}
        assert r["prev_hash"] == prev.hex()
        assert r["hash"] == record_hash(prev, body).hex()
        assert _raw(store, AUDIT, r["seq"]) == canonical(r)  # stored in canonical form
        prev = bytes.fromhex(r["hash"])
    assert store.audited_index() == 3
    assert store.count(AUDIT) == 3 and store.count(INCIDENTS) == 0
    assert store.verify(AUDIT).ok and store.verify(INCIDENTS).ok


def test_rewriting_the_same_index_is_idempotent(store: LocalStore) -> None:
    store.append(AUDIT, [_applied(5), _applied(5, 1)], audited_index=5)
    before = [_raw(store, AUDIT, s) for s in (1, 2)]
    # a replay after a restart hands the same (index, ordinal) again, in any grouping
    assert store.append(AUDIT, [_applied(5, 1), _applied(5)], audited_index=5) == [None, None]
    assert store.append(AUDIT, [_applied(5), _applied(6)], audited_index=6) == [None, 3]
    assert store.count(AUDIT) == 3
    assert [_raw(store, AUDIT, s) for s in (1, 2)] == before
    assert store.audited_index() == 6
    assert store.append(AUDIT, [_applied(4)], audited_index=4) == [4]
    assert store.audited_index() == 6  # the high-water mark never goes back
    assert store.verify(AUDIT).ok


def test_snapshot_range_record_is_keyed_by_its_range(store: LocalStore) -> None:
    snap = Pending({"kind": "snapshot", "first": 3, "last": 40}, snapshot_key(3, 40))
    assert store.append(AUDIT, [_applied(2)], audited_index=2) == [1]
    assert store.append(AUDIT, [snap], audited_index=40) == [2]
    assert store.append(AUDIT, [snap], audited_index=40) == [None]
    store.append(AUDIT, [_applied(41)], audited_index=41)
    assert store.audited_index() == 41
    assert [r["seq"] for r in store.records(AUDIT, since_index=10)] == [2, 3]  # 10 is inside 3..40
    assert [r["seq"] for r in store.records(AUDIT, since_index=41)] == [3]
    assert store.records(AUDIT, since_index=42) == []
    assert store.verify(AUDIT).ok


def test_records_limit_and_latest(store: LocalStore) -> None:
    store.append(AUDIT, [_applied(i) for i in range(1, 11)], audited_index=10)
    assert [r["index"] for r in store.records(AUDIT, limit=3)] == [1, 2, 3]
    assert [r["index"] for r in store.records(AUDIT, limit=3, latest=True)] == [8, 9, 10]
    assert [r["index"] for r in store.records(AUDIT, since_index=4, limit=2)] == [4, 5]
    assert [r["seq"] for r in store.records(AUDIT, after_seq=8)] == [9, 10]


def _five(store: LocalStore) -> None:
    store.append(AUDIT, [_applied(i) for i in range(1, 6)], audited_index=5)
    assert store.verify(AUDIT).ok


def test_verify_detects_a_flipped_byte(store: LocalStore) -> None:
    _five(store)
    raw = bytearray(_raw(store, AUDIT, 3))
    at = raw.index(b'"command":"put"') + len('"command":"')
    raw[at] ^= 0x01  # "put" -> "qut": still JSON, still canonical; only the hash can tell
    _put_raw(store, AUDIT, 3, bytes(raw))
    report = store.verify(AUDIT)
    assert not report.ok and report.bad_seq == 3 and "hash does not match" in report.reason
    assert "record 3" in report.describe()


@pytest.mark.parametrize("position", [0, 10, 40, -3])
def test_verify_detects_a_flipped_byte_anywhere(store: LocalStore, position: int) -> None:
    _five(store)
    raw = bytearray(_raw(store, AUDIT, 2))
    raw[position] ^= 0x20
    _put_raw(store, AUDIT, 2, bytes(raw))
    report = store.verify(AUDIT)
    assert not report.ok and report.bad_seq == 2, report


def test_verify_detects_a_deleted_record(store: LocalStore) -> None:
    _five(store)
    _put_raw(store, AUDIT, 2, None)
    report = store.verify(AUDIT)
    assert not report.ok and report.bad_seq == 2 and "missing" in report.reason


def test_verify_detects_a_deleted_tail(store: LocalStore) -> None:
    _five(store)
    _put_raw(store, AUDIT, 5, None)
    report = store.verify(AUDIT)
    assert not report.ok and report.bad_seq == 5 and "missing" in report.reason


def test_verify_detects_reordered_records(store: LocalStore) -> None:
    _five(store)
    two, three = _raw(store, AUDIT, 2), _raw(store, AUDIT, 3)
    _put_raw(store, AUDIT, 2, three)
    _put_raw(store, AUDIT, 3, two)
    report = store.verify(AUDIT)
    assert not report.ok and report.bad_seq == 2, report


def test_verify_detects_a_renumbered_chain_after_a_deletion(store: LocalStore) -> None:
    """Deleting record 2 and moving 3..5 down keeps the seqs dense; the links still break."""
    _five(store)
    rest = [_raw(store, AUDIT, s) for s in (3, 4, 5)]
    for seq, raw in zip((2, 3, 4), rest, strict=True):
        rec = json.loads(raw)
        rec["seq"] = seq
        _put_raw(store, AUDIT, seq, canonical(rec))
    _put_raw(store, AUDIT, 5, None)
    report = store.verify(AUDIT)
    assert not report.ok and report.bad_seq == 2


def test_verify_detects_a_rewritten_record_with_a_fresh_hash(store: LocalStore) -> None:
    """Someone who recomputes the record's own hash still breaks the next record's prev_hash."""
    _five(store)
    rec = json.loads(_raw(store, AUDIT, 3))
    rec["code"] = 7
    body = {k: v for k, v in rec.items() if k not in ("hash", "prev_hash")}
    rec["hash"] = record_hash(bytes.fromhex(rec["prev_hash"]), body).hex()
    _put_raw(store, AUDIT, 3, canonical(rec))
    report = store.verify(AUDIT)
    assert not report.ok and report.bad_seq == 4 and "prev_hash" in report.reason


def test_incidents_have_their_own_chain_and_keys(store: LocalStore) -> None:
    inc = Pending({"kind": "veto", "level": "warning", "detail": {"pending_id": "ab"}}, b"Kveto/ab")
    assert store.append(INCIDENTS, [inc], levels={"pool/gpu-dc": "down"}) == [1]
    assert store.append(INCIDENTS, [inc]) == [None]
    assert store.has_key(INCIDENTS, b"Kveto/ab") and not store.has_key(AUDIT, b"Kveto/ab")
    assert store.level("pool/gpu-dc") == "down" and store.levels("pool/") == {"pool/gpu-dc": "down"}
    assert store.level("lockdown") is None
    assert store.count(AUDIT) == 0 and store.verify(INCIDENTS).ok


def test_a_record_body_may_not_carry_hash_fields(store: LocalStore) -> None:
    with pytest.raises(ValueError):
        store.append(AUDIT, [Pending({"kind": "x", "hash": "00"})])


def test_local_tables_set_get_list_unset_and_audit_each_change(store: LocalStore) -> None:
    store.kv_set("toggle", "new-scheduler", "on", by="ops@host", at_ms=1000)
    store.kv_set("toggle", "new-scheduler", "off", by="ops@host", at_ms=2000)
    store.kv_set("flag", "banner", "maintenance tonight", by="ui@host", at_ms=3000)
    assert store.kv_get("toggle", "new-scheduler") == {"key": "new-scheduler", "value": "off", "set_by": "ops@host",
                                                       "set_at_ms": 2000}
    assert store.kv_get("override", "new-scheduler") is None
    assert [e["key"] for e in store.kv_list("flag")] == ["banner"]
    assert store.kv_unset("flag", "banner", by="ui@host", at_ms=4000)
    assert not store.kv_unset("flag", "banner", by="ui@host", at_ms=5000)
    changes = [(r["kind"], r["table"], r["key"], r.get("value"), r["previous"]) for r in store.records(AUDIT)]
    assert changes == [("local_set", "toggle", "new-scheduler", "on", None),
                       ("local_set", "toggle", "new-scheduler", "off", "on"),
                       ("local_set", "flag", "banner", "maintenance tonight", None),
                       ("local_unset", "flag", "banner", None, "maintenance tonight")]
    assert store.verify(AUDIT).ok
    with pytest.raises(CallerError):
        store.kv_set("color", "x", "y", by="", at_ms=0)
    with pytest.raises(CallerError):
        store.kv_set("toggle", "", "y", by="", at_ms=0)
    with pytest.raises(CallerError):
        store.kv_set("toggle", "x", "y" * 5000, by="", at_ms=0)


def test_read_only_opening(tmp_path: Path) -> None:
    with pytest.raises(OperatorError, match="no pool-local records"):
        LocalStore(tmp_path / "nothing", readonly=True)
    with LocalStore(tmp_path / "local", map_size=16 << 20) as writer:
        writer.append(AUDIT, [_applied(1)], audited_index=1)
        # a reader beside the writer (the CLI while the node runs) — another process in real life
    with LocalStore(tmp_path / "local", readonly=True) as reader:
        assert [r["index"] for r in reader.records(AUDIT)] == [1]
        assert reader.verify(AUDIT).ok
        with pytest.raises(OperatorError, match="read-only"):
            reader.kv_set("toggle", "a", "b", by="", at_ms=0)
