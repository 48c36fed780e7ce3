"""Export the log with its checkpoints and verify it offline; every tampering is found, the first bad
index named (SPEC §4, issue 8 item 4)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.consensus.applier import Applier
from fedraft.crypto.checkpoint import cosign_request_id, sign_checkpoint
from fedraft.crypto.envelopes import build_envelope
from fedraft.crypto.logfile import (
    CHECKPOINT,
    END,
    ENTRY,
    MAGIC,
    REJECTED,
    Record,
    encode_record,
    entry_payload,
    read_records,
    rejected_payload,
    verify_log,
)
from fedraft.crypto.signing import CTX_ENTRY, Identity, Signer
from fedraft.domain import commands as c
from fedraft.domain.governance.policy import GovernancePolicy
from fedraft.storage import checkpoint_schema, governance_schema
from fedraft.storage.log_export import chunked, export_records
from fedraft.storage.state import StateStore
from tests.helpers import Fed, make_federation, sign_entry

T0 = 1_800_000_000_000
INTERVAL = 16
# index -> (term, leader). Not archived: pysyncobj's initial no-op at index 1 (term 0) and its leaders'
# no-ops at the start of terms 1 and 2 (indexes 2 and 21).
LAYOUT = {i: (1, "hq") for i in range(3, 21)} | {i: (2, "gpu-dc") for i in range(22, 41)}
TERM_STARTS = {3, 22}


class Log:
    def __init__(self, fed: Fed, store: StateStore) -> None:
        self.fed = fed
        self.store = store
        self.applier = Applier(store)
        self.pending: list[pb.Signed] = []

    def apply(self, index: int) -> None:
        term, leader = LAYOUT[index]
        envelopes = self.pending or [build_envelope(Signer(self.fed.admins["hq"]), self.fed.cluster_id,
                                                    c.Put(f"/routes/k{index % 5}", b"v%d" % index),
                                                    now_ms=T0 + index * 10)]
        self.pending = []
        data = sign_entry(self.fed, leader, term, envelopes, T0 + index * 10)
        assert self.applier.apply(index, term, data) is not None
        self.store.commit()

    def cosign_next(self, checkpoint: int, nodes: list[str], now: int) -> None:
        with self.store.read() as st:
            rec = checkpoint_schema.get(st, checkpoint)
        assert rec is not None
        for node in nodes:
            signer = Signer(self.fed.nodes[node])
            head, digest = bytes(rec.chain_head), bytes(rec.state_digest)
            cmd = c.Cosign(checkpoint, head, digest, sign_checkpoint(signer, self.fed.cluster_id, checkpoint, head,
                                                                     digest))
            self.pending.append(build_envelope(signer, self.fed.cluster_id, cmd, now_ms=T0 + now,
                                               request_id=cosign_request_id(node, checkpoint)))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Fed, bytes]:
    fed = make_federation()
    store = StateStore(tmp_path_factory.mktemp("log") / "state", fed.genesis, map_size=64 << 20)
    governance_schema.put_policy(store.writer(), GovernancePolicy(checkpoint_interval=INTERVAL))
    store.commit()
    log = Log(fed, store)
    for index in sorted(LAYOUT):
        if index == 18:
            log.cosign_next(16, ["hq", "gpu-dc"], 180)
        if index == 35:
            log.cosign_next(32, ["gpu-dc", "cpu-branch", "hq"], 350)
        log.apply(index)
    with store.read() as st:
        data = b"".join(chunked(export_records(st, fed.genesis.raw), 256))
    store.close()
    return fed, data


def _records(data: bytes) -> list[Record]:
    return list(read_records(data))


def _build(records: list[Record]) -> bytes:
    body = [encode_record(r.kind, r.payload) for r in records if r.kind != END]
    return MAGIC + b"".join(body) + encode_record(END, len(body).to_bytes(8, "big"))


def _entry_positions(records: list[Record]) -> dict[int, int]:
    return {int.from_bytes(r.payload[:8], "big"): i for i, r in enumerate(records) if r.kind == ENTRY}


def test_an_untouched_export_verifies(exported: tuple[Fed, bytes]) -> None:
    fed, data = exported
    report = verify_log(data, fed.cluster_id)
    assert report.ok, report.problems
    assert (report.entries, report.first_index, report.last_index) == (37, 3, 40)
    assert (report.checkpoints, report.complete_checkpoints, report.anchored_index) == (2, 2, 32)
    assert any("33..40" in w for w in report.warnings)  # the tail after the last checkpoint
    assert report.envelopes == 37 - 2 + 5


def test_without_an_expected_cluster_id_the_file_is_trusted_and_says_so(exported: tuple[Fed, bytes]) -> None:
    _, data = exported
    report = verify_log(data)
    assert report.ok and report.genesis_trusted_from_file
    assert any("trusted" in w for w in report.warnings)


def test_another_federation_is_refused(exported: tuple[Fed, bytes]) -> None:
    _, data = exported
    report = verify_log(data, make_federation().cluster_id)
    assert not report.ok and "not the expected" in str(report.problems[0])


def _flip_entry_bytes(fed: Fed, records: list[Record], index: int, stride: int) -> None:
    pos = _entry_positions(records)[index]
    payload = records[pos].payload
    for i in range(0, len(payload), stride):
        changed = bytearray(payload)
        changed[i] ^= 0x01 << (i % 8)
        tampered = [*records[:pos], Record(ENTRY, bytes(changed), 0), *records[pos + 1:]]
        report = verify_log(_build(tampered), fed.cluster_id)
        assert not report.ok, (index, i)
        # A flipped index label of a term's first entry leaves its index empty next to the new leader's
        # no-op: the first of the two is named (see test_a_dropped_entry_is_found_at_its_index).
        expected = {index - 1, index} if i < 8 and index in TERM_STARTS else {index}
        assert report.first_bad in expected, (index, i, [str(p) for p in report.problems])


def test_every_flipped_byte_of_an_entry_is_found_at_that_entry(exported: tuple[Fed, bytes]) -> None:
    fed, data = exported
    records = _records(data)
    _flip_entry_bytes(fed, records, 10, 1)
    for index in (18, 33):  # with Cosign envelopes; the nightly test flips every byte of every entry
        _flip_entry_bytes(fed, records, index, 7)


@pytest.mark.nightly
def test_every_flipped_byte_of_every_entry_is_found_at_that_entry(exported: tuple[Fed, bytes]) -> None:
    fed, data = exported
    records = _records(data)
    for index in LAYOUT:
        _flip_entry_bytes(fed, records, index, 1)


def test_random_flips_anywhere_in_the_file_are_found(exported: tuple[Fed, bytes]) -> None:
    fed, data = exported
    rng = random.Random(7)
    for _ in range(300):
        i = rng.randrange(len(MAGIC), len(data))
        changed = bytearray(data)
        changed[i] ^= 1 << rng.randrange(8)
        assert not verify_log(bytes(changed), fed.cluster_id).ok, i


def test_swapped_entries_are_found_at_the_first_of_them(exported: tuple[Fed, bytes]) -> None:
    fed, data = exported
    records = _records(data)
    pos = _entry_positions(records)
    for a in (5, 12, 25):
        i, j = pos[a], pos[a + 1]
        swapped = list(records)
        swapped[i], swapped[j] = records[j], records[i]  # index labels move with their entries
        report = verify_log(_build(swapped), fed.cluster_id)
        assert report.first_bad == a, [str(p) for p in report.problems]
        # Swap the entries but keep the labels in order: only the chain (and the leader's clock) tell.
        relabelled = list(records)
        relabelled[i] = Record(ENTRY, entry_payload(a, records[j].payload[8:]), 0)
        relabelled[j] = Record(ENTRY, entry_payload(a + 1, records[i].payload[8:]), 0)
        report = verify_log(_build(relabelled), fed.cluster_id)
        assert not report.ok and report.first_bad == a, [str(p) for p in report.problems]


@pytest.mark.parametrize("dropped", [3, 9, 16, 20, 22, 30, 40])
def test_a_dropped_entry_is_found_at_its_index(exported: tuple[Fed, bytes], dropped: int) -> None:
    fed, data = exported
    records = _records(data)
    pos = _entry_positions(records)[dropped]
    report = verify_log(_build(records[:pos] + records[pos + 1:]), fed.cluster_id)
    assert not report.ok
    # Dropping the first entry of a term leaves two indexes empty (21..22, or 2..3 for term 1): one of
    # them held the new leader's no-op, and which cannot be told, so the first of them is named.
    assert report.first_bad == {3: 2, 22: 21}.get(dropped, dropped), [str(p) for p in report.problems]


def test_inserted_entries_are_found_at_their_index(exported: tuple[Fed, bytes]) -> None:
    fed, data = exported
    records = _records(data)
    pos = _entry_positions(records)

    def insert_at(index: int, signed_entry: bytes) -> list[Record]:
        out = []
        for r in records:
            if r.kind == ENTRY:
                n = int.from_bytes(r.payload[:8], "big")
                if n == index:
                    out.append(Record(ENTRY, entry_payload(index, signed_entry), 0))
                if n >= index:
                    r = Record(ENTRY, entry_payload(n + 1, r.payload[8:]), 0)
            out.append(r)
        return out

    # A replayed entry (a copy of entry 5) and a forged one (signed by a key that is not a voter's).
    replay = records[pos[5]].payload[8:]
    report = verify_log(_build(insert_at(11, replay)), fed.cluster_id)
    assert report.first_bad == 11 and "replayed" in str(report.problems[0]), [str(p) for p in report.problems]
    rogue = Identity.generate()
    entry = pb.LogEntry(term=1, leader_id="hq", leader_time_ms=T0 + 105)
    body = entry.SerializeToString(deterministic=True)
    forged = pb.Signed(body=body, sig=rogue.sign(CTX_ENTRY, fed.cluster_id, body), key_id=rogue.key_id)
    report = verify_log(_build(insert_at(11, forged.SerializeToString())), fed.cluster_id)
    assert report.first_bad == 11, [str(p) for p in report.problems]
    # Appended after the last entry, with the HEAD claim kept: the claim no longer matches.
    first_cp = next(i for i, r in enumerate(records) if r.kind == CHECKPOINT)
    appended = [*records[:first_cp], Record(ENTRY, entry_payload(41, records[pos[40]].payload[8:]), 0),
                *records[first_cp:]]
    report = verify_log(_build(appended), fed.cluster_id)
    assert report.first_bad == 41, [str(p) for p in report.problems]


def test_a_forged_checkpoint_is_found(exported: tuple[Fed, bytes]) -> None:
    fed, data = exported
    records = _records(data)
    cps = [i for i, r in enumerate(records) if r.kind == CHECKPOINT]
    for i in cps:
        rec = pb.CheckpointRecord.FromString(records[i].payload)
        for forge in ("digest", "head", "strip", "fake key"):
            forged = pb.CheckpointRecord()
            forged.CopyFrom(rec)
            if forge == "digest":
                forged.state_digest = bytes(32)
            elif forge == "head":
                forged.chain_head = bytes(32)
            elif forge == "strip":
                del forged.cosignatures[0]
            else:
                rogue = Identity.generate()
                forged.cosignatures[0].public_key = rogue.public_key
                forged.cosignatures[0].signature = sign_checkpoint(Signer(rogue), fed.cluster_id, rec.index,
                                                                   bytes(rec.chain_head), bytes(rec.state_digest))
            tampered = [*records[:i], Record(CHECKPOINT, forged.SerializeToString(), 0), *records[i + 1:]]
            report = verify_log(_build(tampered), fed.cluster_id)
            assert not report.ok and report.first_bad == rec.index, (forge, [str(p) for p in report.problems])
        # A checkpoint dropped from the export: its Cosign entries still name it.
        report = verify_log(_build(records[:i] + records[i + 1:]), fed.cluster_id)
        assert report.first_bad == rec.index, [str(p) for p in report.problems]


def test_a_cut_file_is_found(exported: tuple[Fed, bytes]) -> None:
    fed, data = exported
    for cut in (len(data) - 1, len(data) - 9, len(data) // 2, len(MAGIC) + 3):
        assert not verify_log(data[:cut], fed.cluster_id).ok, cut


def test_the_export_round_trips_through_a_file(exported: tuple[Fed, bytes], tmp_path: Path) -> None:
    fed, data = exported
    path = tmp_path / "log.frlog"
    path.write_bytes(data)
    assert verify_log(path.read_bytes(), fed.cluster_id).ok


def test_an_entry_signed_in_an_earlier_term_than_its_slot_verifies_as_rejected(tmp_path: Path) -> None:
    """A leader that lost and regained leadership while an entry waited in pysyncobj's queue appends it
    in a later term: apply rejects it as a whole (D10); the export carries its slot term (found by the
    flapping-link fault test)."""
    fed = make_federation()
    store = StateStore(tmp_path / "state", fed.genesis, map_size=64 << 20)
    applier = Applier(store)

    def put(index: int, term: int, slot_term: int) -> None:
        env = build_envelope(Signer(fed.admins["hq"]), fed.cluster_id, c.Put(f"/routes/k{index}", b"v"),
                             now_ms=T0 + index)
        assert applier.apply(index, slot_term, sign_entry(fed, "hq", term, [env], T0 + index)) is not None
        store.commit()

    for index in range(3, 11):
        put(index, 1, 1)
    put(12, 1, 3)  # index 11: hq's no-op of term 3; 12 was signed in term 1
    for index in range(13, 16):
        put(index, 3, 3)
    with store.read() as st:
        data = b"".join(export_records(st, fed.genesis.raw))
    report = verify_log(data, fed.cluster_id)
    assert report.ok, [str(p) for p in report.problems]
    assert any("index 12: rejected at apply" in w for w in report.warnings)

    records = _records(data)
    stripped = [r for r in records if r.kind != REJECTED]
    assert verify_log(_build(stripped), fed.cluster_id).first_bad == 11
    claimed = [*records[:-3], Record(REJECTED, rejected_payload(13, 3, "entry term 3 != log slot term 3"), 0),
               *records[-3:]]
    claimed.sort(key=lambda r: {2: 1, 3: 2, 7: 3, 4: 4, 5: 5, 6: 6}.get(r.kind, 0))
    report = verify_log(_build(claimed), fed.cluster_id)
    assert report.first_bad == 13, [str(p) for p in report.problems]
