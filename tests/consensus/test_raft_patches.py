"""The follower's append_entries under fedraft's patch (fedraft.consensus.raft_patches) and, for
contrast, under stock pysyncobj 0.3.17: matching entries are kept, only a conflict truncates, the
commit index never covers entries the message did not vouch for, and a conflict with a committed
entry is refused."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pysyncobj import SyncObj, SyncObjConf
from pysyncobj.node import Node
from pysyncobj.transport import Transport

import fedraft.consensus.engine  # noqa: F401  (closes pysyncobj's pickle path, as in a node)
from fedraft.consensus.raft_patches import ConflictOnlyTruncation

NO_OP = b"\x01"


class _Wire(Transport):  # type: ignore[misc]
    """A transport that is always ready and records what the follower answers."""

    def __init__(self, sync_obj: Any, self_node: Any, other_nodes: Any) -> None:
        super().__init__(sync_obj, self_node, other_nodes)
        self.sent: list[dict[str, Any]] = []

    @property
    def ready(self) -> bool:
        return True

    def tryGetReady(self) -> None:
        pass

    def send(self, node: Any, message: dict[str, Any]) -> bool:
        self.sent.append(message)
        return True


class _Patched(ConflictOnlyTruncation, SyncObj):  # type: ignore[misc]
    pass


def _follower(cls: type[SyncObj]) -> tuple[SyncObj, _Wire]:
    conf = SyncObjConf(autoTick=False, dynamicMembershipChange=False)
    wires: list[_Wire] = []

    def transport(*args: Any) -> _Wire:
        wires.append(_Wire(*args))
        return wires[0]

    return cls(Node("f"), [Node("leader"), Node("other")], conf=conf, transportClass=transport), wires[0]


def _deliver(raft: SyncObj, **message: Any) -> None:
    raft._SyncObj__onMessageReceived(Node("leader"), {"type": "append_entries", **message})


def _log(raft: SyncObj) -> list[tuple[int, int]]:
    return [(idx, term) for _cmd, idx, term in raft._SyncObj__raftLog[:]]


def _entries(*index_term: tuple[int, int]) -> list[tuple[bytes, int, int]]:
    return [(b"\x00" + bytes([i]), i, t) for i, t in index_term]


def _first_three(raft: SyncObj) -> None:
    """Index 1 is pysyncobj's initial no-op (term 0); the leader of term 1 sends 2..4, commit 3."""
    _deliver(raft, term=1, commit_index=3, prevLogIdx=1, prevLogTerm=0, entries=_entries((2, 1), (3, 1), (4, 1)))


def test_a_duplicated_older_append_entries_keeps_the_matching_suffix() -> None:
    raft, wire = _follower(_Patched)
    _first_three(raft)
    assert _log(raft) == [(1, 0), (2, 1), (3, 1), (4, 1)]
    _deliver(raft, term=1, commit_index=2, prevLogIdx=1, prevLogTerm=0, entries=_entries((2, 1)))
    assert _log(raft) == [(1, 0), (2, 1), (3, 1), (4, 1)]
    # It acknowledges only what this message vouched for; the leader's matchIndex keeps its higher value.
    assert wire.sent[-1] == {"type": "next_node_idx", "next_node_idx": 3, "reset": False, "success": True}
    assert raft.raftCommitIndex == 3


def test_a_heartbeat_behind_the_log_end_truncates_nothing() -> None:
    raft, wire = _follower(_Patched)
    _first_three(raft)
    _deliver(raft, term=1, commit_index=4, prevLogIdx=2, prevLogTerm=1, entries=[])
    assert _log(raft) == [(1, 0), (2, 1), (3, 1), (4, 1)]
    assert raft.raftCommitIndex == 3  # capped at the last entry the heartbeat vouched for (2), never lowered
    assert wire.sent[-1]["next_node_idx"] == 3


def test_a_conflict_deletes_from_the_conflicting_entry_only() -> None:
    raft, _ = _follower(_Patched)
    _deliver(raft, term=1, commit_index=2, prevLogIdx=1, prevLogTerm=0, entries=_entries((2, 1), (3, 1), (4, 1)))
    # A leader of term 2 holds 2 and 3 of term 1, then its own entry at 4.
    _deliver(raft, term=2, commit_index=3, prevLogIdx=1, prevLogTerm=0, entries=_entries((2, 1), (3, 1), (4, 2)))
    assert _log(raft) == [(1, 0), (2, 1), (3, 1), (4, 2)]
    assert raft.raftCommitIndex == 3


def test_the_commit_index_never_covers_a_kept_suffix_the_message_did_not_vouch_for() -> None:
    raft, _ = _follower(_Patched)
    _deliver(raft, term=1, commit_index=2, prevLogIdx=1, prevLogTerm=0, entries=_entries((2, 1), (3, 1), (4, 1)))
    # A leader of term 2 whose log differs from 3 on sends only 2 (a size-capped batch) with commit 4.
    _deliver(raft, term=2, commit_index=4, prevLogIdx=1, prevLogTerm=0, entries=_entries((2, 1)))
    assert raft.raftCommitIndex == 2
    assert _log(raft)[-1] == (4, 1)  # kept for now; the leader's next entries overwrite it if it conflicts


def test_a_conflict_with_a_committed_entry_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    raft, wire = _follower(_Patched)
    _first_three(raft)
    sent = len(wire.sent)
    with caplog.at_level(logging.CRITICAL):
        _deliver(raft, term=2, commit_index=4, prevLogIdx=2, prevLogTerm=1, entries=_entries((3, 2)))
    assert _log(raft) == [(1, 0), (2, 1), (3, 1), (4, 1)]
    assert len(wire.sent) == sent and "conflicts with committed entry 3" in caplog.text


def test_an_append_entries_of_an_older_term_is_left_to_pysyncobj_which_ignores_it() -> None:
    raft, wire = _follower(_Patched)
    _deliver(raft, term=3, commit_index=2, prevLogIdx=1, prevLogTerm=0, entries=_entries((2, 3)))
    sent = len(wire.sent)
    _deliver(raft, term=1, commit_index=2, prevLogIdx=1, prevLogTerm=0, entries=_entries((2, 1)))
    assert _log(raft) == [(1, 0), (2, 3)] and len(wire.sent) == sent


def test_stock_pysyncobj_still_truncates_matching_entries() -> None:
    """Why the patch exists; if this starts failing after an upgrade, upstream fixed it: re-check the patch."""
    raft, _ = _follower(SyncObj)
    _first_three(raft)
    _deliver(raft, term=1, commit_index=2, prevLogIdx=1, prevLogTerm=0, entries=_entries((2, 1)))
    assert _log(raft) == [(1, 0), (2, 1)]


def test_keeping_an_applied_suffix_logs_no_false_critical(caplog: pytest.LogCaptureFixture) -> None:
    raft, _ = _follower(_Patched)
    _first_three(raft)
    raft._SyncObj__raftLastApplied = 3  # as if the tick had applied up to the commit index
    with caplog.at_level(logging.WARNING):
        _deliver(raft, term=1, commit_index=2, prevLogIdx=1, prevLogTerm=0, entries=_entries((2, 1)))
    assert _log(raft) == [(1, 0), (2, 1), (3, 1), (4, 1)]
    assert "truncating" not in caplog.text


def test_stock_pysyncobj_logs_critical_when_it_truncates_applied_entries(caplog: pytest.LogCaptureFixture) -> None:
    raft, _ = _follower(SyncObj)
    _first_three(raft)
    raft._SyncObj__raftLastApplied = 3
    with caplog.at_level(logging.WARNING):
        _deliver(raft, term=1, commit_index=2, prevLogIdx=1, prevLogTerm=0, entries=_entries((2, 1)))
    assert "truncating already-applied log entries from index 2" in caplog.text


def _diverged_follower() -> tuple[SyncObj, _Wire]:
    """Log terms 0,1,1,1,2,2,2,2 at indexes 1..8, commit index 2."""
    raft, wire = _follower(_Patched)
    _deliver(raft, term=1, commit_index=2, prevLogIdx=1, prevLogTerm=0, entries=_entries((2, 1), (3, 1), (4, 1)))
    _deliver(raft, term=2, commit_index=2, prevLogIdx=4, prevLogTerm=1,
             entries=_entries((5, 2), (6, 2), (7, 2), (8, 2)))
    assert _log(raft)[-1] == (8, 2) and raft.raftCommitIndex == 2
    return raft, wire


def test_a_mismatch_sends_the_leader_back_to_the_start_of_the_conflicting_term() -> None:
    raft, wire = _diverged_follower()
    # A leader of term 3 whose entry 8 is of term 3: the whole run of term 2 (5..8) is skipped at once.
    _deliver(raft, term=3, commit_index=2, prevLogIdx=8, prevLogTerm=3, entries=[])
    assert wire.sent[-1] == {"type": "next_node_idx", "next_node_idx": 5, "reset": True, "success": False}
    # ... and the leader's next message, from 4 (term 1, matching), replaces the tail in one round trip.
    _deliver(raft, term=3, commit_index=6, prevLogIdx=4, prevLogTerm=1,
             entries=_entries((5, 3), (6, 3), (7, 3), (8, 3)))
    assert _log(raft)[4:] == [(5, 3), (6, 3), (7, 3), (8, 3)] and raft.raftCommitIndex == 6
    assert wire.sent[-1]["success"] is True and wire.sent[-1]["next_node_idx"] == 9


def test_the_hint_never_goes_below_the_commit_index() -> None:
    raft, wire = _diverged_follower()
    _deliver(raft, term=3, commit_index=2, prevLogIdx=4, prevLogTerm=3, entries=[])  # entry 4 is of term 1
    assert wire.sent[-1]["next_node_idx"] == 3  # the run of term 1 starts at 2, but 2 is committed


def test_stock_pysyncobj_steps_back_one_entry_per_round_trip() -> None:
    raft, wire = _follower(SyncObj)
    _deliver(raft, term=1, commit_index=2, prevLogIdx=1, prevLogTerm=0, entries=_entries((2, 1), (3, 1), (4, 1)))
    _deliver(raft, term=3, commit_index=2, prevLogIdx=4, prevLogTerm=3, entries=[])
    assert wire.sent[-1]["next_node_idx"] == 4


class _UnfinishedSnapshot:
    """The receiver's serializer after a first chunk of several: the install is not done."""

    def setTransmissionData(self, _data: Any) -> bool:
        return False


def _stale_follower() -> tuple[SyncObj, _Wire]:
    """An old term's entries 2..4, only 2 committed (its leader was cut off before committing more)."""
    raft, wire = _follower(_Patched)
    _deliver(raft, term=2, commit_index=2, prevLogIdx=1, prevLogTerm=0, entries=_entries((2, 2), (3, 2), (4, 2)))
    assert raft.raftCommitIndex == 2
    return raft, wire


@pytest.mark.parametrize("serialized", [(b"FRSNAP01...", True, False), None])
def test_a_snapshot_message_commits_nothing_of_a_stale_suffix(serialized: Any) -> None:
    """A leader of term 3 that compacted past this log starts streaming its snapshot with commit 100:
    entries 3 and 4 of term 2 must not be applied (their waiters would hear OK for writes that never
    committed) while the install is under way (found in review)."""
    raft, _ = _stale_follower()
    raft._SyncObj__serializer = _UnfinishedSnapshot()
    _deliver(raft, term=3, commit_index=100, serialized=serialized)
    assert raft.raftCommitIndex == 2


def test_stock_pysyncobj_commits_a_stale_suffix_on_a_snapshot_message() -> None:
    raft, _ = _follower(SyncObj)
    _deliver(raft, term=2, commit_index=2, prevLogIdx=1, prevLogTerm=0, entries=_entries((2, 2), (3, 2), (4, 2)))
    _deliver(raft, term=3, commit_index=100, serialized=None)
    assert raft.raftCommitIndex == 4
