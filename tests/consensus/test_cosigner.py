"""The cosigner: each node signs the checkpoints it applied itself and proposes one Cosign per
checkpoint, retrying the same envelope; apply completes the checkpoint at a majority."""

from __future__ import annotations

from pathlib import Path

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.consensus.applier import Applier
from fedraft.cosigner import Cosigner
from fedraft.crypto.checkpoint import cosign_request_id
from fedraft.crypto.envelopes import build_envelope
from fedraft.crypto.signing import Signer
from fedraft.domain import commands as c
from fedraft.domain.governance.policy import GovernancePolicy
from fedraft.errors import Unavailable
from fedraft.storage import checkpoint_schema, governance_schema
from fedraft.storage.state import StateStore
from tests.helpers import Fed, make_federation, sign_entry

T0 = 1_800_000_000_000


class Leader:
    """Stands in for the client: applies what is proposed as the next entry, or fails on demand."""

    def __init__(self, fed: Fed, store: StateStore) -> None:
        self.fed, self.store, self.applier = fed, store, Applier(store)
        self.index = store.applied_index()
        self.sent: list[pb.Signed] = []
        self.fail_next = 0

    def propose_signed(self, envelopes: list[pb.Signed]) -> list[pb.Result]:
        self.sent.extend(envelopes)
        if self.fail_next:
            self.fail_next -= 1
            raise Unavailable("no leader")
        self.index += 1
        applied = self.applier.apply(self.index, 1, sign_entry(self.fed, "hq", 1, envelopes, T0 + self.index))
        self.store.commit()
        assert applied is not None
        return applied.results

    def puts(self, n: int) -> None:
        for _ in range(n):
            self.propose_signed([build_envelope(Signer(self.fed.admins["hq"]), self.fed.cluster_id,
                                                c.Put(f"/routes/k{self.index}", b"v"), now_ms=T0 + self.index)])


def _setup(tmp_path: Path) -> tuple[Fed, StateStore, Leader]:
    fed = make_federation()
    store = StateStore(tmp_path / "state", fed.genesis, map_size=64 << 20)
    governance_schema.put_policy(store.writer(), GovernancePolicy(checkpoint_interval=16))
    store.commit()
    return fed, store, Leader(fed, store)


def _cosigner(fed: Fed, store: StateStore, leader: Leader, node: str, floor: int = 0) -> Cosigner:
    return Cosigner(leader, store, node, Signer(fed.nodes[node]), fed.cluster_id,  # type: ignore[arg-type]
                    floor=floor, wall_ms=lambda: T0 + 1_000)


def test_each_node_cosigns_once_and_the_checkpoint_completes(tmp_path: Path) -> None:
    fed, store, leader = _setup(tmp_path)
    leader.puts(20)
    signers = [_cosigner(fed, store, leader, n) for n in fed.genesis.node_ids]
    assert [s.round() for s in signers] == [1, 1, 1]
    assert [s.round() for s in signers] == [0, 0, 0]  # nothing left to sign
    with store.read() as st:
        [record] = list(checkpoint_schema.records(st))
    assert sorted(cs.node_id for cs in record.cosignatures) == sorted(fed.genesis.node_ids)
    assert record.complete_index
    assert [pb.Envelope.FromString(e.body).request_id for e in leader.sent[-3:]] == [
        cosign_request_id(n, record.index) for n in fed.genesis.node_ids]


def test_a_lost_proposal_is_retried_with_the_same_envelope(tmp_path: Path) -> None:
    fed, store, leader = _setup(tmp_path)
    leader.puts(20)
    signer = _cosigner(fed, store, leader, "hq")
    leader.fail_next = 1
    assert signer.round() == 0
    assert signer.round() == 1
    assert leader.sent[-1] == leader.sent[-2]


def test_checkpoints_below_the_floor_are_not_signed(tmp_path: Path) -> None:
    fed, store, leader = _setup(tmp_path)
    leader.puts(40)  # checkpoints at 16 and 32
    late = _cosigner(fed, store, leader, "gpu-dc", floor=20)  # started from a snapshot at 20
    assert late.round() == 1
    late.on_snapshot(21, 40)  # a snapshot brought 21..40 too
    with store.read() as st:
        signed = {r.index: [cs.node_id for cs in r.cosignatures] for r in checkpoint_schema.records(st)}
    assert signed == {16: [], 32: ["gpu-dc"]}
    leader.puts(20)  # checkpoint at 48, applied here
    assert late.round() == 1


def test_a_round_between_a_snapshot_install_and_its_listener_signs_nothing(tmp_path: Path) -> None:
    """The install swaps the state on the tick thread before the snapshot listeners run; a cosigner round
    in that gap must not sign the checkpoints the snapshot brought (computed elsewhere, SPEC §4)."""
    fed, source, source_leader = _setup(tmp_path / "source")
    source_leader.puts(40)  # checkpoints at 16 and 32, computed by the source
    copy = tmp_path / "copy.mdb"
    read = source.snapshot_begin()
    with copy.open("wb") as f:
        source.snapshot_copy(read, f.fileno())
    index = read.index
    source.snapshot_end(read)

    store = StateStore(tmp_path / "node", fed.genesis, map_size=64 << 20)  # same federation, fresh node
    leader = Leader(fed, store)
    node = _cosigner(fed, store, leader, "gpu-dc")
    store.install(copy, index)  # the listener (on_snapshot) has not run yet
    assert node.due() == []
    assert node.round() == 0
    node.on_snapshot(1, index)
    assert node.due() == []
    assert leader.sent == []
