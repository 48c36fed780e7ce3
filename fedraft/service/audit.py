"""The node's pool-local journals, fed from applied results and from the API (SPEC §5, D14).

`LocalRecorder` owns one background thread, the only writer of the node's `LocalStore` (besides
`fedraft local set`). Everything else only enqueues:
- `on_applied(AppliedEntry)` (engine apply listener, tick thread): one audit record per envelope,
  keyed by (index, ordinal), so a replay after a restart rewrites nothing;
- `on_snapshot(first, last)` (engine snapshot listener): "entries first..last arrived by snapshot";
- `on_refused(RefusedRequest)` (API threads): a request refused at the API, rate-limited;
- `raise_incident(kind, detail)` (any app-level code): an incident, optionally keyed.

Incidents are raised from what was applied, never inside apply (D14): after applied results are
journaled the thread looks at them (a veto, a break-glass override) and at the replicated pools
(a pool's health changed since this node last looked), and once a second at lockdown (D11). The last
observed level of each condition is stored with the incident, so a restart raises nothing twice.

A crash can fall between the state's commit and the journal's: at start the recorder backfills the
entries the state has applied but the journal lacks, from the archive of signed entries, with the
result the de-dup table kept (records marked `"recovered": true`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError as ProtoDecodeError

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft._proto.fedraft.v1 import placement_pb2 as ppb
from fedraft.consensus.applier import AppliedEntry, EnvelopeSummary
from fedraft.domain.outcome import Code
from fedraft.storage import placement_schema
from fedraft.storage.local import AUDIT, INCIDENTS, LocalStore, Pending, applied_key, snapshot_key
from fedraft.storage.state import StateStore, StateTxn

log = logging.getLogger(__name__)

REFUSED_PER_SECOND = 50      # refused-request records per second; more are counted, not written
BACKFILL_CHUNK = 256         # archive entries per transaction when backfilling
POOL_CHECK_MIN_S = 0.5       # at most this often after applied entries
POOL_CHECK_IDLE_S = 5.0      # and at least this often
LOCKDOWN_CHECK_S = 1.0
BATCH_WINDOW_S = 0.05        # after the first queued item, gather for this long: one transaction, one wake-up

CRITICAL, WARNING, INFO = "critical", "warning", "info"
# A governance result that says so (field set or state) was executed by a break-glass override (SPEC §6).
BREAK_GLASS_FIELDS = ("break_glass", "override", "degraded")
BREAK_GLASS_STATES = ("break_glass", "overridden", "executed_break_glass")


def now_ms() -> int:
    return int(time.time() * 1000)


def code_name(code: int) -> str:
    return Code(code).name if code in Code._value2member_map_ else f"CODE_{code}"


@dataclass(frozen=True)
class RefusedRequest:
    """A request the API refused before it could reach the log."""

    method: str
    code: str                 # gRPC status name
    reason: str
    key_id: bytes = b""       # the author, if the request said who it was
    peer: str = ""            # the caller's address as gRPC saw it
    at_ms: int = field(default_factory=now_ms)


@dataclass(frozen=True)
class _Snapshot:
    first: int
    last: int


@dataclass(frozen=True)
class _Incident:
    kind: str
    detail: dict[str, Any]
    level: str
    key: bytes | None


_Item = AppliedEntry | RefusedRequest | _Snapshot | _Incident


def _author(p: pb.Principal | None) -> dict[str, str] | None:
    return {"name": p.name, "pool": p.pool, "role": p.role} if p is not None else None


class LocalRecorder:
    def __init__(self, local: LocalStore, state: StateStore, node_id: str, *,
                 in_lockdown: Callable[[], bool] | None = None, lockdown_grace_s: float = 10.0,
                 on_incident: Callable[[], None] | None = None, wall_ms: Callable[[], int] = now_ms) -> None:
        self.local = local
        self.state = state
        self.node_id = node_id
        self.in_lockdown = in_lockdown
        self.lockdown_grace_s = lockdown_grace_s
        self.on_incident = on_incident
        self.wall_ms = wall_ms
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._idle = threading.Condition()
        self._pending = 0  # items enqueued and not yet processed
        self._refused_lock = threading.Lock()
        self._refused_second = 0
        self._refused_count = 0
        self._suppressed = 0
        self._lockdown_since: float | None = None
        self._pools_checked = 0.0
        self._pools_dirty = True
        self._lockdown_checked = 0.0

    # ----- producers (any thread; never block, never raise) -----
    def _put(self, item: _Item) -> None:
        with self._idle:
            self._pending += 1
        self._queue.put(item)

    def on_applied(self, entry: AppliedEntry) -> None:
        self._put(entry)

    def on_snapshot(self, first: int, last: int) -> None:
        self._put(_Snapshot(first, last))

    def on_refused(self, request: RefusedRequest) -> None:
        second = request.at_ms // 1000
        with self._refused_lock:
            if second != self._refused_second:
                self._refused_second, self._refused_count = second, 0
            self._refused_count += 1
            if self._refused_count > REFUSED_PER_SECOND:
                self._suppressed += 1
                return
        self._put(request)

    def raise_incident(self, kind: str, detail: dict[str, Any] | None = None, *, level: str = CRITICAL,
                       key: str | bytes | None = None) -> None:
        """Record an incident in this node's incident journal and alert on it (asynchronously).

        For app-level code (never for apply): `kind` is a short name ("break_glass", "veto", ...);
        `detail` a JSON-able dict; `key`, if given, makes it idempotent (an incident with the same key
        is raised once, even across restarts and replays — e.g. f"break_glass/{index}/{ordinal}").
        """
        raw_key = key.encode() if isinstance(key, str) else key
        self._put(_Incident(kind, dict(detail or {}), level, b"K" + raw_key if raw_key is not None else None))

    # ----- lifecycle -----
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"fedraft-local-{self.node_id}", daemon=True)
        self._thread.start()

    def stop_observing(self) -> None:
        """No more lockdown checks (the node is shutting down: losing contact now is no incident)."""
        self.in_lockdown = None

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop."""
        if self._thread is None:
            return
        self._stopping.set()
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything enqueued so far is written (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    # ----- the writer thread -----
    def _run(self) -> None:
        try:
            self.backfill()
        except Exception:
            log.exception("audit backfill failed; the journal may miss entries applied before a crash")
        while True:
            try:
                item = self._queue.get(timeout=LOCKDOWN_CHECK_S)
            except queue.Empty:
                item = None
                if self._stopping.is_set():
                    return
            if item is not None:
                # Gather what arrives in the next few ms: one wake-up and one fsynced transaction for many
                # entries instead of one per entry (decision 0018). stop() cuts the wait short.
                self._stopping.wait(BATCH_WINDOW_S)
            items: list[_Item] = []
            stop = False
            if item is None:
                stop = self._stopping.is_set()
            else:
                items.append(item)
            while True:  # everything that is already there, in one go
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                else:
                    items.append(more)
            try:
                self._process(items)
                self._observe()
            except Exception:  # the disk, or a bug: log it, keep the node running
                log.exception("writing pool-local records failed")
            finally:
                with self._idle:
                    self._pending -= len(items)
                    self._idle.notify_all()
            if stop and self._queue.empty():
                return

    def _process(self, items: list[_Item]) -> None:
        applied: list[AppliedEntry] = []
        for item in items:
            if isinstance(item, AppliedEntry):
                applied.append(item)
                continue
            self._write_applied(applied)
            applied = []
            if isinstance(item, RefusedRequest):
                self._write_refused(item)
            elif isinstance(item, _Snapshot):
                self._write_snapshot(item)
            else:
                self._write_incidents([item])
        self._write_applied(applied)

    def _write_applied(self, entries: list[AppliedEntry]) -> None:
        if not entries:
            return
        at = self.wall_ms()
        pending: list[Pending] = []
        incidents: list[_Incident] = []
        for entry in entries:
            summaries = entry.envelopes or [None] * len(entry.results)
            for ordinal, (result, request, summary) in enumerate(
                    zip(entry.results, entry.requests, summaries, strict=True)):
                pending.append(Pending(self._applied_body(entry.index, ordinal, result, request, summary, at),
                                       applied_key(entry.index, ordinal)))
                incidents += self._incidents_from(entry.index, ordinal, result, summary, request)
        self.local.append(AUDIT, pending, audited_index=max(e.index for e in entries))
        if incidents:
            self._write_incidents(incidents)
        self._pools_dirty = True

    def _applied_body(self, index: int, ordinal: int, result: pb.Result, request: tuple[bytes, bytes] | None,
                      summary: EnvelopeSummary | None, at: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "applied", "index": index, "ordinal": ordinal, "node": self.node_id, "at_ms": at,
            "key_id": request[0].hex() if request else "", "request_id": request[1].hex() if request else "",
            "command": summary.command if summary else "",
            "author": ({"name": summary.principal_name, "pool": summary.principal_pool,
                        "role": summary.principal_role} if summary and summary.principal_name else None),
            "code": int(result.code), "code_name": code_name(result.code), "message": result.message,
        }
        if result.WhichOneof("detail") == "governance":
            body["governance"] = {"pending_id": bytes(result.governance.pending_id).hex(),
                                  "state": result.governance.state}
        return body

    def _incidents_from(self, index: int, ordinal: int, result: pb.Result, summary: EnvelopeSummary | None,
                        request: tuple[bytes, bytes] | None) -> list[_Incident]:
        """Incidents an applied result shows (read after apply, never inside it)."""
        if result.WhichOneof("detail") != "governance" or result.code != Code.OK:
            return []
        gov = result.governance
        who = {"index": index, "ordinal": ordinal, "command": summary.command if summary else "",
               "author": summary.principal_name if summary else "",
               "author_pool": summary.principal_pool if summary else "",
               "key_id": request[0].hex() if request else "", "pending_id": bytes(gov.pending_id).hex()}
        out: list[_Incident] = []
        if gov.state == "vetoed":
            out.append(_Incident("veto", {**who, "reason": result.message}, WARNING,
                                 b"Kveto/" + bytes(gov.pending_id)))
        fields = gov.DESCRIPTOR.fields_by_name
        if gov.state in BREAK_GLASS_STATES or any(f in fields and getattr(gov, f) for f in BREAK_GLASS_FIELDS):
            out.append(_Incident("break_glass", {**who, "state": gov.state, "message": result.message}, CRITICAL,
                                 b"Kbreak_glass/" + (bytes(gov.pending_id) or f"{index}/{ordinal}".encode())))
        return out

    def _write_refused(self, request: RefusedRequest) -> None:
        author = None
        if request.key_id:
            with self.state.read() as st:
                author = _author(st.principal(request.key_id))
        with self._refused_lock:
            suppressed, self._suppressed = self._suppressed, 0
        body: dict[str, Any] = {
            "kind": "refused", "node": self.node_id, "at_ms": request.at_ms, "method": request.method,
            "code_name": request.code, "reason": request.reason, "key_id": request.key_id.hex(),
            "author": author, "peer": request.peer}
        if request.code == "UNAUTHENTICATED" and author is not None:
            # the signature did not verify: the key id is only what the request claimed
            body["author"], body["claimed_author"] = None, author
        if suppressed:
            body["suppressed_before"] = suppressed  # refusals over the rate limit, not recorded one by one
        self.local.append(AUDIT, [Pending(body)])

    def _write_snapshot(self, snap: _Snapshot) -> None:
        if snap.last < snap.first:
            return
        body = {"kind": "snapshot", "first": snap.first, "last": snap.last, "node": self.node_id,
                "at_ms": self.wall_ms(),
                "message": f"entries {snap.first}..{snap.last} arrived by snapshot (no per-entry results here)"}
        self.local.append(AUDIT, [Pending(body, snapshot_key(snap.first, snap.last))], audited_index=snap.last)
        self._pools_dirty = True

    def _write_incidents(self, incidents: list[_Incident], levels: dict[str, str] | None = None) -> None:
        at = self.wall_ms()
        applied = self._applied_index()
        pending = [Pending({"kind": i.kind, "level": i.level, "detail": i.detail, "node": self.node_id,
                            "at_ms": at, "applied_index": applied}, i.key) for i in incidents]
        seqs = self.local.append(INCIDENTS, pending, levels=levels)
        for i, seq in zip(incidents, seqs, strict=True):
            if seq is not None:
                log.warning("incident %d (%s): %s %s", seq, i.level, i.kind, i.detail)
        if any(s is not None for s in seqs) and self.on_incident is not None:
            self.on_incident()

    def _applied_index(self) -> int:
        try:
            return self.state.applied_index()
        except Exception:  # a read racing a snapshot install
            return 0

    # ----- level-triggered observations -----
    def _observe(self) -> None:
        now = time.monotonic()
        with self._refused_lock:
            suppressed = self._suppressed if self.wall_ms() // 1000 != self._refused_second else 0
            self._suppressed -= suppressed
        if suppressed:
            self.local.append(AUDIT, [Pending({
                "kind": "refused_suppressed", "node": self.node_id, "at_ms": self.wall_ms(), "count": suppressed,
                "reason": f"more than {REFUSED_PER_SECOND} refused requests per second: counted, not recorded"})])
        if (self._pools_dirty and now - self._pools_checked >= POOL_CHECK_MIN_S) \
                or now - self._pools_checked >= POOL_CHECK_IDLE_S:
            self._pools_checked, self._pools_dirty = now, False
            self.check_pools()
        if self.in_lockdown is not None and now - self._lockdown_checked >= LOCKDOWN_CHECK_S:
            self._lockdown_checked = now
            self.check_lockdown(self.in_lockdown(), now)

    def check_pools(self) -> None:
        """Raise pool_down / pool_up where a pool's replicated health differs from what this node last saw."""
        with self.state.read() as st:
            pools = []
            for _, raw in st.items(placement_schema.POOLS):
                rec = ppb.PoolRecord()
                rec.ParseFromString(raw)
                pools.append((rec.id, rec.health or "up", rec.region, int(rec.changed_ms)))
            applied = st.applied_index
        seen = self.local.levels("pool/")
        incidents: list[_Incident] = []
        levels: dict[str, str] = {}
        for pool, health, region, changed in pools:
            before = seen.get(f"pool/{pool}")
            if before == health:
                continue
            levels[f"pool/{pool}"] = health
            if before is None and health == "up":
                continue  # first sight of a healthy pool: nothing to say
            detail = {"pool": pool, "region": region, "health": health, "since_ms": changed,
                      "applied_index": applied, "previous": before}
            if health == "down":
                incidents.append(_Incident("pool_down", detail, CRITICAL, None))
            else:
                incidents.append(_Incident(f"pool_{health}", detail, INFO, None))
        if levels:
            self._write_incidents(incidents, levels)

    def check_lockdown(self, locked: bool, now: float) -> None:
        """SPEC D11 lockdown, debounced: entered after `lockdown_grace_s` of it, left at once."""
        before = self.local.level("lockdown") == "1"
        if locked:
            if self._lockdown_since is None:
                self._lockdown_since = now
            if not before and now - self._lockdown_since >= self.lockdown_grace_s:
                self._write_incidents([_Incident("lockdown_entered", {
                    "message": "fewer than a majority of voters in contact: this node refuses writes",
                    "for_s": round(now - self._lockdown_since, 1)}, CRITICAL, None)], {"lockdown": "1"})
        else:
            self._lockdown_since = None
            if before:
                self._write_incidents([_Incident("lockdown_left", {
                    "message": "a majority of voters is in contact again"}, INFO, None)], {"lockdown": "0"})

    # ----- crash gap -----
    def backfill(self) -> int:
        """Journal the entries the state applied but the audit journal lacks (a crash between the two
        commits); returns how many entries were backfilled."""
        done = 0
        while True:
            audited = self.local.audited_index()
            with self.state.read() as st:
                applied = st.applied_index
                if applied <= audited:
                    return done
                pending: list[Pending] = []
                last = audited
                at = self.wall_ms()
                for index, signed_entry in st.archive_iter(audited + 1):
                    if index > applied or len(pending) >= BACKFILL_CHUNK:
                        break
                    pending += self._recovered(st, index, signed_entry, at)
                    last = index
                    done += 1
            if last == audited:
                return done  # the archive does not reach: nothing more to recover
            self.local.append(AUDIT, pending, audited_index=last)
            if done:
                log.info("audit journal: recovered entries %d..%d from the archive", audited + 1, last)

    def _recovered(self, st: StateTxn, index: int, signed_entry: bytes, at: int) -> list[Pending]:
        signed, entry = pb.Signed(), pb.LogEntry()
        try:
            signed.ParseFromString(signed_entry)
            entry.ParseFromString(signed.body)
        except ProtoDecodeError:
            return []
        out = []
        for ordinal, signed_env in enumerate(entry.envelopes):
            env = pb.Envelope()
            try:
                env.ParseFromString(signed_env.body)
            except ProtoDecodeError:
                env = pb.Envelope()
            key_id = bytes(signed_env.key_id)
            kind = env.WhichOneof("command")
            inner = getattr(env, kind).WhichOneof("command") if kind in ("governance", "placement") else None
            p = st.principal(key_id)
            seen = st.dedup_get(key_id, bytes(env.request_id)) if env.request_id else None
            body: dict[str, Any] = {
                "kind": "applied", "index": index, "ordinal": ordinal, "node": self.node_id, "at_ms": at,
                "key_id": key_id.hex(), "request_id": bytes(env.request_id).hex(), "command": inner or kind or "",
                "author": _author(p), "recovered": True}
            if seen is not None:
                body.update(code=int(seen.result.code), code_name=code_name(seen.result.code),
                            message=seen.result.message)
            else:
                body.update(code=None, code_name="", message="result not kept (recovered from the archive)")
            out.append(Pending(body, applied_key(index, ordinal)))
        return out
