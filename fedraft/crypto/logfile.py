"""The exported log (`fedraft export-log`) and its offline verification (`fedraft verify`), SPEC §4.

File format, version 1: the 8 bytes b"FRLOG\\x00v1", then records, each

    type u8 | length u32 (big-endian) | payload

    1 GENESIS      the genesis file's bytes as written (sha256 of them is the cluster id)
    2 PRINCIPAL    a fedraft.v1.Principal: the principals table as of the exported index, one each
    3 ENTRY        u64 Raft index | the signed entry's bytes exactly as archived
    7 REJECTED     u64 index | u64 slot term | reason: an entry apply rejected as a whole (D10)
    4 CHECKPOINT   a fedraft.v1.CheckpointRecord (chain head, state digest, cosignatures)
    5 HEAD         u64 applied index | 32-byte chain head, as the exporting node has them (a claim)
    6 END          u64 number of records before it (a cut file is detected)

in that order: one GENESIS first, then PRINCIPALs, ENTRYs in increasing index, REJECTEDs,
CHECKPOINTs in increasing index, one HEAD, one END, nothing after it. Every payload is bounded.

What `verify_log` checks, with the genesis as the root of trust (pass the expected cluster id, or the
file's own genesis is trusted and the report says so):
- every entry: decodes; signed by a genesis voter node (context fedraft/v1/entry) that it names as
  leader; terms never go back; one signer per term (D10); indexes increase, and a gap (pysyncobj's
  own no-op entries are not archived: its initial one at index 1, then one at the start of each
  leader's term) only where a new term may have started one per term. An entry apply rejected as a
  whole because it was signed in an earlier term than its log slot's (a leader that lost and regained
  leadership while the entry waited in pysyncobj's queue) is exported with its slot term, and checked
  against that term;
- the same signed entry never appears twice;
- every envelope: signed (fedraft/v1/envelope) by a key of the exported principals table that was
  added before that index, for this cluster. The table is the one as of the export, with each key's
  added and revoked index; replaying AddPrincipal/RevokePrincipal/RotateKey through the log to
  rebuild the table at every index is not done, so a key's role at the time is not checked, and a
  revoked key's envelopes are accepted (apply refused them; they are still in the log);
- the hash chain head[i] = sha256(head[prev] || entry[i]) over the exported entries, against each
  checkpoint's chain head and against the HEAD claim;
- each checkpoint: its cosignatures verify (fedraft/v1/cosign) under that voter's genesis key or its
  rotated node key in the table, each matches the Cosign entry it came from in the log, and a
  majority of the genesis voters makes it complete. Cosign entries in the log whose checkpoint is
  missing from the export are a problem.

Problems name an index. A change inside an entry, an inserted or repeated entry, a drop inside a
term and a reorder that moves index labels are pinned to their index; a change the chain alone
reveals (say a dropped entry at a term start) is known only to lie between the last checkpoint
whose chain head matched and the first that did not: the first index of that span is named, with
the span. Entries after the last complete checkpoint are vouched for only by their leaders'
signatures (and the HEAD claim, which the file itself carries): the report says up to which index
the log is anchored.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError as ProtoDecodeError

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.crypto.chain import GENESIS_HEAD, next_head
from fedraft.crypto.checkpoint import majority, verify_cosignature
from fedraft.crypto.signing import CTX_ENTRY, CTX_ENVELOPE, key_id_of, verify
from fedraft.domain.genesis import Genesis, GenesisError, parse_genesis
from fedraft.errors import DecodeError, SignatureError

MAGIC = b"FRLOG\x00v1"
GENESIS, PRINCIPAL, ENTRY, CHECKPOINT, HEAD, END, REJECTED = 1, 2, 3, 4, 5, 6, 7
KIND_NAMES = {GENESIS: "genesis", PRINCIPAL: "principal", ENTRY: "entry", CHECKPOINT: "checkpoint", HEAD: "head",
              END: "end", REJECTED: "rejected"}
MAX_RECORD_BYTES = 16 << 20
_HEADER = struct.Struct(">BI")
_U64 = struct.Struct(">Q")


def encode_record(kind: int, payload: bytes) -> bytes:
    if len(payload) > MAX_RECORD_BYTES:
        raise ValueError(f"a {KIND_NAMES[kind]} record of {len(payload)} bytes exceeds {MAX_RECORD_BYTES}")
    return _HEADER.pack(kind, len(payload)) + payload


def entry_payload(index: int, signed_entry: bytes) -> bytes:
    return _U64.pack(index) + signed_entry


def rejected_payload(index: int, slot_term: int, reason: str) -> bytes:
    return _U64.pack(index) + _U64.pack(slot_term) + reason.encode()


def head_payload(index: int, head: bytes) -> bytes:
    return _U64.pack(index) + head


def end_payload(count: int) -> bytes:
    return _U64.pack(count)


class LogWriter:
    """Builds an export in order; `records` counts what END must say."""

    def __init__(self) -> None:
        self.records = 0

    def header(self) -> bytes:
        return MAGIC

    def record(self, kind: int, payload: bytes) -> bytes:
        self.records += 1
        return encode_record(kind, payload)

    def end(self) -> bytes:
        return encode_record(END, end_payload(self.records))


@dataclass(frozen=True)
class Record:
    kind: int
    payload: bytes
    offset: int


def read_records(data: bytes) -> Iterator[Record]:
    """The records of an export, strictly; DecodeError names the byte offset of what is wrong."""
    if data[:len(MAGIC)] != MAGIC:
        raise DecodeError("not a fedraft log export (bad magic or version)")
    pos = len(MAGIC)
    while pos < len(data):
        if pos + _HEADER.size > len(data):
            raise DecodeError(f"truncated record header at byte {pos}")
        kind, length = _HEADER.unpack_from(data, pos)
        if kind not in KIND_NAMES:
            raise DecodeError(f"unknown record type {kind} at byte {pos}")
        if length > MAX_RECORD_BYTES:
            raise DecodeError(f"record of {length} bytes at byte {pos} exceeds {MAX_RECORD_BYTES}")
        start = pos + _HEADER.size
        if start + length > len(data):
            raise DecodeError(f"truncated {KIND_NAMES[kind]} record at byte {pos}")
        yield Record(kind, data[start:start + length], pos)
        pos = start + length


@dataclass(frozen=True)
class Problem:
    index: int | None  # the log index it concerns (None: the file as a whole)
    message: str

    def __str__(self) -> str:
        return f"index {self.index}: {self.message}" if self.index is not None else self.message


@dataclass
class Report:
    cluster_id: bytes = b""
    genesis_trusted_from_file: bool = True
    entries: int = 0
    envelopes: int = 0
    first_index: int = 0
    last_index: int = 0
    head: bytes = GENESIS_HEAD
    checkpoints: int = 0
    complete_checkpoints: int = 0
    anchored_index: int = 0  # the last index covered by a complete checkpoint whose chain head matched
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    clock_back: list[tuple[int, int]] = field(default_factory=list)  # (index before, index) where leader time fell

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad(self) -> int | None:
        indexes = [p.index for p in self.problems if p.index is not None]
        if indexes:
            return min(indexes)
        return None if not self.problems else 0


@dataclass
class _Entry:
    index: int
    raw: bytes
    term: int = 0
    signer: str = ""
    time_ms: int = 0
    cosigns: list[tuple[str, pb.Cosign]] = field(default_factory=list)  # (node id, command)


@dataclass
class _Parsed:
    genesis_raw: bytes = b""
    principals: list[pb.Principal] = field(default_factory=list)
    entries: list[tuple[int, bytes]] = field(default_factory=list)
    rejected: dict[int, tuple[int, str]] = field(default_factory=dict)  # index -> (slot term, reason)
    checkpoints: list[pb.CheckpointRecord] = field(default_factory=list)
    head: tuple[int, bytes] | None = None
    end: int | None = None


_ORDER = {GENESIS: 0, PRINCIPAL: 1, ENTRY: 2, REJECTED: 3, CHECKPOINT: 4, HEAD: 5, END: 6}


def _parse(data: bytes, report: Report) -> _Parsed | None:
    out = _Parsed()
    stage = -1
    count = 0
    try:
        for rec in read_records(data):
            if out.end is not None:
                raise DecodeError(f"a record after END at byte {rec.offset}")
            order = _ORDER[rec.kind]
            if order < stage or (order == stage and rec.kind in (GENESIS, HEAD)):
                raise DecodeError(f"{KIND_NAMES[rec.kind]} record out of place at byte {rec.offset}")
            stage = order
            if rec.kind == GENESIS:
                out.genesis_raw = rec.payload
            elif rec.kind == PRINCIPAL:
                out.principals.append(pb.Principal.FromString(rec.payload))
            elif rec.kind == ENTRY:
                if len(rec.payload) < _U64.size:
                    raise DecodeError(f"entry record too short at byte {rec.offset}")
                out.entries.append((_U64.unpack_from(rec.payload)[0], rec.payload[_U64.size:]))
            elif rec.kind == REJECTED:
                if len(rec.payload) < 2 * _U64.size:
                    raise DecodeError(f"rejected record too short at byte {rec.offset}")
                index, slot_term = _U64.unpack_from(rec.payload)[0], _U64.unpack_from(rec.payload, _U64.size)[0]
                if index in out.rejected:
                    raise DecodeError(f"entry {index} is listed as rejected twice")
                out.rejected[index] = (slot_term, rec.payload[2 * _U64.size:].decode(errors="replace"))
            elif rec.kind == CHECKPOINT:
                out.checkpoints.append(pb.CheckpointRecord.FromString(rec.payload))
            elif rec.kind == HEAD:
                if len(rec.payload) != _U64.size + 32:
                    raise DecodeError(f"head record of {len(rec.payload)} bytes at byte {rec.offset}")
                out.head = (_U64.unpack_from(rec.payload)[0], rec.payload[_U64.size:])
            else:
                if len(rec.payload) != _U64.size:
                    raise DecodeError(f"end record of {len(rec.payload)} bytes at byte {rec.offset}")
                out.end = _U64.unpack_from(rec.payload)[0]
                if out.end != count:
                    raise DecodeError(f"END counts {out.end} records, the file has {count}")
            count += 1
    except (DecodeError, ProtoDecodeError) as exc:
        # What was read so far still gets checked: the first bad index follows the last good entry.
        after = out.entries[-1][0] + 1 if out.entries else None
        report.problems.append(Problem(after, f"the file is malformed: {exc}"))
        return out if out.genesis_raw else None
    if not out.genesis_raw:
        report.problems.append(Problem(None, "no genesis record"))
        return None
    if out.end is None:
        after = out.entries[-1][0] + 1 if out.entries else None
        report.problems.append(Problem(after, "the file has no END record (cut short?)"))
    return out


class _Principals:
    def __init__(self, genesis: Genesis, table: Iterable[pb.Principal], report: Report) -> None:
        self.by_key: dict[bytes, pb.Principal] = {}
        for p in table:
            if key_id_of(bytes(p.public_key)) != bytes(p.key_id):
                report.problems.append(Problem(None, f"principal {p.name!r}: key id does not match its key"))
                continue
            self.by_key[bytes(p.key_id)] = p
        # What genesis pins is checked field by field; a revocation of a genesis key is taken as exported.
        pinned = [(v.public_key, v.pool, "node", v.node_id) for v in genesis.voters]
        pinned += [(a.public_key, a.pool, "admin", a.name) for a in genesis.admins]
        for public_key, pool, role, name in pinned:
            known = self.by_key.get(key_id_of(public_key))
            if known is None or (bytes(known.public_key), known.pool, known.role, known.name,
                                 known.added_index) != (public_key, pool, role, name, 0):
                report.problems.append(Problem(None, f"the principals table does not hold genesis {role} {name} "
                                                     "as genesis pins it"))
        self.genesis = genesis

    def node_keys(self, node_id: str) -> set[bytes]:
        """Keys that may sign for voter `node_id`: its genesis key and rotated node keys of its pool."""
        voter = self.genesis.voter(node_id)
        if voter is None:
            return set()
        keys = {voter.public_key}
        keys |= {bytes(p.public_key) for p in self.by_key.values()
                 if p.role == "node" and p.name == node_id and p.pool == voter.pool}
        return keys


def verify_log(data: bytes, expected_cluster_id: bytes | None = None) -> Report:
    """Check an export offline (see the module docstring); the report lists every problem found."""
    report = Report()
    parsed = _parse(data, report)
    if parsed is None:
        return report
    report.cluster_id = hashlib.sha256(parsed.genesis_raw).digest()
    try:
        genesis = parse_genesis(parsed.genesis_raw)
    except GenesisError as exc:
        report.problems.append(Problem(None, f"genesis does not parse: {exc}"))
        return report
    if expected_cluster_id is not None:
        report.genesis_trusted_from_file = False
        if report.cluster_id != expected_cluster_id:
            report.problems.append(Problem(None, f"the file's genesis is cluster {report.cluster_id.hex()}, "
                                                 f"not the expected {expected_cluster_id.hex()}"))
            return report
    else:
        report.warnings.append("no expected cluster id given: the genesis inside the file was trusted")
    principals = _Principals(genesis, parsed.principals, report)
    entries, heads = _check_entries(genesis, principals, parsed.entries, parsed.rejected, report)
    _check_checkpoints(genesis, principals, parsed.checkpoints, entries, heads, report)
    if parsed.head is not None:
        index, head = parsed.head
        if (index, head) != (report.last_index, report.head):
            # Entries cut from the end, or one changed after the last anchored checkpoint.
            after = [i for i in entries if i > report.anchored_index]
            first = report.last_index + 1 if index > report.last_index else (min(after) if after else index)
            explained = any(p.index is not None and p.index >= first for p in report.problems)
            if not explained:
                report.problems.append(Problem(
                    first, f"the exporting node's head (index {index}, {head.hex()[:16]}) is not the head of the "
                           f"exported entries (index {report.last_index}, {report.head.hex()[:16]})"))
    if report.anchored_index < report.last_index:
        report.warnings.append(f"entries {report.anchored_index + 1}..{report.last_index} are after the last complete "
                               "checkpoint: only their leaders' signatures vouch for them")
    report.problems.sort(key=lambda p: (p.index is None, p.index or 0))
    return report


def _check_entries(genesis: Genesis, principals: _Principals, raw_entries: list[tuple[int, bytes]],
                   rejected: dict[int, tuple[int, str]],
                   report: Report) -> tuple[dict[int, _Entry], dict[int, bytes]]:
    voters = {key_id_of(v.public_key): v for v in genesis.voters}
    cluster_id = genesis.cluster_id
    entries: dict[int, _Entry] = {}
    heads: dict[int, bytes] = {}
    seen: dict[bytes, int] = {}
    head = GENESIS_HEAD
    # Index 1 is always pysyncobj's initial no-op (term 0); no fedraft entry is ever there.
    prev_index, prev_term, term_leader, prev_time = 1, 0, "", 0
    for index, raw in raw_entries:
        problem = report.problems.append
        if index <= prev_index:
            problem(Problem(index, f"entry index {index} after {prev_index}: entries out of order or repeated"))
            continue
        head = next_head(head, raw)
        heads[index] = head
        e = _Entry(index, raw)
        entries[index] = e
        report.entries += 1
        report.first_index = report.first_index or index
        digest = hashlib.sha256(raw).digest()
        if digest in seen:
            problem(Problem(index, f"the same signed entry is also at index {seen[digest]} (replayed)"))
        seen.setdefault(digest, index)
        signed, entry = pb.Signed(), pb.LogEntry()
        try:
            signed.ParseFromString(raw)
            entry.ParseFromString(signed.body)
        except ProtoDecodeError:
            problem(Problem(index, "entry does not decode"))
            prev_index = index
            continue
        voter = voters.get(bytes(signed.key_id))
        if voter is None:
            problem(Problem(index, "entry not signed by a genesis voter"))
        else:
            try:
                verify(voter.public_key, CTX_ENTRY, cluster_id, bytes(signed.body), bytes(signed.sig))
            except SignatureError:
                problem(Problem(index, f"entry signature of {voter.node_id} does not verify"))
                voter = None
        if voter is not None and entry.leader_id != voter.node_id:
            problem(Problem(index, f"entry names leader {entry.leader_id!r} but is signed by {voter.node_id}"))
        e.term, e.signer, e.time_ms = entry.term, voter.node_id if voter else "", entry.leader_time_ms
        # D10 and the shape of a Raft log: terms never go back, one leader per term, and the only
        # indexes not archived are pysyncobj's no-ops, one at the start of each new leader's term.
        # An entry apply rejected for its term is placed by its slot's term, which the export carries.
        slot = entry.term
        if index in rejected:
            slot, why = rejected[index]
            if entry.term >= slot:
                problem(Problem(index, f"listed as rejected ({why}) but its term {entry.term} is not below its "
                                       f"slot's term {slot}"))
            report.warnings.append(f"index {index}: rejected at apply as a whole ({why}); nothing of it applied")
        missing = index - prev_index - 1
        if slot < prev_term:
            problem(Problem(index, f"term {slot} after term {prev_term}"))
        elif slot == prev_term:
            if e.signer and term_leader and e.signer != term_leader:
                problem(Problem(index, f"a second node ({e.signer}) signed in term {entry.term} of {term_leader}"))
            if missing:
                problem(Problem(prev_index + 1, f"{missing} entr{'y' if missing == 1 else 'ies'} missing inside "
                                                f"term {slot} (indexes {prev_index + 1}..{index - 1})"))
            elif e.time_ms < prev_time and index not in rejected:
                report.warnings.append(f"index {index}: the leader's clock went back within term {entry.term}")
                report.clock_back.append((prev_index, index))
        else:
            if missing > slot - prev_term:
                # At most one no-op per new term; which of the missing indexes held no-ops cannot be
                # told, so the first of them is named.
                problem(Problem(prev_index + 1,
                                f"{missing} indexes missing between {prev_index} and {index}, more than the "
                                f"{slot - prev_term} new term(s) could explain with their leaders' no-ops"))
            term_leader = e.signer
        prev_index, prev_term, prev_time = index, max(prev_term, slot), e.time_ms
        report.last_index = index
        for ordinal, env_signed in enumerate(entry.envelopes):
            report.envelopes += 1
            _check_envelope(principals, cluster_id, index, ordinal, env_signed, e, report)
        if index in rejected:
            e.cosigns = []  # nothing of a rejected entry applied
    for index in sorted(set(rejected) - set(entries)):
        report.problems.append(Problem(index, f"entry {index} is listed as rejected but not exported"))
    report.head = head
    return entries, heads


def _check_envelope(principals: _Principals, cluster_id: bytes, index: int, ordinal: int, signed: pb.Signed,
                    entry: _Entry, report: Report) -> None:
    where = f"envelope {ordinal}"
    p = principals.by_key.get(bytes(signed.key_id))
    if p is None:
        report.problems.append(Problem(index, f"{where}: key {bytes(signed.key_id).hex()} is not in the principals "
                                              "table"))
        return
    if p.added_index and p.added_index >= index:
        report.problems.append(Problem(index, f"{where}: signed by {p.name}'s key, added only at index "
                                              f"{p.added_index}"))
    try:
        verify(bytes(p.public_key), CTX_ENVELOPE, cluster_id, bytes(signed.body), bytes(signed.sig))
    except SignatureError:
        report.problems.append(Problem(index, f"{where}: signature of {p.name} does not verify"))
        return
    env = pb.Envelope()
    try:
        env.ParseFromString(signed.body)
    except ProtoDecodeError:
        report.problems.append(Problem(index, f"{where}: envelope does not decode"))
        return
    if bytes(env.cluster_id) != cluster_id:
        report.problems.append(Problem(index, f"{where}: for another cluster"))
    if env.WhichOneof("command") == "cosign" and p.role == "node":
        entry.cosigns.append((p.name, env.cosign))


def _check_checkpoints(genesis: Genesis, principals: _Principals, records: list[pb.CheckpointRecord],
                       entries: dict[int, _Entry], heads: dict[int, bytes], report: Report) -> None:
    cluster_id = genesis.cluster_id
    needed = majority(len(genesis.voters))
    by_index: dict[int, pb.CheckpointRecord] = {}
    anchor = 0  # last complete checkpoint whose head matched the chain
    ordered = sorted(heads)
    for record in records:
        index = record.index
        report.checkpoints += 1
        if index in by_index:
            report.problems.append(Problem(index, f"checkpoint {index} appears twice"))
            continue
        by_index[index] = record
        valid: set[str] = set()
        before = len(report.problems)
        for cs in record.cosignatures:
            where = f"checkpoint {index}: {cs.node_id}'s cosignature"
            if bytes(cs.public_key) not in principals.node_keys(cs.node_id):
                report.problems.append(Problem(index, f"{where} is by a key that is not that voter's"))
                continue
            try:
                verify_cosignature(bytes(cs.public_key), cluster_id, index, bytes(record.chain_head),
                                   bytes(record.state_digest), bytes(cs.signature))
            except SignatureError:
                report.problems.append(Problem(index, f"{where} does not verify"))
                continue
            source = entries.get(cs.log_index)
            if source is None or not any(
                    node == cs.node_id and cmd.index == index and bytes(cmd.signature) == bytes(cs.signature)
                    for node, cmd in source.cosigns):
                report.problems.append(Problem(cs.log_index, f"{where} is not in the Cosign entry at index "
                                                             f"{cs.log_index}"))
                continue
            if cs.node_id not in valid and len(valid) + 1 == needed and record.complete_index != cs.log_index:
                report.problems.append(Problem(index, f"checkpoint {index}: completed by the cosignature at index "
                                                      f"{cs.log_index}, the record says {record.complete_index}"))
            valid.add(cs.node_id)
        complete = len(valid) >= needed
        if not complete and record.complete_index and len(report.problems) == before:
            report.problems.append(Problem(index, f"checkpoint {index} claims completion without a majority"))
        report.complete_checkpoints += complete
        if index not in heads:
            if index <= report.last_index or complete:
                report.problems.append(Problem(index, f"checkpoint {index} names an entry the export lacks"))
            continue
        if heads[index] != bytes(record.chain_head):
            if not valid:  # nobody vouches for this record's head: the record is what is wrong
                if not record.cosignatures:
                    report.problems.append(Problem(index, f"checkpoint {index}'s chain head is not the chain's"))
                continue
            # A voter signed this head: something in (anchor, index] was changed, dropped, inserted or reordered.
            span = [i for i in ordered if anchor < i <= index]
            first = span[0] if span else index
            if any(p.index is not None and first <= p.index <= index for p in report.problems):
                continue  # explained by a problem found in the entries themselves
            # A leader's clock going back inside the span is the likely place (entries swapped).
            suspect = next((before for before, at in report.clock_back if first <= before and at <= index), None)
            report.problems.append(Problem(
                suspect or first, f"the hash chain does not reach checkpoint {index}'s head: an entry in "
                                  f"{first}..{index} was changed, dropped, inserted or reordered"
                                  + (f" (the leader's clock goes back after index {suspect})" if suspect else "")))
            continue
        if complete:
            anchor = index
    report.anchored_index = anchor
    for e in entries.values():
        for node, cmd in e.cosigns:
            rec = by_index.get(cmd.index)
            if rec is None:
                if cmd.index <= report.last_index:
                    report.problems.append(Problem(cmd.index, f"{node} cosigned checkpoint {cmd.index} at index "
                                                              f"{e.index} but the export has no such checkpoint"))
                continue
            if ((bytes(cmd.chain_head), bytes(cmd.state_digest)) != (bytes(rec.chain_head), bytes(rec.state_digest))
                    or any(cs.node_id == node for cs in rec.cosignatures)):
                continue  # refused at apply (that node's state differed), or recorded
            if any(_cosign_verifies(key, cluster_id, cmd) for key in principals.node_keys(node)):
                # Apply accepts such a Cosign: its signature is missing from the record.
                report.problems.append(Problem(cmd.index, f"checkpoint {cmd.index} lacks {node}'s cosignature "
                                                          f"applied at index {e.index} (removed from the export)"))


def _cosign_verifies(key: bytes, cluster_id: bytes, cmd: pb.Cosign) -> bool:
    try:
        verify_cosignature(key, cluster_id, cmd.index, bytes(cmd.chain_head), bytes(cmd.state_digest),
                           bytes(cmd.signature))
    except SignatureError:
        return False
    return True
