"""A receiver killed between renaming a verified snapshot into place and swapping its state in
(failpoint snapshot.install) restarts with a state older than the snapshot on disk: start-up must
install the snapshot's body before pysyncobj takes the snapshot's index as applied."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from pysyncobj.config import SERIALIZER_STATE

from fedraft.consensus.applier import Applier
from fedraft.consensus.snapshot import SnapshotSerializer
from fedraft.crypto.envelopes import build_envelope
from fedraft.crypto.signing import Signer
from fedraft.domain import commands as c
from fedraft.storage.state import StateStore
from tests.helpers import Fed, make_federation, sign_entry

T0 = 1_800_000_000_000


def _apply_puts(fed: Fed, store: StateStore, upto: int) -> None:
    applier = Applier(store)
    for index in range(store.applied_index() + 1, upto + 1):
        env = build_envelope(Signer(fed.admins["hq"]), fed.cluster_id, c.Put(f"/routes/k{index}", b"v"),
                             now_ms=T0 + index)
        assert applier.apply(index, 1, sign_entry(fed, "hq", 1, [env], T0 + index)) is not None
    store.commit()


def _serializer(fed: Fed, path: Path, store: StateStore, node: str) -> SnapshotSerializer:
    def key_for(node_id: str) -> bytes | None:
        voter = fed.genesis.voter(node_id)
        return voter.public_key if voter is not None else None

    return SnapshotSerializer(path, source=store, signer=Signer(fed.nodes[node]), node_id=node,
                              cluster_id=fed.cluster_id, verify_key_for=key_for)


def _snapshot_at(fed: Fed, tmp: Path, index: int) -> tuple[Path, bytes]:
    store = StateStore(tmp / "leader-state", fed.genesis, map_size=64 << 20)
    _apply_puts(fed, store, index)
    s = _serializer(fed, tmp / "leader-snapshot", store, "hq")
    s.serialize((None, (b"last", index, 1), (b"prev", index - 1, 1), set()), index - 1)
    deadline = time.monotonic() + 10
    while (state := s.checkSerializing()[0]) == SERIALIZER_STATE.SERIALIZING and time.monotonic() < deadline:
        time.sleep(0.005)
    assert state == SERIALIZER_STATE.SUCCESS
    s.close()
    digest = store.digest()
    store.close()
    return tmp / "leader-snapshot", digest


def test_start_up_installs_a_snapshot_the_state_is_behind(tmp_path: Path) -> None:
    fed = make_federation()
    snapshot, digest = _snapshot_at(fed, tmp_path, 20)
    follower = StateStore(tmp_path / "state", fed.genesis, map_size=64 << 20)
    _apply_puts(fed, follower, 7)
    shutil.copy(snapshot, tmp_path / "snapshot.bin")  # renamed into place; the swap never happened
    s = _serializer(fed, tmp_path / "snapshot.bin", follower, "gpu-dc")
    assert s.finish_interrupted_install(follower)
    assert follower.applied_index() == 20 and follower.digest() == digest
    assert not s.finish_interrupted_install(follower)  # done once
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("snapshot")) == ["snapshot.bin"]


def test_start_up_leaves_a_state_at_or_past_the_snapshot_alone(tmp_path: Path) -> None:
    fed = make_federation()
    snapshot, _ = _snapshot_at(fed, tmp_path, 10)
    follower = StateStore(tmp_path / "state", fed.genesis, map_size=64 << 20)
    _apply_puts(fed, follower, 12)
    before = follower.digest()
    shutil.copy(snapshot, tmp_path / "snapshot.bin")
    assert not _serializer(fed, tmp_path / "snapshot.bin", follower, "gpu-dc").finish_interrupted_install(follower)
    assert follower.applied_index() == 12 and follower.digest() == before
