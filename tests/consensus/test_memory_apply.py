"""Memories through the real Applier on LMDB (SPEC §5, D12; decision 0009): a value is stored sealed to
exactly the pools that qualify at apply (the memory's own pool and the pools paired with it at the data
class's level); a missing or extra box is refused; the ciphertexts every node stores open only with
the qualifying pools' keys; reseal after a trust change or an agent key rotation; data classes from
the policy; two stores reach the same state."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.crypto.sealing import OpenError, open_box, seal, seal_all
from fedraft.crypto.signing import Identity
from fedraft.domain import commands as c
from fedraft.domain.governance import commands as gc
from fedraft.domain.governance.memories import DeleteMemory, PutMemory, Sealed
from fedraft.domain.outcome import Code
from fedraft.domain.placement.model import Trust
from fedraft.domain.roles import Role
from fedraft.storage import memory_schema
from fedraft.storage.state import REPLICATED_DBS, StateStore
from tests.consensus.test_governance_apply import enact, ok, refused
from tests.consensus.test_placement_apply import Log
from tests.helpers import Fed, make_federation


@pytest.fixture()
def fed() -> Fed:
    return make_federation()


@pytest.fixture()
def log(tmp_path: Path, fed: Fed) -> Log:
    log = Log(fed, [StateStore(tmp_path / "a", fed.genesis, map_size=64 << 20),
                    StateStore(tmp_path / "b", fed.genesis, map_size=64 << 20)])
    log.pair("hq", "gpu-dc", Trust.HIGH)
    log.pair("hq", "cpu-branch", Trust.STANDARD)
    return log


def keys_of(log: Log) -> dict[str, Identity]:
    """Each voter pool's box key is its node key."""
    return dict(log.fed.nodes)


def sealed_for(log: Log, pools: list[str], key: str, value: bytes, owner: str = "hq",
               keys: dict[str, Identity] | None = None) -> tuple[Sealed, ...]:
    keys = keys or keys_of(log)
    return seal_all([(p, keys[p].key_id, keys[p].public_key) for p in pools], key, owner, value)


def put(log: Log, pools: list[str], key: str = "notes/plan", value: bytes = b"the plan", cls: str = "internal",
        by: Identity | None = None, **kw: object) -> pb.Result:
    return log.one(by or log.fed.admins["hq"], PutMemory(key, cls, sealed_for(log, pools, key, value), **kw))  # type: ignore[arg-type]


def stored(log: Log, key: str, store: int = 0) -> tuple[object, dict[str, bytes]]:
    with log.stores[store].read() as st:
        record = memory_schema.get(st, key)
        boxes = {b.pool: bytes(b.box) for b in memory_schema.boxes(st, key)}
    return record, boxes


def openers(boxes: dict[str, bytes], key: str, owner: str, identities: dict[str, Identity]) -> set[tuple[str, str]]:
    """(box pool, key's pool) for every key that opens a stored box."""
    out = set()
    for box_pool, box in boxes.items():
        for pool, ident in identities.items():
            try:
                open_box(ident, box, key, owner)
            except OpenError:
                continue
            out.add((box_pool, pool))
    return out


def test_a_memory_is_sealed_to_exactly_the_qualifying_pools(log: Log) -> None:
    r = ok(put(log, ["gpu-dc", "hq"]))
    m = r.governance.memory
    assert (m.key, m.data_class, m.level, m.pool, m.version, list(m.pools)) == \
        ("notes/plan", "internal", "high", "hq", 1, ["gpu-dc", "hq"])
    assert m.author == "hq-admin" and bytes(m.author_key_id) == log.fed.admins["hq"].key_id
    assert "sealed to gpu-dc, hq" in r.message
    for i in range(2):  # every node stores the same record and boxes
        record, boxes = stored(log, "notes/plan", i)
        assert record == m and sorted(boxes) == ["gpu-dc", "hq"]
    # class public (standard): cpu-branch qualifies too
    r = ok(put(log, ["cpu-branch", "gpu-dc", "hq"], key="notes/menu", cls="public"))
    assert list(r.governance.memory.pools) == ["cpu-branch", "gpu-dc", "hq"]
    # class secret (max): only the own pool
    assert list(ok(put(log, ["hq"], key="notes/keys", cls="secret")).governance.memory.pools) == ["hq"]


def test_a_missing_or_extra_box_is_refused_with_the_reason(log: Log) -> None:
    refused(put(log, ["hq"]), Code.FAILED_PRECONDITION, "no sealed value for gpu-dc, which qualify for class "
                                                        "internal (high) from hq")
    refused(put(log, ["cpu-branch", "gpu-dc", "hq"]), Code.PERMISSION_DENIED,
            "sealed values for cpu-branch, which may not receive class internal (high) from hq: cpu-branch: "
            "trusted at standard, below high")
    refused(put(log, ["gpu-dc"]), Code.FAILED_PRECONDITION, "no sealed value for hq")
    # a box sealed to another key than the pool's is refused by key id
    wrong = Identity.generate()
    boxes = sealed_for(log, ["gpu-dc", "hq"], "k", b"v", keys={**keys_of(log), "gpu-dc": wrong})
    refused(log.one(log.fed.admins["hq"], PutMemory("k", "internal", boxes)), Code.FAILED_PRECONDITION,
            f"sealed to key {wrong.key_id.hex()}")
    # unknown class, bad shapes (static: refused before any state is read)
    refused(put(log, ["gpu-dc", "hq"], cls="classified"), Code.NOT_FOUND, "unknown data class 'classified'")
    unsorted = tuple(reversed(sealed_for(log, ["gpu-dc", "hq"], "k", b"v")))
    refused(log.one(log.fed.admins["hq"], PutMemory("k", "internal", unsorted)), Code.INVALID_ARGUMENT,
            "sorted by pool")
    refused(put(log, ["gpu-dc", "hq"], key="/abs"), Code.INVALID_ARGUMENT, "memory key")
    refused(put(log, ["gpu-dc", "hq"], value=b"x" * (64 * 1024 + 1)), Code.INVALID_ARGUMENT,
            "a box holds a value of at most 65536 bytes")
    dc, hq = log.fed.nodes["gpu-dc"], log.fed.nodes["hq"]
    mixed = (Sealed("gpu-dc", dc.key_id, seal(dc.public_key, "k", "hq", b"a")),
             Sealed("hq", hq.key_id, seal(hq.public_key, "k", "hq", b"ab")))
    refused(log.one(log.fed.admins["hq"], PutMemory("k", "internal", mixed)), Code.INVALID_ARGUMENT,
            "differ in size")
    with log.stores[0].read() as st:
        assert list(memory_schema.records(st)) == []


def test_a_pool_below_the_level_holds_only_ciphertext_it_cannot_open(log: Log) -> None:
    ok(put(log, ["gpu-dc", "hq"], value=b"quarterly numbers"))
    for i in range(2):
        _, boxes = stored(log, "notes/plan", i)
        # every stored ciphertext opens only with the key of the pool it is for; cpu-branch's key opens none
        assert openers(boxes, "notes/plan", "hq", keys_of(log)) == {("gpu-dc", "gpu-dc"), ("hq", "hq")}
        assert "cpu-branch" not in boxes
        assert all(b"quarterly" not in box for box in boxes.values())
        assert open_box(log.fed.nodes["gpu-dc"], boxes["gpu-dc"], "notes/plan", "hq") == b"quarterly numbers"
        with pytest.raises(OpenError):
            open_box(log.fed.nodes["cpu-branch"], boxes["gpu-dc"], "notes/plan", "hq")
        with pytest.raises(OpenError, match="belongs to memory 'notes/plan' of hq"):
            open_box(log.fed.nodes["gpu-dc"], boxes["gpu-dc"], "notes/other", "hq")  # bound to its memory
    # nor is plaintext anywhere in the replicated state, the archived log entries included
    with log.stores[0].read() as st:
        assert not any(b"quarterly" in value for name in REPLICATED_DBS for _, value in st.items(name))


def test_reseal_after_set_trust_follows_the_pools_that_qualify_now(log: Log) -> None:
    ok(put(log, ["gpu-dc", "hq"]))
    enact(log, gc.SetTrust("hq", "cpu-branch", Trust.HIGH))
    # the stored boxes are as they were (a trust change protects or opens future writes only)
    assert sorted(stored(log, "notes/plan")[1]) == ["gpu-dc", "hq"]
    # a reseal without cpu-branch's box is now refused; with it, cpu-branch can read
    refused(put(log, ["gpu-dc", "hq"], expected_version=1), Code.FAILED_PRECONDITION, "no sealed value for cpu-branch")
    r = ok(put(log, ["cpu-branch", "gpu-dc", "hq"], expected_version=1))
    assert (r.governance.memory.version, list(r.governance.memory.pools)) == (2, ["cpu-branch", "gpu-dc", "hq"])
    _, boxes = stored(log, "notes/plan")
    assert open_box(log.fed.nodes["cpu-branch"], boxes["cpu-branch"], "notes/plan", "hq") == b"the plan"
    # downgraded again: the reseal drops cpu-branch's box
    enact(log, gc.SetTrust("hq", "cpu-branch", Trust.STANDARD))
    refused(put(log, ["cpu-branch", "gpu-dc", "hq"], expected_version=2), Code.PERMISSION_DENIED, "cpu-branch")
    ok(put(log, ["gpu-dc", "hq"], expected_version=2))
    record, boxes = stored(log, "notes/plan")
    assert sorted(boxes) == ["gpu-dc", "hq"] and record.version == 3  # type: ignore[attr-defined]
    # unpaired: gpu-dc no longer qualifies at all
    enact(log, gc.Unpair("hq", "gpu-dc"))
    refused(put(log, ["gpu-dc", "hq"]), Code.PERMISSION_DENIED, "gpu-dc: not paired with hq")
    refused(put(log, ["hq"], expected_version=2), Code.FAILED_PRECONDITION, "at version 3, not 2")


def test_member_pools_get_boxes_for_their_agent_key_and_reseal_after_rotation(log: Log) -> None:
    fed = log.fed
    agent, new_agent = Identity.generate(), Identity.generate()
    enact(log, gc.RegisterPool("edge", "eu", "cpu", agent.public_key))
    edge_admin = Identity.generate()
    enact(log, gc.AddPrincipal(edge_admin.public_key, "edge", Role.ADMIN, "edge-admin"))
    ok(log.one(edge_admin, gc.PairOffer("hq", Trust.MAX)))
    ok(log.one(fed.admins["hq"], gc.PairAccept("edge")))
    keys = {**keys_of(log), "edge": agent}
    r = ok(log.one(fed.admins["hq"], PutMemory("k", "secret", sealed_for(log, ["edge", "hq"], "k", b"v", keys=keys))))
    assert list(r.governance.memory.key_ids) == [agent.key_id, fed.nodes["hq"].key_id]
    _, boxes = stored(log, "k")
    assert open_box(agent, boxes["edge"], "k", "hq") == b"v"
    enact(log, gc.RotateKey(agent.key_id, new_agent.public_key))
    # the old box stays (opened by the old key only); a put with it is refused until resealed
    refused(log.one(fed.admins["hq"], PutMemory("k", "secret", sealed_for(log, ["edge", "hq"], "k", b"v", keys=keys))),
            Code.FAILED_PRECONDITION, f"edge's key is now {new_agent.key_id.hex()}")
    keys["edge"] = new_agent
    ok(log.one(fed.admins["hq"], PutMemory("k", "secret", sealed_for(log, ["edge", "hq"], "k", b"v", keys=keys))))
    _, boxes = stored(log, "k")
    assert open_box(new_agent, boxes["edge"], "k", "hq") == b"v"
    with pytest.raises(OpenError):
        open_box(agent, boxes["edge"], "k", "hq")
    # the edge pool's own memory: its admin puts it sealed to its agent's key (and to hq, paired at max)
    ok(log.one(edge_admin, PutMemory("e", "internal", sealed_for(log, ["edge", "hq"], "e", b"x", "edge", keys))))
    # retiring edge drops its memories and its boxes in others' memories
    enact(log, gc.RetirePool("edge"))
    record, boxes = stored(log, "k")
    assert sorted(boxes) == ["hq"] and list(record.pools) == ["hq"]  # type: ignore[attr-defined]
    assert stored(log, "e") == (None, {})


def test_only_principals_of_the_memorys_pool_replace_or_delete_it(log: Log) -> None:
    fed = log.fed
    ok(put(log, ["gpu-dc", "hq"]))
    boxes = sealed_for(log, ["gpu-dc", "hq"], "notes/plan", b"mine", owner="gpu-dc")
    refused(log.one(fed.admins["gpu-dc"], PutMemory("notes/plan", "internal", boxes)), Code.PERMISSION_DENIED,
            "belongs to pool hq")
    refused(log.one(fed.admins["gpu-dc"], DeleteMemory("notes/plan")), Code.PERMISSION_DENIED, "belongs to pool hq")
    refused(log.one(fed.nodes["hq"], DeleteMemory("notes/plan")), Code.PERMISSION_DENIED,
            "role node may not issue delete_memory")
    submitter = Identity.generate()
    enact(log, gc.AddPrincipal(submitter.public_key, "hq", Role.SUBMITTER, "sam"))
    refused(log.one(submitter, DeleteMemory("notes/plan", expected_version=7)), Code.FAILED_PRECONDITION,
            "at version 1, not 7")
    r = ok(log.one(submitter, DeleteMemory("notes/plan", expected_version=1)))
    assert "2 sealed values" in r.message and stored(log, "notes/plan") == (None, {})
    refused(log.one(submitter, DeleteMemory("notes/plan")), Code.NOT_FOUND, "no memory notes/plan")
    ok(put(log, ["gpu-dc", "hq"], by=submitter, expected_version=0))  # version 0: must not exist
    refused(put(log, ["gpu-dc", "hq"], by=submitter, expected_version=0), Code.FAILED_PRECONDITION,
            "exists (version 1)")


def test_data_classes_come_from_the_policy(log: Log) -> None:
    enact(log, gc.SetPolicy((("class/internal", "standard"), ("class/pii", "max"), ("class/public", "none"))))
    refused(put(log, ["cpu-branch", "gpu-dc", "hq"], cls="public"), Code.NOT_FOUND,
            "unknown data class 'public' (policy has: internal, pii, secret)")
    ok(put(log, ["cpu-branch", "gpu-dc", "hq"]))  # internal is standard now
    assert list(ok(put(log, ["hq"], key="p", cls="pii")).governance.memory.pools) == ["hq"]


def test_two_stores_reach_identical_state_through_memories(log: Log) -> None:
    ok(put(log, ["gpu-dc", "hq"]))
    ok(put(log, ["cpu-branch", "gpu-dc", "hq"], key="b", cls="public"))
    ok(log.one(log.fed.admins["hq"], DeleteMemory("b")))
    ok(log.one(log.fed.admins["hq"], c.Put("/routes/x", b"1")))
    digests = set()
    for store in log.stores:
        with store.read() as st:
            digests.add(st.digest())
    assert len(digests) == 1


def test_the_value_cap_is_exact(log: Log) -> None:
    ok(put(log, ["gpu-dc", "hq"], value=b"x" * (64 * 1024)))
    refused(put(log, ["gpu-dc", "hq"], value=b"x" * (64 * 1024 + 1)), Code.INVALID_ARGUMENT,
            "a box holds a value of at most 65536 bytes")
