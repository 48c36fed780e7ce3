"""Pool-local records, never replicated: each node's own LMDB environment beside the state (SPEC §5, D14).

`<data_dir>/local` holds
- the audit journal (`audit`): one record per applied envelope, per request refused at the API, per
  snapshot install ("entries a..b arrived by snapshot") and per change of a local table;
- the incident journal (`incidents`): lockdown, pool DOWN/UP, vetoes, break-glass overrides, ...;
- three small key/value tables: `toggle` (feature toggles), `flag` (UI flags), `override` (admin
  overrides), each change of which is also an audit record;
- `levels`: what the node last observed of a level-triggered condition (a pool's health, lockdown),
  so a restart raises no incident twice;
- `meta`: each journal's head hash and record count, the highest applied index audited, alert cursors.

Both journals are hash chains. A record is a JSON object; its canonical bytes are
`json.dumps(record without "prev_hash" and "hash", sort_keys=True, separators=(",", ":"),
ensure_ascii=True)`, and `hash = sha256(prev_hash || canonical bytes)` with `prev_hash` the previous
record's hash (32 zero bytes for the first). Records are keyed by `seq` (1, 2, ...), which is part of
the hashed bytes, and stored as the canonical JSON of the whole record (hashes in hex). `meta` keeps
the last hash and seq, so a dropped tail is caught too.

Idempotence (D14): a record may carry a key (applied envelope: index and ordinal; snapshot range:
first and last index; incidents raised from applied results: their own key). A record whose key is
already present is not written again, so rewriting after a restart or a replay changes nothing.

Several processes may open the environment at once (the node writes; `fedraft audit`, `fedraft
incidents` read; `fedraft local set` writes): LMDB serializes writers and lets readers run beside them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import lmdb

from fedraft.errors import CallerError, OperatorError
from fedraft.storage.state import env_usage

AUDIT: Final = "audit"
INCIDENTS: Final = "incidents"
CHAINS: Final = (AUDIT, INCIDENTS)
KV_KINDS: Final = ("toggle", "flag", "override")
LOCAL_DIR: Final = "local"

ZERO_HASH: Final = b"\x00" * 32
DEFAULT_MAP_SIZE: Final = 4 << 30
MAX_KV_KEY: Final = 256
MAX_KV_VALUE: Final = 4096

_DBS = (b"audit", b"audit_keys", b"incidents", b"incidents_keys", b"levels", b"meta",
        *(k.encode() for k in KV_KINDS))
M_AUDITED: Final = b"audited_index"


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def canonical(obj: Any) -> bytes:
    """The one byte form of a record (or any JSON value) that hashes are taken over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def record_hash(prev_hash: bytes, body: dict[str, Any]) -> bytes:
    """sha256(prev_hash || canonical bytes of the record without its prev_hash and hash)."""
    return hashlib.sha256(prev_hash + canonical(body)).digest()


def applied_key(index: int, ordinal: int) -> bytes:
    return b"A" + _u64(index) + ordinal.to_bytes(4, "big")


def snapshot_key(first: int, last: int) -> bytes:
    return b"S" + _u64(first) + _u64(last)


@dataclass(frozen=True)
class Pending:
    """A record to append: `body` without seq and hashes; `key` makes it idempotent."""

    body: dict[str, Any]
    key: bytes | None = None


@dataclass(frozen=True)
class VerifyReport:
    chain: str
    records: int          # records checked
    ok: bool
    bad_seq: int | None = None
    reason: str = ""

    def describe(self) -> str:
        if self.ok:
            return f"{self.chain}: {self.records} records, chain intact"
        return f"{self.chain}: record {self.bad_seq} is bad: {self.reason}"


def local_path(data_dir: Path) -> Path:
    return Path(data_dir) / LOCAL_DIR


class LocalStore:
    """One node's pool-local LMDB environment (see the module docstring)."""

    def __init__(self, path: Path, *, readonly: bool = False, map_size: int = DEFAULT_MAP_SIZE) -> None:
        self.path = Path(path)
        self.readonly = readonly
        if readonly and not (self.path / "data.mdb").exists():
            raise OperatorError(f"no pool-local records at {self.path}",
                                hint="has this node run since the audit journal was added? check --config")
        try:
            if not readonly:
                self.path.mkdir(parents=True, exist_ok=True)
            self.env = lmdb.open(str(self.path), map_size=map_size, max_dbs=len(_DBS) + 4, readonly=readonly,
                                 lock=True, create=not readonly, metasync=False, sync=True)
        except lmdb.Error as exc:
            raise OperatorError(f"cannot open pool-local records {self.path}: {exc}") from None
        if readonly:
            try:
                self._dbs = {name: self.env.open_db(name, create=False) for name in _DBS}
            except lmdb.NotFoundError:
                self.env.close()
                raise OperatorError(f"{self.path} is not a fedraft pool-local store (a database is missing)"
                                    ) from None
        else:
            self._dbs = {name: self.env.open_db(name) for name in _DBS}

    def close(self) -> None:
        self.env.close()

    def usage(self) -> tuple[int, int]:
        """(bytes used up to the last page written, map size): how close the store is to full."""
        return env_usage(self.env)

    def __enter__(self) -> LocalStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[lmdb.Transaction]:
        if self.readonly:
            raise OperatorError(f"{self.path} is open read-only")
        with self.env.begin(write=True) as txn:
            yield txn

    # --- journals ---------------------------------------------------------------------------------

    def _head(self, txn: lmdb.Transaction, chain: str) -> tuple[int, bytes]:
        meta = self._dbs[b"meta"]
        seq = txn.get(b"count/" + chain.encode(), db=meta)
        head = txn.get(b"head/" + chain.encode(), db=meta)
        return (int.from_bytes(seq, "big") if seq else 0), (bytes(head) if head else ZERO_HASH)

    def _append(self, txn: lmdb.Transaction, chain: str, item: Pending) -> int | None:
        keys = self._dbs[chain.encode() + b"_keys"]
        if item.key is not None and txn.get(item.key, db=keys) is not None:
            return None
        seq, prev = self._head(txn, chain)
        seq += 1
        body = {**item.body, "seq": seq}
        if "prev_hash" in body or "hash" in body:
            raise ValueError("a record body must not name prev_hash or hash")
        digest = record_hash(prev, body)
        txn.put(_u64(seq), canonical({**body, "prev_hash": prev.hex(), "hash": digest.hex()}),
                db=self._dbs[chain.encode()])
        meta = self._dbs[b"meta"]
        txn.put(b"count/" + chain.encode(), _u64(seq), db=meta)
        txn.put(b"head/" + chain.encode(), digest, db=meta)
        if item.key is not None:
            txn.put(item.key, _u64(seq), db=keys)
        return seq

    def append(self, chain: str, items: list[Pending], *, audited_index: int | None = None,
               levels: dict[str, str] | None = None) -> list[int | None]:
        """Append records in one transaction; the seq of each, None where its key was already present.

        `audited_index` raises the audited high-water mark; `levels` are stored in the same transaction.
        """
        if chain not in CHAINS:
            raise ValueError(f"unknown chain {chain!r}")
        with self._write() as txn:
            seqs = [self._append(txn, chain, item) for item in items]
            if audited_index is not None and audited_index > self._audited(txn):
                txn.put(M_AUDITED, _u64(audited_index), db=self._dbs[b"meta"])
            for name, value in (levels or {}).items():
                txn.put(name.encode(), value.encode(), db=self._dbs[b"levels"])
        return seqs

    def has_key(self, chain: str, key: bytes) -> bool:
        with self.env.begin() as txn:
            return txn.get(key, db=self._dbs[chain.encode() + b"_keys"]) is not None

    def _audited(self, txn: lmdb.Transaction) -> int:
        raw = txn.get(M_AUDITED, db=self._dbs[b"meta"])
        return int.from_bytes(raw, "big") if raw else 0

    def audited_index(self) -> int:
        """The highest applied index recorded in the audit journal (by an applied or snapshot record)."""
        with self.env.begin() as txn:
            return self._audited(txn)

    def count(self, chain: str) -> int:
        with self.env.begin() as txn:
            return self._head(txn, chain)[0]

    def records(self, chain: str, *, after_seq: int = 0, since_index: int | None = None,
                limit: int | None = None, latest: bool = False) -> list[dict[str, Any]]:
        """Records in seq order. `since_index`: from the first record about that applied index or later
        (applied or snapshot record), everything after it. `limit`: the first `limit`, or with
        `latest` the last `limit`. A record that does not parse is returned as {"seq", "unreadable"}.
        """
        with self.env.begin() as txn:
            start = after_seq + 1
            if since_index is not None:
                first = self._first_seq_at(txn, chain, since_index)
                if first is None:
                    return []
                start = max(start, first)
            db = self._dbs[chain.encode()]
            if latest and limit is not None:
                last, _ = self._head(txn, chain)
                start = max(start, last - limit + 1)
            out: list[dict[str, Any]] = []
            cursor = txn.cursor(db=db)
            if not cursor.set_range(_u64(start)):
                return out
            for key, value in cursor:
                if limit is not None and len(out) >= limit:
                    break
                out.append(_decode(int.from_bytes(key, "big"), bytes(value)))
            return out

    def _first_seq_at(self, txn: lmdb.Transaction, chain: str, index: int) -> int | None:
        # Applied records are appended in index order, so the first one at `index` or later is the
        # earliest; snapshot records are few, scan them all.
        keys = txn.cursor(db=self._dbs[chain.encode() + b"_keys"])
        best: int | None = None
        if keys.set_range(b"A" + _u64(index)) and bytes(keys.key()).startswith(b"A"):
            best = int.from_bytes(keys.value(), "big")
        if keys.set_range(b"S"):
            for key, value in keys:
                key = bytes(key)
                if not key.startswith(b"S"):
                    break
                if int.from_bytes(key[9:17], "big") >= index:
                    seq = int.from_bytes(value, "big")
                    best = seq if best is None else min(best, seq)
        return best

    def verify(self, chain: str) -> VerifyReport:
        """Walk the chain from the first record; name the first bad one."""
        with self.env.begin() as txn:
            last_seq, head = self._head(txn, chain)
            prev = ZERO_HASH
            expected = 1
            for key, value in txn.cursor(db=self._dbs[chain.encode()]):
                seq = int.from_bytes(key, "big")
                problem = _check(seq, expected, prev, bytes(value))
                if problem is not None:
                    bad = expected if seq > expected else seq
                    return VerifyReport(chain, expected - 1, False, bad, problem)
                prev = bytes.fromhex(json.loads(bytes(value))["hash"])
                expected += 1
            checked = expected - 1
            if checked != last_seq:
                return VerifyReport(chain, checked, False, checked + 1,
                                    f"missing: the journal ends at record {checked}, its head says {last_seq}")
            if prev != head:
                return VerifyReport(chain, checked, False, checked,
                                    "the last record's hash is not the stored head (tail altered)")
            broken = self._check_keys(txn, chain, last_seq)
            if broken is not None:
                return VerifyReport(chain, checked, False, broken[0], broken[1])
            return VerifyReport(chain, checked, True)

    def _check_keys(self, txn: lmdb.Transaction, chain: str, last_seq: int) -> tuple[int, str] | None:
        """Every idempotence key points at an existing record about the same thing."""
        db = self._dbs[chain.encode()]
        for key, value in txn.cursor(db=self._dbs[chain.encode() + b"_keys"]):
            key = bytes(key)
            seq = int.from_bytes(value, "big")
            raw = txn.get(_u64(seq), db=db)
            if not 1 <= seq <= last_seq or raw is None:
                return seq, f"an index entry points at record {seq}, which is missing"
            if key[:1] in (b"A", b"S"):
                rec = json.loads(bytes(raw))
                got = (applied_key(rec.get("index", -1), rec.get("ordinal", -1)) if rec.get("kind") == "applied"
                       else snapshot_key(rec.get("first", -1), rec.get("last", -1)) if rec.get("kind") == "snapshot"
                       else b"")
                if got != key:
                    return seq, "record does not match the index entry that points at it (records swapped?)"
        return None

    # --- level memory -----------------------------------------------------------------------------

    def level(self, name: str) -> str | None:
        with self.env.begin() as txn:
            raw = txn.get(name.encode(), db=self._dbs[b"levels"])
            return bytes(raw).decode() if raw is not None else None

    def levels(self, prefix: str = "") -> dict[str, str]:
        with self.env.begin() as txn:
            cursor = txn.cursor(db=self._dbs[b"levels"])
            out: dict[str, str] = {}
            if not cursor.set_range(prefix.encode()):
                return out
            for key, value in cursor:
                k = bytes(key).decode()
                if not k.startswith(prefix):
                    break
                out[k] = bytes(value).decode()
            return out

    # --- meta (alert cursors) ---------------------------------------------------------------------

    def meta_int(self, name: str) -> int | None:
        with self.env.begin() as txn:
            raw = txn.get(name.encode(), db=self._dbs[b"meta"])
            return int.from_bytes(raw, "big") if raw is not None else None

    def set_meta_int(self, name: str, value: int) -> None:
        with self._write() as txn:
            txn.put(name.encode(), _u64(value), db=self._dbs[b"meta"])

    # --- toggles, flags, overrides ----------------------------------------------------------------

    def kv_set(self, kind: str, key: str, value: str, *, by: str, at_ms: int, node: str = "") -> None:
        """Set `key` in table `kind` and append an audit record of the change, in one transaction."""
        _check_kv(kind, key, value)
        entry = {"value": value, "set_by": by, "set_at_ms": at_ms}
        with self._write() as txn:
            db = self._dbs[kind.encode()]
            old = txn.get(key.encode(), db=db)
            txn.put(key.encode(), canonical(entry), db=db)
            self._append(txn, AUDIT, Pending({
                "kind": "local_set", "table": kind, "key": key, "value": value,
                "previous": json.loads(bytes(old))["value"] if old is not None else None,
                "by": by, "at_ms": at_ms, "node": node}))

    def kv_unset(self, kind: str, key: str, *, by: str, at_ms: int, node: str = "") -> bool:
        _check_kv(kind, key, "")
        with self._write() as txn:
            db = self._dbs[kind.encode()]
            old = txn.get(key.encode(), db=db)
            if old is None:
                return False
            txn.delete(key.encode(), db=db)
            self._append(txn, AUDIT, Pending({
                "kind": "local_unset", "table": kind, "key": key, "previous": json.loads(bytes(old))["value"],
                "by": by, "at_ms": at_ms, "node": node}))
            return True

    def kv_get(self, kind: str, key: str) -> dict[str, Any] | None:
        _check_kv(kind, key, "")
        with self.env.begin() as txn:
            raw = txn.get(key.encode(), db=self._dbs[kind.encode()])
            return {"key": key, **json.loads(bytes(raw))} if raw is not None else None

    def kv_list(self, kind: str) -> list[dict[str, Any]]:
        _check_kv(kind, "x", "")
        with self.env.begin() as txn:
            return [{"key": bytes(k).decode(), **json.loads(bytes(v))}
                    for k, v in txn.cursor(db=self._dbs[kind.encode()])]


def _check_kv(kind: str, key: str, value: str) -> None:
    if kind not in KV_KINDS:
        raise CallerError(f"unknown table {kind!r}", hint=f"one of {', '.join(KV_KINDS)}")
    if not key or len(key.encode()) > MAX_KV_KEY or not key.isprintable():
        raise CallerError(f"a {kind} name is 1..{MAX_KV_KEY} printable bytes, got {key!r}")
    if len(value.encode()) > MAX_KV_VALUE:
        raise CallerError(f"a {kind} value is at most {MAX_KV_VALUE} bytes")


def _decode(seq: int, raw: bytes) -> dict[str, Any]:
    try:
        rec = json.loads(raw)
    except ValueError:
        return {"seq": seq, "unreadable": raw.hex()}
    return rec if isinstance(rec, dict) else {"seq": seq, "unreadable": raw.hex()}


def _check(seq: int, expected: int, prev: bytes, raw: bytes) -> str | None:
    """Why the record stored under `seq` is not the next link of the chain; None if it is."""
    if seq != expected:
        return f"missing: expected record {expected}, found {seq} next"
    try:
        rec = json.loads(raw)
    except ValueError:
        return "does not parse as JSON (altered bytes)"
    if not isinstance(rec, dict) or not isinstance(rec.get("hash"), str) or not isinstance(rec.get("prev_hash"), str):
        return "is not a journal record (no hash or prev_hash)"
    if canonical(rec) != raw:
        return "is not in canonical form (altered bytes)"
    if rec.get("seq") != seq:
        return f"says it is record {rec.get('seq')!r} but is stored as {seq} (moved)"
    if rec["prev_hash"] != prev.hex():
        return "prev_hash does not match the previous record's hash (a record before it was removed or reordered)"
    body = {k: v for k, v in rec.items() if k not in ("hash", "prev_hash")}
    if record_hash(prev, body).hex() != rec["hash"]:
        return "hash does not match its contents (altered)"
    return None
