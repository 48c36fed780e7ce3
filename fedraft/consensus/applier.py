"""Apply: turn one committed log entry into state, deterministically, on every node (SPEC §2, §4).

For each fedraft entry the applier checks the leader's signature and authenticity (D10), derives
the effective time (D6), checks and applies every envelope in order (D9), records each result for
de-duplication (D3), archives the signed entry and advances the hash chain — all in the state's
current write transaction, with the applied index. It never raises for anything a peer or client
sent: a bad entry or envelope becomes a rejection, the same on every node.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError as ProtoDecodeError

from fedraft import failpoints
from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.consensus import checkpoints
from fedraft.consensus.handlers import ApplyContext, EntryScope, dispatch
from fedraft.consensus.validation import Checked, Refused, check_envelope
from fedraft.crypto.chain import next_head
from fedraft.crypto.signing import CTX_ENTRY, SIG_LEN, key_id_of, verify
from fedraft.domain.commands import Barrier, Tick
from fedraft.domain.outcome import Code
from fedraft.domain.validity import effective_time
from fedraft.errors import SignatureError
from fedraft.storage import log_schema
from fedraft.storage.state import (
    M_APPLIED,
    M_APPLY_VERSION,
    M_EFFECTIVE,
    M_HEAD,
    M_TERM,
    M_TERM_LEADER,
    M_TERM_START,
    StateStore,
    StateTxn,
)

log = logging.getLogger(__name__)

# Leader no-ops carry no client intent to de-duplicate; remembering them would only grow the state.
UNREMEMBERED = (Barrier, Tick)

APPLY_VERSION = 1
MAX_ENTRY_BYTES = 1 << 20
DEDUP_PRUNE_PER_ENTRY = 256


@dataclass(frozen=True)
class EnvelopeSummary:
    """What the audit journal says of one applied envelope (never used to decide anything)."""

    command: str         # the command's NAME; the envelope's wire field if it did not decode; "" if unknown
    principal_name: str  # the author as the state knew it at apply; "" if the key is unknown
    principal_pool: str
    principal_role: str


@dataclass(frozen=True)
class AppliedEntry:
    index: int
    results: list[pb.Result]
    # (author key id, request id) of each envelope, aligned with results; None where unknown
    requests: list[tuple[bytes, bytes] | None]
    # command name and author of each envelope, aligned with results; None where the entry did not decode
    envelopes: list[EnvelopeSummary | None] = field(default_factory=list)


def _result(code: Code, message: str, index: int, ordinal: int) -> pb.Result:
    return pb.Result(code=int(code), message=message, index=index, ordinal=ordinal)


def _summary(st: StateTxn, signed_env: pb.Signed, verdict: Checked | Refused) -> EnvelopeSummary:
    if isinstance(verdict, Checked):
        p: pb.Principal | None = verdict.principal
        name = verdict.command.NAME
    else:
        p = st.principal(bytes(signed_env.key_id))
        env = verdict.envelope
        kind = env.WhichOneof("command") if env is not None else None
        inner = getattr(env, kind).WhichOneof("command") if kind in ("governance", "placement") else None
        name = inner or kind or ""
    if p is None:
        return EnvelopeSummary(name, "", "", "")
    return EnvelopeSummary(name, p.name, p.pool, p.role)


class Applier:
    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.genesis = store.genesis
        self.cluster_id = store.genesis.cluster_id
        self._voter_by_key = {key_id_of(v.public_key): v for v in self.genesis.voters}
        self._rejected: str | None = None  # why the entry being applied was rejected as a whole

    def apply(self, index: int, slot_term: int, signed_entry: bytes) -> AppliedEntry | None:
        """Apply the entry at `index`; None if it was applied before (replay after restart)."""
        st = self.store.writer()
        prev_applied = st.applied_index
        if index <= prev_applied:
            return None
        summaries: list[EnvelopeSummary | None] = []
        self._rejected = None
        results, requests = self._apply_entry(st, index, slot_term, signed_entry, summaries)
        if self._rejected is not None:  # kept for the export: the archive does not carry slot terms
            log_schema.put_rejected(st, index, slot_term, self._rejected)
        failpoints.hit("apply.entry")
        st.archive_put(index, signed_entry)
        st.set_meta_bytes(M_HEAD, next_head(st.chain_head, signed_entry))
        st.set_meta_int(M_APPLIED, index)
        checkpoints.record_if_due(st, index, prev_applied)
        summaries += [None] * (len(results) - len(summaries))  # an entry rejected as a whole
        return AppliedEntry(index, results, requests, summaries)

    def _reject_all(self, entry: pb.LogEntry | None, index: int,
                    why: str) -> tuple[list[pb.Result], list[tuple[bytes, bytes] | None]]:
        log.warning("entry %d rejected as a whole: %s", index, why)
        self._rejected = why
        count = len(entry.envelopes) if entry is not None else 0
        return ([_result(Code.UNAVAILABLE, f"entry rejected: {why}", index, i) for i in range(count)],
                [None for _ in range(count)])

    def _apply_entry(self, st: StateTxn, index: int, slot_term: int, signed_entry: bytes,
                     summaries: list[EnvelopeSummary | None]) -> tuple[list[pb.Result],
                                                                       list[tuple[bytes, bytes] | None]]:
        signed = pb.Signed()
        entry = pb.LogEntry()
        try:
            if len(signed_entry) > MAX_ENTRY_BYTES:
                raise ProtoDecodeError("entry too large")
            signed.ParseFromString(signed_entry)
            entry.ParseFromString(signed.body)
        except ProtoDecodeError:
            return self._reject_all(None, index, "entry does not decode")
        voter = self._voter_by_key.get(bytes(signed.key_id))
        if voter is None or len(signed.sig) != SIG_LEN:
            return self._reject_all(entry, index, "entry not signed by a voter node")
        try:
            verify(voter.public_key, CTX_ENTRY, self.cluster_id, bytes(signed.body), bytes(signed.sig))
        except SignatureError:
            return self._reject_all(entry, index, "entry signature does not verify")
        if entry.leader_id != voter.node_id:
            return self._reject_all(entry, index, "leader_id does not match the signing node")
        if entry.term != slot_term:
            return self._reject_all(entry, index, f"entry term {entry.term} != log slot term {slot_term}")
        # D10: the signer of the first entry of a term is that term's leader.
        known_term = st.meta_int(M_TERM)
        if entry.term < known_term:
            return self._reject_all(entry, index, f"entry term {entry.term} below applied term {known_term}")
        if entry.term == known_term and st.meta_bytes(M_TERM_LEADER) != voter.node_id.encode():
            return self._reject_all(entry, index, "a second node signed entries in the same term")
        if entry.apply_version > APPLY_VERSION:
            # D16: never diverge; a node too old for an entry stops rather than guess.
            raise ApplyVersionTooNew(entry.apply_version)
        now = effective_time(entry.leader_time_ms, st.effective_ms)
        if entry.term > known_term:
            st.set_meta_int(M_TERM, entry.term)
            st.set_meta_bytes(M_TERM_LEADER, voter.node_id.encode())
            st.set_meta_int(M_TERM_START, now)
        st.set_meta_int(M_EFFECTIVE, now)
        term_start = st.meta_int(M_TERM_START)
        scope = EntryScope()
        results: list[pb.Result] = []
        requests: list[tuple[bytes, bytes] | None] = []
        for ordinal, signed_env in enumerate(entry.envelopes):
            replicated = st.meta_int(M_APPLY_VERSION)
            if replicated > APPLY_VERSION:
                # D16: SetApplyVersion raised the version (perhaps earlier in this entry, D9).
                raise ApplyVersionTooNew(replicated)
            verdict = check_envelope(st, signed_env, self.cluster_id, now)
            requests.append((bytes(signed_env.key_id), bytes(verdict.envelope.request_id))
                            if verdict.envelope is not None else None)
            summaries.append(_summary(st, signed_env, verdict))
            if isinstance(verdict, Refused):
                result = _result(verdict.code, verdict.message, index, ordinal)
                if verdict.remember and verdict.envelope is not None:
                    self._remember(st, bytes(signed_env.key_id), verdict.envelope, verdict.body_hash, result)
            elif verdict.first_result is not None:
                result = verdict.first_result
            else:
                ctx = ApplyContext(st, self.genesis, index, ordinal, now, term_start, bytes(signed_env.key_id),
                                   bytes(verdict.envelope.request_id), verdict.principal, scope, signed_env)
                result = dispatch(ctx, verdict.command)
                if not isinstance(verdict.command, UNREMEMBERED):
                    self._remember(st, ctx.key_id, verdict.envelope, verdict.body_hash, result)
            results.append(result)
        st.dedup_prune(now, DEDUP_PRUNE_PER_ENTRY)
        return results, requests

    @staticmethod
    def _remember(st: StateTxn, key_id: bytes, env: pb.Envelope, body_hash: bytes, result: pb.Result) -> None:
        st.dedup_put(key_id, bytes(env.request_id),
                     pb.DedupRecord(body_sha256=body_hash, expires_at_ms=env.expires_at_ms, result=result))


class ApplyVersionTooNew(Exception):
    def __init__(self, version: int) -> None:
        super().__init__(f"entry needs apply version {version}, this node has {APPLY_VERSION}: upgrade it")
        self.version = version
