"""The receiver leaves alone a snapshot whose last entry its journal already holds (Raft's InstallSnapshot
rule 6, decision 0019): installing it would make pysyncobj clear the journal and drop the entries after it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from fedraft.consensus.snapshot import SnapshotSerializer
from tests.consensus.test_snapshot import OTHER, RecordingSource, _feed, _refused, _valid_file, leader, make

__all__ = ["leader"]  # the fixture, used by name


@dataclass
class FakeJournal:
    first: int
    last: int
    term: int

    def first_index(self) -> int | None:
        return self.first

    def term_at(self, index: int) -> int | None:
        return self.term if self.first <= index <= self.last else None


def _installed(tmp_path: Path, blob: bytes, journal: FakeJournal | None, applied: int) -> bool:
    path = tmp_path / "c" / "snapshot"
    path.parent.mkdir(exist_ok=True)
    source = RecordingSource()
    r = make(path, source, node="node-c", identity=OTHER, applied_index=lambda: applied, journal=journal)
    done = _feed(r, blob)[-1]
    assert done == bool(source.installed)
    return done


def test_a_snapshot_the_journal_holds_is_not_installed(
        tmp_path: Path, leader: tuple[SnapshotSerializer, object]) -> None:
    blob, header = _valid_file(tmp_path, leader)
    # Entries 4..14 of the snapshot's term, applied up to 5: the snapshot at 10 is in the journal.
    _refused(tmp_path, blob, applied_index=lambda: 5, journal=FakeJournal(4, 14, header.term))
    # The journal ends exactly at the snapshot's entry, and starts right after the applied index.
    _refused(tmp_path, blob, applied_index=lambda: 5, journal=FakeJournal(6, header.index, header.term))


@pytest.mark.parametrize("journal", [
    None,                       # no journal given: pysyncobj's behaviour
    FakeJournal(4, 14, 2),      # the entry at the snapshot's index has another term: it conflicts
    FakeJournal(4, 9, 3),       # the journal ends before the snapshot's entry
    FakeJournal(7, 14, 3),      # entry 6 (after the applied index 5) is gone: the state cannot catch up
], ids=["no-journal", "other-term", "shorter", "gap-after-applied"])
def test_otherwise_the_snapshot_is_installed(tmp_path: Path, leader: tuple[SnapshotSerializer, object],
                                             journal: FakeJournal | None) -> None:
    blob, header = _valid_file(tmp_path, leader)
    assert header.index == 10 and header.term == 3
    assert _installed(tmp_path, blob, journal, applied=5)
