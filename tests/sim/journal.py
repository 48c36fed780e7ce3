"""An in-memory Raft journal for the simulation that models the fsync boundary (SPEC §9).

`SimDisk` is what survives a crash: the entries, term, vote, commit index and owner metadata as of
the last `flush()`. `SimJournal` is the node's live view with LmdbJournal's interface (pysyncobj's
journal methods plus the owner's): every mutation lands in memory at once and reaches the disk only
at `flush()`, which the transport runs before releasing any message. A crash drops the journal
object; the restarted node opens a new one on the same disk, so it loses exactly what was not synced.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fedraft.consensus.journal import Entry, IndexedEntries
from fedraft.errors import InvariantBroken


@dataclass
class SimDisk:
    entries: list[Entry] = field(default_factory=list)
    term: int = 0
    voted_for: str | None = None
    commit_index: int = 1
    meta: dict[str, bytes] = field(default_factory=dict)
    flushes: int = 0


class SimJournal(IndexedEntries):
    """LmdbJournal's index arithmetic and snapshot alignment are inherited (IndexedEntries): the
    simulation runs the production code for them."""

    def __init__(self, disk: SimDisk) -> None:
        self.disk = disk
        self._entries = list(disk.entries)
        self._term, self._voted_for = disk.term, disk.voted_for
        self._commit_index = disk.commit_index
        self._meta = dict(disk.meta)
        self._dirty = False
        self._closed = False

    # -- pysyncobj's Journal interface --------------------------------------------------------------

    def add(self, command: bytes, idx: int, term: int) -> None:
        if self._entries and idx != self._entries[-1][1] + 1:
            raise InvariantBroken(f"journal append of index {idx} after {self._entries[-1][1]}")
        self._entries.append((bytes(command), idx, term))
        self._dirty = True

    def clear(self) -> None:
        self._entries = []
        self._dirty = True

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        if self._entries[entryFrom:]:
            del self._entries[entryFrom:]
            self._dirty = True

    def deleteEntriesTo(self, entryTo: int) -> None:
        if self._entries[:entryTo]:
            del self._entries[:entryTo]
            self._dirty = True

    def __getitem__(self, item: int | slice) -> Entry | list[Entry]:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def _destroy(self) -> None:
        self.close()

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        # A hint, stored lazily with the next flush, as LmdbJournal does.
        self._commit_index = raftCommitIndex

    def getRaftCommitIndex(self) -> int:
        return self._commit_index

    def setCurrentTerm(self, term: int, votedForNodeId: str | None) -> None:
        self._term, self._voted_for = term, votedForNodeId
        self._dirty = True

    def getCurrentTerm(self) -> int:
        return self._term

    def getVotedForNodeId(self) -> str | None:
        return self._voted_for

    def onOneSecondTimer(self) -> None:
        if self._commit_index != self.disk.commit_index:
            self._sync()

    # -- the owner's API (LmdbJournal's) ------------------------------------------------------------

    def flush(self) -> None:
        if self._dirty:
            self._sync()

    def _sync(self) -> None:
        if self._closed:
            return
        d = self.disk
        d.entries = list(self._entries)
        d.term, d.voted_for, d.commit_index = self._term, self._voted_for, self._commit_index
        d.meta = dict(self._meta)
        d.flushes += 1
        self._dirty = False

    def get_meta(self, name: str) -> bytes | None:
        return self._meta.get(name)

    def set_meta(self, name: str, value: bytes) -> None:
        self._meta[name] = bytes(value)
        self._dirty = True

    def take_fsync_seconds(self) -> list[float]:
        return []

    def close(self) -> None:
        """A clean stop syncs what is pending, as LmdbJournal.close does; a crash never calls this."""
        self._sync()
        self._closed = True

    def crash(self) -> None:
        """The process died: whatever was not flushed is gone, and this object is dead."""
        self._closed = True
