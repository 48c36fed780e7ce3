"""LmdbJournal: pysyncobj's journal semantics, durability at flush, crash atomicity, alignment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pysyncobj.journal import MemoryJournal

from fedraft.consensus.journal import LmdbJournal
from fedraft.errors import InvariantBroken

REPO = Path(__file__).resolve().parents[2]


def crash(journal: LmdbJournal) -> None:
    """Drop the journal as a kill -9 would: pending writes are never committed."""
    journal._env.close()
    journal._closed = True


def cmd(idx: int, size: int = 300) -> bytes:
    return (idx.to_bytes(8, "big") * (size // 8 + 1))[:size]


def test_add_flush_reopen_keeps_everything(tmp_path: Path) -> None:
    j = LmdbJournal(tmp_path / "j")
    for i in range(1, 51):
        j.add(cmd(i), i, 1 + i // 10)
    j.setCurrentTerm(7, "node-b")
    j.setRaftCommitIndex(42)
    j.flush()
    crash(j)
    j = LmdbJournal(tmp_path / "j")
    assert j[:] == [(cmd(i), i, 1 + i // 10) for i in range(1, 51)]
    assert (j.getCurrentTerm(), j.getVotedForNodeId(), j.getRaftCommitIndex()) == (7, "node-b", 42)
    j.close()


def test_unflushed_writes_vanish_as_a_whole(tmp_path: Path) -> None:
    j = LmdbJournal(tmp_path / "j")
    for i in range(1, 11):
        j.add(cmd(i), i, 1)
    j.setCurrentTerm(1, None)
    j.flush()
    j.deleteEntriesFrom(5)
    for i in range(6, 20):
        j.add(cmd(i), i, 2)
    j.setCurrentTerm(2, "node-c")
    j.set_meta("rejoined", b"1")
    crash(j)
    j = LmdbJournal(tmp_path / "j")
    assert j[:] == [(cmd(i), i, 1) for i in range(1, 11)]
    assert (j.getCurrentTerm(), j.getVotedForNodeId(), j.get_meta("rejoined")) == (1, None, None)
    j.close()


def test_term_and_vote_survive_reopen(tmp_path: Path) -> None:
    j = LmdbJournal(tmp_path / "j")
    assert (j.getCurrentTerm(), j.getVotedForNodeId(), j.getRaftCommitIndex()) == (0, None, 1)
    j.setCurrentTerm(3, "node-a")
    j.flush()
    j.close()
    j = LmdbJournal(tmp_path / "j")
    assert (j.getCurrentTerm(), j.getVotedForNodeId()) == (3, "node-a")
    j.setCurrentTerm(4, None)
    j.close()  # close flushes
    j = LmdbJournal(tmp_path / "j")
    assert (j.getCurrentTerm(), j.getVotedForNodeId()) == (4, None)
    j.close()


def test_commit_index_is_lazy(tmp_path: Path) -> None:
    j = LmdbJournal(tmp_path / "j")
    j.add(b"x", 1, 1)
    j.flush()
    flushes = len(j.fsync_seconds)
    for n in range(2, 100):  # heartbeats: no write at all
        j.setRaftCommitIndex(n)
        j.flush()
    assert len(j.fsync_seconds) == flushes
    j.onOneSecondTimer()  # once a second it rides out alone
    assert len(j.fsync_seconds) == flushes + 1
    j.onOneSecondTimer()
    assert len(j.fsync_seconds) == flushes + 1
    j.setRaftCommitIndex(150)
    j.add(b"y", 2, 1)
    j.flush()  # or with the next real flush
    crash(j)
    j = LmdbJournal(tmp_path / "j")
    assert j.getRaftCommitIndex() == 150
    j.close()


def test_meta_is_durable_at_flush(tmp_path: Path) -> None:
    j = LmdbJournal(tmp_path / "j")
    j.set_meta("a", b"1")
    assert j.get_meta("a") == b"1"
    assert j.get_meta("b") is None
    j.flush()
    crash(j)
    j = LmdbJournal(tmp_path / "j")
    assert j.get_meta("a") == b"1"
    j.close()


def test_gap_is_refused(tmp_path: Path) -> None:
    j = LmdbJournal(tmp_path / "j")
    j.add(b"a", 5, 1)
    with pytest.raises(InvariantBroken):
        j.add(b"b", 7, 1)
    j.clear()
    j.add(b"b", 7, 1)  # after clear any start is fine (pysyncobj re-seeds from a snapshot)
    assert (j.first_index(), j.last_index(), j.term_at(7), j.entry_at(8)) == (7, 7, 1, None)
    j.close()


def test_fsync_samples(tmp_path: Path) -> None:
    j = LmdbJournal(tmp_path / "j")
    for i in range(1, 4):
        j.add(b"a", i, 1)
        j.flush()
    assert len(j.fsync_seconds) == 3 and all(s > 0 for s in j.fsync_seconds)
    assert len(j.take_fsync_seconds()) == 3
    assert j.take_fsync_seconds() == []
    j.close()


# -- align_to_snapshot -------------------------------------------------------------------------


def _journal_with(path: Path, first: int, last: int, term: int = 2) -> LmdbJournal:
    j = LmdbJournal(path)
    for i in range(first, last + 1):
        j.add(cmd(i, 20), i, term)
    j.flush()
    return j


def test_align_drops_entries_before_prev(tmp_path: Path) -> None:
    j = _journal_with(tmp_path / "j", 1, 30)
    prev, last = (cmd(19, 20), 19, 2), (cmd(20, 20), 20, 2)
    assert j.align_to_snapshot(prev, last)
    # pysyncobj's __loadDumpFile(clearJournal=False) keeps the journal exactly when this holds.
    assert j[0] == prev and j[1] == last
    crash(j)  # the drop was flushed
    j = LmdbJournal(tmp_path / "j")
    assert (j.first_index(), j.last_index()) == (19, 30)
    assert not j.align_to_snapshot(prev, last)  # already aligned
    j.close()


@pytest.mark.parametrize("prev", [(cmd(19, 20), 19, 1), (b"other", 19, 2), (cmd(40, 20), 40, 2)])
def test_align_leaves_a_journal_without_prev_alone(tmp_path: Path, prev: tuple[bytes, int, int]) -> None:
    j = _journal_with(tmp_path / "j", 1, 30)
    assert not j.align_to_snapshot(prev, (b"", prev[1] + 1, prev[2]))
    assert (j.first_index(), j.last_index()) == (1, 30)
    j.close()


def test_align_on_empty_journal(tmp_path: Path) -> None:
    j = LmdbJournal(tmp_path / "j")
    assert not j.align_to_snapshot((b"a", 4, 1), (b"b", 5, 1))
    assert len(j) == 0
    j.close()


# -- the same semantics as pysyncobj's MemoryJournal --------------------------------------------

_ops = st.one_of(
    st.tuples(st.just("add"), st.binary(max_size=40), st.integers(0, 5), st.integers(1, 1000)),
    st.tuples(st.just("clear")),
    st.tuples(st.just("delete_from"), st.integers(-6, 30)),
    st.tuples(st.just("delete_to"), st.integers(-6, 30)),
    st.tuples(st.just("term"), st.integers(0, 50), st.sampled_from([None, "node-a", "node-b"])),
    st.tuples(st.just("commit"), st.integers(0, 100)),
    st.tuples(st.just("flush")),
    st.tuples(st.just("reopen")),
    st.tuples(st.just("crash")),
)


def _same(j: LmdbJournal, m: MemoryJournal) -> None:
    assert len(j) == len(m)
    assert j[:] == m[:]
    for i in (0, 1, -1, -2, len(m) // 2):
        if -len(m) <= i < len(m):
            assert j[i] == m[i]
    for s in (slice(1, None), slice(None, 2), slice(-3, None), slice(2, 5), slice(0, 1)):
        assert j[s] == m[s]
    assert j.getCurrentTerm() == m.getCurrentTerm()
    assert j.getVotedForNodeId() == m.getVotedForNodeId()


@settings(max_examples=150, deadline=None)
@given(st.lists(_ops, max_size=60))
def test_matches_memory_journal(ops: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "j"
        j, m = LmdbJournal(path), MemoryJournal()
        durable: tuple[list[tuple[bytes, int, int]], int, str | None] = ([], 0, None)
        commits = {1}
        for op in ops:
            match op:
                case ("add", command, term, start):
                    idx = m[-1][1] + 1 if len(m) else start
                    j.add(command, idx, term)
                    m.add(command, idx, term)
                case ("clear",):
                    j.clear()
                    m.clear()
                case ("delete_from", offset):
                    j.deleteEntriesFrom(offset)
                    m.deleteEntriesFrom(offset)
                case ("delete_to", offset):
                    j.deleteEntriesTo(offset)
                    m.deleteEntriesTo(offset)
                case ("term", term, voted):
                    j.setCurrentTerm(term, voted)
                    m.setCurrentTerm(term, voted)
                case ("commit", n):
                    j.setRaftCommitIndex(n)
                    commits.add(n)
                case ("flush" | "reopen",):
                    j.flush()
                    durable = (m[:], m.getCurrentTerm(), m.getVotedForNodeId())
                    if op[0] == "reopen":
                        commit = j.getRaftCommitIndex()
                        j.close()
                        j = LmdbJournal(path)
                        assert j.getRaftCommitIndex() == commit
                case ("crash",):
                    crash(j)
                    j = LmdbJournal(path)
                    m = MemoryJournal()
                    for entry in durable[0]:
                        m.add(*entry)
                    m.setCurrentTerm(durable[1], durable[2])
                    # The commit index is a hint: it may be older than the last value set.
                    assert j.getRaftCommitIndex() in commits
            _same(j, m)
        j.close()


# -- a real kill -9 ---------------------------------------------------------------------------

_CHILD = textwrap.dedent("""
    import sys
    import time
    from pathlib import Path
    from fedraft.consensus.journal import LmdbJournal

    def cmd(idx):
        return (idx.to_bytes(8, "big") * 38)[:300]

    j = LmdbJournal(Path(sys.argv[1]))
    idx = j.last_index() or 0
    mode = sys.argv[2]
    for batch in range(10**9):
        for _ in range(100):
            idx += 1
            j.add(cmd(idx), idx, 3)
        if mode == "pending" and batch == 5:
            print("pending", idx - 100, flush=True)
            time.sleep(60)
        j.setCurrentTerm(idx // 100 - 1, "node-a")
        j.flush()
        print("flushed", idx, flush=True)
""")


def _run_child(path: Path, mode: str, lines: int) -> tuple[str, int]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path), mode],
                             stdout=subprocess.PIPE, text=True, env=env)
    assert child.stdout is not None
    last = ("", 0)
    for _ in range(lines):
        word, n = child.stdout.readline().split()
        last = (word, int(n))
        if word == "pending":
            break
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    return last


def _check_whole_batches(path: Path, at_least: int) -> LmdbJournal:
    j = LmdbJournal(path)
    n = len(j)
    assert n >= at_least and n % 100 == 0, n
    assert j[:] == [((i.to_bytes(8, "big") * 38)[:300], i, 3) for i in range(1, n + 1)]
    assert j.getCurrentTerm() == n // 100 - 1 and j.getVotedForNodeId() == "node-a"
    return j


def test_kill_9_loses_only_the_unflushed_batch(tmp_path: Path) -> None:
    word, flushed = _run_child(tmp_path / "j", "pending", 100)
    assert word == "pending"
    j = _check_whole_batches(tmp_path / "j", flushed)
    assert len(j) == flushed
    j.close()


def test_kill_9_during_flushes_never_tears(tmp_path: Path) -> None:
    for lines in (3, 17, 41):
        _, flushed = _run_child(tmp_path / "j", "loop", lines)
        _check_whole_batches(tmp_path / "j", flushed).close()
