"""Signed checkpoints at apply (SPEC §4): recorded every interval, cosigned by a majority of voters."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.consensus.applier import Applier
from fedraft.crypto.checkpoint import cosign_request_id, sign_checkpoint
from fedraft.crypto.envelopes import build_envelope
from fedraft.crypto.signing import Identity, Signer
from fedraft.domain import commands as c
from fedraft.domain.governance.policy import GovernancePolicy
from fedraft.domain.outcome import Code
from fedraft.storage import checkpoint_schema, governance_schema
from fedraft.storage.state import StateStore
from tests.helpers import Fed, make_federation, sign_entry

T0 = 1_800_000_000_000
INTERVAL = 16


@pytest.fixture()
def fed() -> Fed:
    return make_federation()


def _store(tmp: Path, fed: Fed, name: str = "a", interval: int = INTERVAL) -> StateStore:
    store = StateStore(tmp / name, fed.genesis, map_size=64 << 20)
    governance_schema.put_policy(store.writer(), GovernancePolicy(checkpoint_interval=interval))
    store.commit()
    return store


def _put(fed: Fed, index: int) -> bytes:
    env = build_envelope(Signer(fed.admins["hq"]), fed.cluster_id, c.Put(f"/routes/k{index}", b"v%d" % index),
                         now_ms=T0 + index)
    return sign_entry(fed, "hq", 1, [env], T0 + index)


def _apply(store: StateStore, index: int, data: bytes) -> list[pb.Result]:
    applied = Applier(store).apply(index, 1, data)
    store.commit()
    assert applied is not None
    return applied.results


def _cosign(fed: Fed, node: str, record: pb.CheckpointRecord, *, who: Identity | None = None,
            digest: bytes | None = None, index: int | None = None) -> bytes:
    signer = Signer(who or fed.nodes[node])
    idx = record.index if index is None else index
    head, state = bytes(record.chain_head), digest or bytes(record.state_digest)
    command = c.Cosign(idx, head, state, sign_checkpoint(Signer(fed.nodes[node]), fed.cluster_id, idx, head, state))
    env = build_envelope(signer, fed.cluster_id, command, now_ms=T0 + 10_000,
                         request_id=cosign_request_id(node, idx) if who is None else None)
    return sign_entry(fed, "hq", 1, [env], T0 + 10_000)


def test_a_checkpoint_every_interval_with_the_digest_as_of_its_index(tmp_path: Path, fed: Fed) -> None:
    a = _store(tmp_path, fed, "a")
    twin = _store(tmp_path, fed, "twin")
    for index in range(1, 40):
        if index == 32:
            continue  # a pysyncobj no-op: the checkpoint moves to the next fedraft entry
        data = _put(fed, index)
        _apply(a, index, data)
        _apply(twin, index, data)
        if index in (16, 33):
            with twin.read() as st:
                assert st.chain_head == bytes(checkpoint_schema.get(st, index).chain_head)  # type: ignore[union-attr]
    with a.read() as st:
        records = list(checkpoint_schema.records(st))
    assert [r.index for r in records] == [16, 33]
    assert all(len(r.state_digest) == 32 and not r.cosignatures and not r.complete_index for r in records)
    assert a.digest() == twin.digest()  # every node records the same checkpoints


def test_the_recorded_digest_is_the_state_before_the_record(tmp_path: Path, fed: Fed) -> None:
    a = _store(tmp_path, fed, "a")
    b = _store(tmp_path, fed, "b", interval=1_000_000)  # never checkpoints
    for index in range(1, INTERVAL + 1):
        data = _put(fed, index)
        _apply(a, index, data)
        _apply(b, index, data)
    with a.read() as st:
        record = checkpoint_schema.get(st, INTERVAL)
    assert record is not None
    # b differs from a only in its policy record and a's checkpoint: put the same policy and compare.
    governance_schema.put_policy(b.writer(), GovernancePolicy(checkpoint_interval=INTERVAL))
    b.commit()
    assert bytes(record.state_digest) == b.digest()


def test_cosignatures_make_a_checkpoint_complete(tmp_path: Path, fed: Fed) -> None:
    store = _store(tmp_path, fed)
    for index in range(1, INTERVAL + 1):
        _apply(store, index, _put(fed, index))
    with store.read() as st:
        record = checkpoint_schema.get(st, INTERVAL)
    assert record is not None
    index = INTERVAL + 1

    def apply(data: bytes) -> pb.Result:
        nonlocal index
        [result] = _apply(store, index, data)
        index += 1
        return result

    first = apply(_cosign(fed, "hq", record))
    assert first.code == Code.OK and "1 of 2" in first.message
    done = apply(_cosign(fed, "gpu-dc", record))
    assert done.code == Code.OK and "complete" in done.message
    again = apply(_cosign(fed, "hq", record, who=fed.nodes["hq"]))  # a new request id, same node
    assert again.code == Code.OK and "before" in again.message
    late = apply(_cosign(fed, "cpu-branch", record))
    assert late.code == Code.OK
    with store.read() as st:
        final = checkpoint_schema.get(st, INTERVAL)
    assert final is not None
    assert [s.node_id for s in final.cosignatures] == ["hq", "gpu-dc", "cpu-branch"]
    assert final.complete_index == done.index


@pytest.mark.parametrize("case", ["digest", "signature", "no checkpoint", "admin", "agent"])
def test_bad_cosignatures_are_refused(tmp_path: Path, fed: Fed, case: str) -> None:
    store = _store(tmp_path, fed)
    for index in range(1, INTERVAL + 1):
        _apply(store, index, _put(fed, index))
    with store.read() as st:
        record = checkpoint_schema.get(st, INTERVAL)
    assert record is not None
    if case == "digest":
        data, code, words = _cosign(fed, "hq", record, digest=b"\x01" * 32), Code.FAILED_PRECONDITION, "differs"
    elif case == "signature":
        bad = pb.CheckpointRecord()
        bad.CopyFrom(record)
        signer = Signer(fed.nodes["hq"])
        head, state = bytes(record.chain_head), bytes(record.state_digest)
        command = c.Cosign(INTERVAL, head, state, sign_checkpoint(signer, fed.cluster_id, INTERVAL + 1, head, state))
        env = build_envelope(signer, fed.cluster_id, command, now_ms=T0 + 10_000)
        data, code, words = sign_entry(fed, "hq", 1, [env], T0 + 10_000), Code.UNAUTHENTICATED, "does not verify"
    elif case == "no checkpoint":
        data, code, words = _cosign(fed, "hq", record, index=5), Code.FAILED_PRECONDITION, "no checkpoint"
    elif case == "admin":
        data, code, words = _cosign(fed, "hq", record, who=fed.admins["hq"]), Code.PERMISSION_DENIED, "may not"
    else:
        agent = Identity.generate()
        store.writer().put_principal(pb.Principal(key_id=agent.key_id, public_key=agent.public_key, pool="edge",
                                                  role="node", name="hq"))
        store.commit()
        data, code, words = _cosign(fed, "hq", record, who=agent), Code.PERMISSION_DENIED, "not a voter"
    [result] = _apply(store, INTERVAL + 1, data)
    assert result.code == code and words in result.message, result
    with store.read() as st:
        assert not checkpoint_schema.get(st, INTERVAL).cosignatures  # type: ignore[union-attr]
