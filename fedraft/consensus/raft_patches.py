"""A targeted fix to pysyncobj 0.3.17's follower: append_entries truncates only on a real conflict.

Stock pysyncobj (syncobj.py, the 'append_entries' branch with prevLogIdx, ~l.991) deletes every entry
after prevLogIdx whenever the follower holds more, then appends the message's entries. A delayed or
duplicated append_entries, or a heartbeat sent after a stale `reset` reply moved the leader's
nextIndex back, therefore drops entries that match the leader's log, were acknowledged (the leader's
matchIndex still counts them) and may already be applied. With the leader then lost, a committed,
acknowledged write can vanish and the applied state diverge (decision 0012; tests/sim reproduces it).

Raft (Figure 2, AppendEntries rule 3-5) keeps matching entries, deletes an entry and all that follow
only where it conflicts (same index, different term), and sets commitIndex to at most the index of
the last new entry. `ConflictOnlyTruncation` does exactly that in front of the stock handler: it
drops the prefix of the message the log already holds, so the stock code sees prevLogIdx = the last
matching entry; it lets the stock delete run only when the first remaining entry conflicts; it caps
the message's commit_index at the last entry the message vouches for (a kept suffix beyond it may
still be overwritten by this leader and must not be applied); and it refuses a conflict at or below
the commit index, which a correct leader never sends.

`ShortCandidateRound` changes how long a candidate waits for votes (decision 0016, "A lost election
round"). Stock pysyncobj (`_onTick`, ~l.634) gives each new round a fresh full election timeout,
uniform(raftMinTimeout, raftMaxTimeout); after a split vote both candidates then idle 1-2 s before
retrying, and a failover needs 2-4 s instead of 1-2 s. Here a node that becomes or stays candidate
retries after uniform(0.25, 0.5) x raftMinTimeout, a second lost round in a row after twice that, and
further ones after pysyncobj's full range (a vote round trip longer than the short round must still
elect); a node that hears a leader or grants a vote keeps the full range (pysyncobj sets those
deadlines itself, never through the state change).

It works on pysyncobj's name-mangled internals, so the import checks the exact version it was written for.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import pysyncobj.syncobj as _ps
from pysyncobj.syncobj import _RAFT_STATE
from pysyncobj.version import VERSION as _PYSYNCOBJ_VERSION

from fedraft.errors import InvariantBroken

__all__ = ["CANDIDATE_ROUND", "SHORT_ROUNDS", "ConflictOnlyTruncation", "ShortCandidateRound", "TrimmedAppend",
           "backup_hint", "candidate_round", "trim_append_entries"]

log = logging.getLogger(__name__)

PATCHED_VERSION = "0.3.17"
if _PYSYNCOBJ_VERSION != PATCHED_VERSION:
    raise InvariantBroken(
        f"fedraft.consensus.raft_patches was written against pysyncobj {PATCHED_VERSION}, found "
        f"{_PYSYNCOBJ_VERSION}: re-check its append_entries handler and election timer before moving the pin")

Entry = tuple[bytes, int, int]

_handling = threading.local()  # per tick thread: does the append_entries being handled keep the suffix?


class _KeptSuffixFilter(logging.Filter):
    """The stock handler logs "truncating already-applied log entries" before it calls the delete,
    which the patch skips when nothing conflicts: that record would be false, so it is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (getattr(_handling, "keep_suffix", False)
                    and str(record.msg).startswith("truncating already-applied"))


logging.getLogger("pysyncobj.syncobj").addFilter(_KeptSuffixFilter())


@dataclass(frozen=True)
class TrimmedAppend:
    message: dict[str, Any]
    conflict: bool  # the message's first entry differs from this log's entry at that index


def trim_append_entries(log_entries: Any, current_term: int, commit_index: int,
                        message: dict[str, Any]) -> TrimmedAppend | None:
    """The message as the stock handler must see it, or None to drop it (conflict at or below commit).

    `log_entries` is pysyncobj's journal (a sequence of (command, index, term), contiguous indexes).
    Messages the stock handler already gets right (from an older term, which it ignores; prevLogIdx
    not matching) come back unchanged; snapshots and large-entry transmissions come back with the commit
    index capped at what they vouch for.
    """
    prev_idx = message.get("prevLogIdx")
    entries: list[Entry] = list(message.get("entries") or ())
    if prev_idx is None:
        # A snapshot chunk (or `serialized: None`): the stock handler then sets the commit index to
        # min(leader's, own last index) with no consistency check, on the first chunk, long before the
        # install — a stale suffix of an old term would be applied and its waiters answered OK. It
        # vouches for no entry of this log: hold the commit index; the append after the install
        # (prevLogIdx = the snapshot's index) moves it on.
        return TrimmedAppend(_with_commit(message, min(int(message["commit_index"]), commit_index)), False)
    if "transmission" in message:  # a large entry in pieces: it vouches for prevLogIdx + 1 at most
        return TrimmedAppend(_with_commit(message, min(int(message["commit_index"]), int(prev_idx) + 1)), False)
    if not len(log_entries) or int(message["term"]) < current_term:
        return TrimmedAppend(message, conflict=False)
    first = log_entries[0][1]
    last = log_entries[-1][1]
    if not first <= prev_idx <= last or log_entries[prev_idx - first][2] != message.get("prevLogTerm"):
        return TrimmedAppend(message, conflict=False)  # the stock reply asks the leader to step back
    if any(e[1] != prev_idx + 1 + i for i, e in enumerate(entries)):
        return TrimmedAppend(message, conflict=False)  # not a slice pysyncobj sends; the codec refuses these
    last_new = prev_idx + len(entries)
    matched = prev_idx
    skip = 0
    for _command, idx, term in entries:
        if idx > last or log_entries[idx - first][2] != term:
            break
        matched, skip = idx, skip + 1
    rest = entries[skip:]
    conflict = bool(rest) and rest[0][1] <= last
    if conflict and rest[0][1] <= commit_index:
        log.critical("append_entries conflicts with committed entry %d (commit index %d): dropped; "
                     "the leader's log disagrees with a committed entry", rest[0][1], commit_index)
        return None
    trimmed = dict(message)
    trimmed["prevLogIdx"] = matched
    trimmed["prevLogTerm"] = log_entries[matched - first][2]
    trimmed["entries"] = rest
    trimmed["commit_index"] = min(int(message["commit_index"]), last_new)
    return TrimmedAppend(trimmed, conflict)


def _with_commit(message: dict[str, Any], commit_index: int) -> dict[str, Any]:
    capped = dict(message)
    capped["commit_index"] = commit_index
    return capped


def backup_hint(log_entries: Any, commit_index: int, prev_idx: int) -> int:
    """Where the leader should try next after this log's entry at `prev_idx` did not match its term.

    Stock pysyncobj answers `prev_idx`, so the leader steps back one entry per round trip and resends
    the whole tail each time (the simulation's seed 101218 did not converge after a long split). The
    answer here is the first index of this log's run of that entry's term (Raft §5.3's optimisation),
    never below commit_index + 1: entries up to the commit index are committed, so they match any
    leader's. A lower next index only makes the leader send more; it is never unsafe.
    """
    if not len(log_entries):
        return prev_idx
    first: int = log_entries[0][1]
    last: int = log_entries[-1][1]
    if not first <= prev_idx <= last:
        return prev_idx
    term = log_entries[prev_idx - first][2]
    lo: int
    hi: int
    lo, hi = max(commit_index + 1, first), prev_idx  # terms never decrease along a log
    if lo > hi:
        return prev_idx
    while lo < hi:
        mid = (lo + hi) // 2
        if log_entries[mid - first][2] == term:
            hi = mid
        else:
            lo = mid + 1
    return lo


class ConflictOnlyTruncation:
    """Mix in before pysyncobj's SyncObj: `class X(ConflictOnlyTruncation, SyncObj)`."""

    _fedraft_conflict = False

    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:
        if message.get("type") != "append_entries":
            super()._SyncObj__onMessageReceived(node, message)  # type: ignore[misc]
            return
        raft: Any = self  # pysyncobj's private state, read under its mangled names
        trimmed = trim_append_entries(raft._SyncObj__raftLog, int(raft._SyncObj__raftCurrentTerm),
                                      int(raft._SyncObj__raftCommitIndex), message)
        if trimmed is None:
            return
        self._fedraft_conflict = trimmed.conflict
        _handling.keep_suffix = not trimmed.conflict
        try:
            super()._SyncObj__onMessageReceived(node, trimmed.message)  # type: ignore[misc]
        finally:
            self._fedraft_conflict = False
            _handling.keep_suffix = False

    def _SyncObj__sendNextNodeIdx(self, node: Any, reset: bool = False, nextNodeIdx: int | None = None,
                                  success: bool = False) -> None:
        # The stock handler calls this with reset, no success and nextNodeIdx = prevLogIdx exactly when
        # the entry at prevLogIdx has another term: answer the start of that term's run instead.
        if reset and not success and nextNodeIdx is not None:
            raft: Any = self
            nextNodeIdx = backup_hint(raft._SyncObj__raftLog, int(raft._SyncObj__raftCommitIndex), nextNodeIdx)
        super()._SyncObj__sendNextNodeIdx(node, reset=reset, nextNodeIdx=nextNodeIdx,  # type: ignore[misc]
                                          success=success)

    def _SyncObj__deleteEntriesFrom(self, fromIDx: int) -> None:
        # pysyncobj calls this only from its append_entries handler, with prevLogIdx + 1, whenever the
        # log holds more entries than the message's prefix. After trimming, that is a conflict only if
        # the message still carries entries whose first one differs here; otherwise keep the suffix.
        if not self._fedraft_conflict:
            return
        raft: Any = self
        if fromIDx <= int(raft._SyncObj__raftCommitIndex):
            raise InvariantBroken(f"refusing to truncate the log at {fromIDx}, at or below the commit index")
        super()._SyncObj__deleteEntriesFrom(fromIDx)  # type: ignore[misc]


# A candidate's round, as fractions of raftMinTimeout: 250-500 ms with the default 1-2 s timeouts.
# The floor stays well above a vote round trip (two ticks, the fsync of the term and vote on each side,
# gRPC on loopback: tens of ms, ~100 ms on a loaded 2-core machine); the width keeps two candidates
# of a split vote from retrying within one round trip of each other most of the time.
CANDIDATE_ROUND = (0.25, 0.5)


# Consecutive rounds a candidate shortens: the first (x1) and, lost, the second (x2, 0.5-1.0 x
# raftMinTimeout); from the third on pysyncobj's own full range. A grant is counted only in the term it
# was asked in, so with a vote round trip above the short round every short round is lost: widening
# bounds the cost of such a link (WAN between sites, a slow fsync) at two short rounds, not an endless
# series of terms.
SHORT_ROUNDS = 2


def candidate_round(raft_min_timeout: float, draw: float, lost: int = 0) -> float:
    """Seconds a candidate waits for votes before its next round, after `lost` (< SHORT_ROUNDS)
    consecutive lost rounds; `draw` is uniform in [0, 1)."""
    low, high = CANDIDATE_ROUND
    return raft_min_timeout * (low + (high - low) * draw) * (1 << lost)


class ShortCandidateRound:
    """Mix in before pysyncobj's SyncObj: `class X(ShortCandidateRound, SyncObj)`.

    pysyncobj enters CANDIDATE only in `_onTick`, when the election deadline passed, and sets the
    next deadline (a full timeout) just before the state change; this shortens it right after. The
    draw goes through `pysyncobj.syncobj.random` and `monotonicTime` as pysyncobj's own does, so the
    simulation's seeded RNG and clock drive it too.
    """

    _fedraft_lost_rounds = 0  # consecutive rounds this node stood and lost, while it stayed candidate

    def _SyncObj__setState(self, newState: int) -> None:
        raft: Any = self
        stays = raft._SyncObj__raftState == _RAFT_STATE.CANDIDATE
        super()._SyncObj__setState(newState)  # type: ignore[misc]
        if newState != _RAFT_STATE.CANDIDATE:
            return
        self._fedraft_lost_rounds = lost = self._fedraft_lost_rounds + 1 if stays else 0
        if lost < SHORT_ROUNDS:  # otherwise keep the full timeout pysyncobj just drew
            raft._SyncObj__raftElectionDeadline = _ps.monotonicTime() + candidate_round(
                float(raft._SyncObj__conf.raftMinTimeout), _ps.random.random(), lost)
