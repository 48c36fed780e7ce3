"""The public gRPC service fedraft.v1.Federation: thin handlers (authenticate, decode, call, encode).

Handlers take raw request bytes so the request signature (SPEC D2) is checked over exactly the bytes
that arrived, before anything is decoded. Node-level refusals are gRPC status codes (UNAVAILABLE
with the leader in trailing metadata `fedraft-leader`, UNAUTHENTICATED, INVALID_ARGUMENT,
RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED); per-envelope outcomes are Results in the response.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError as ProtoDecodeError

from fedraft import __version__
from fedraft._proto.fedraft.v1 import api_pb2 as api
from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.consensus.engine import NotCommitted, NotLeader, RaftEngine
from fedraft.consensus.validation import Checked, Refused, check_envelope
from fedraft.crypto.request_auth import AUTH_HEADER
from fedraft.domain import registry
from fedraft.errors import CallerError
from fedraft.service.audit import RefusedRequest
from fedraft.service.auth import AuthError, RequestVerifier
from fedraft.service.simulate import NotAllowed, answer, check_request
from fedraft.service.watch import Compacted, HubStopped, Overflow, TooManyStreams, WatchHub
from fedraft.storage.log_export import chunked, export_records
from fedraft.storage.state import record_to_pb
from fedraft.telemetry import NodeTelemetry, ProposeTrace
from fedraft.wire.collections import LIST_FIELDS

log = logging.getLogger(__name__)

SERVICE = "fedraft.v1.Federation"
LEADER_HEADER = "fedraft-leader"
MAX_ENVELOPES_PER_REQUEST = 1000
DEFAULT_WAIT_S = 10.0
MAX_REQUEST_BYTES = 4 * 1024 * 1024
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000
# collection name -> LMDB database; memories lists metadata only (the boxes are in memory_boxes)
_COLLECTION_DBS = {"registry": b"registry", "pools": b"pools", "workloads": b"workloads", "pairings": b"pairings",
                   "catalog": b"catalog", "pending": b"pending_ops", "principals": b"principals",
                   "policy": b"policy", "memories": b"memories"}
# collection name -> (LMDB database, ListResponse field)
COLLECTIONS = {name: (db, LIST_FIELDS[name]) for name, db in _COLLECTION_DBS.items()}
# collections keyed by raw bytes: their prefix and page token are hex
HEX_KEYED = frozenset({"principals"})


# Refusals the audit journal records: the request itself was at fault. Routing and availability
# (UNAVAILABLE: not the leader, lockdown; DEADLINE_EXCEEDED: outcome unknown) are not refusals.
REFUSAL_CODES = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
                           grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED})


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str, leader: str = "") -> NoReturn:
    if leader:
        context.set_trailing_metadata(((LEADER_HEADER, leader),))
    context.abort(code, message)
    raise AssertionError("unreachable")  # context.abort raises


def _deadline(context: grpc.ServicerContext) -> float:
    remaining = context.time_remaining()
    return min(DEFAULT_WAIT_S, remaining) if remaining is not None else DEFAULT_WAIT_S


class _Lockdown(Exception):
    pass


class FederationService:
    def __init__(self, engine: RaftEngine, node_id: str,
                 on_refused: Callable[[RefusedRequest], None] | None = None, *,
                 watch: WatchHub | None = None, peer_api: dict[str, str] | None = None,
                 observe_commit: Callable[[float], None] | None = None,
                 telemetry: NodeTelemetry | None = None) -> None:
        self.engine = engine
        self.store = engine.store
        self.node_id = node_id
        self.verifier = RequestVerifier(engine.store, engine.cluster_id)
        self.on_refused = on_refused  # the node's audit journal (fedraft.service.audit)
        self.watch_hub = watch
        self.peer_api = dict(peer_api or {})  # the other voters' API addresses (signed Status shows them)
        self.observe_commit = observe_commit  # seconds from propose to result (metrics)
        self.telemetry = telemetry  # OpenTelemetry spans of Propose (fedraft.telemetry); None: off
        voter = engine.genesis.voter(node_id)
        self.pool = voter.pool if voter is not None else ""

    def _refused(self, method: str, context: grpc.ServicerContext, code: str, reason: str,
                 key_id: bytes | None = None) -> None:
        """Tell the audit journal about a refused request (never raises: the answer matters more)."""
        if self.on_refused is None:
            return
        try:
            if key_id is None:  # the request's signer, if its auth header says
                header = next((v for k, v in context.invocation_metadata() if k == AUTH_HEADER), None)
                signed = pb.Signed()
                if isinstance(header, bytes) and len(header) <= 1024:
                    signed.ParseFromString(header)
                key_id = bytes(signed.key_id)[:16]
            self.on_refused(RefusedRequest(method=method, code=code, reason=reason, key_id=key_id,
                                           peer=context.peer() or ""))
        except Exception:
            log.debug("could not record a refused request", exc_info=True)

    def _note_abort(self, method: str, context: grpc.ServicerContext) -> None:
        code = context.code()  # type: ignore[attr-defined]  # grpc's server context has it
        if code in REFUSAL_CODES:
            details = context.details()  # type: ignore[attr-defined]
            reason = details.decode(errors="replace") if isinstance(details, bytes) else str(details or "")
            self._refused(method, context, code.name, reason)

    # ----- plumbing -----
    def _authenticate(self, method: str, raw: bytes, context: grpc.ServicerContext) -> None:
        header = next((v for k, v in context.invocation_metadata() if k == AUTH_HEADER), None)
        try:
            self.verifier.verify(method, raw, header if isinstance(header, bytes) else None)
        except AuthError as exc:
            _abort(context, grpc.StatusCode.UNAUTHENTICATED, str(exc))

    def _require_leader(self, context: grpc.ServicerContext) -> None:
        if self.engine.halted:
            _abort(context, grpc.StatusCode.UNAVAILABLE, f"node halted: {self.engine.halted}")
        if self.engine.in_lockdown():
            _abort(context, grpc.StatusCode.UNAVAILABLE,
                   "lockdown: this node is cut off from the quorum; only STALE reads are served")
        if not self.engine.is_leader:
            leader = self.engine.leader_id
            _abort(context, grpc.StatusCode.UNAVAILABLE,
                   f"not the leader; leader is {leader or 'unknown (election in progress)'}", leader)

    @staticmethod
    def _parse(message: Any, raw: bytes, context: grpc.ServicerContext) -> Any:
        try:
            message.ParseFromString(raw)
        except ProtoDecodeError:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "request does not decode")
        return message

    # ----- Propose -----
    def propose(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        self._authenticate("Propose", raw, context)
        request = self._parse(api.ProposeRequest(), raw, context)
        if self.telemetry is None:
            return self._propose(request, context, None).SerializeToString()
        trace = self.telemetry.start_propose(context.invocation_metadata(), len(request.envelopes))
        try:
            response = self._propose(request, context, trace)
        except Exception:
            code = context.code()  # type: ignore[attr-defined]  # grpc's server context has it
            details = context.details()  # type: ignore[attr-defined]
            text = details.decode(errors="replace") if isinstance(details, bytes) else str(details or "")
            trace.finish(error=f"{code.name if code else 'UNKNOWN'}: {text}")
            raise
        trace.finish(index=max((r.index for r in response.results), default=0))
        return response.SerializeToString()

    def _propose(self, request: api.ProposeRequest, context: grpc.ServicerContext,
                 trace: ProposeTrace | None) -> api.ProposeResponse:
        if not request.envelopes:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "no envelopes")
        if len(request.envelopes) > MAX_ENVELOPES_PER_REQUEST:
            _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                   f"at most {MAX_ENVELOPES_PER_REQUEST} envelopes per request")
        self._require_leader(context)
        now = int(time.time() * 1000)
        results: list[pb.Result | None] = []
        waiting = []
        with self.store.read() as st:
            verdicts = [check_envelope(st, signed, self.engine.cluster_id, now) for signed in request.envelopes]
        for i, (signed, verdict) in enumerate(zip(request.envelopes, verdicts, strict=True)):
            if isinstance(verdict, Refused):
                results.append(pb.Result(code=int(verdict.code), message=verdict.message, ordinal=i))
                self._refused("Propose", context, verdict.code.name, verdict.message, bytes(signed.key_id))
            elif verdict.first_result is not None:
                results.append(verdict.first_result)
            else:
                assert isinstance(verdict, Checked)
                future = self.engine.propose(signed, (bytes(signed.key_id), bytes(verdict.envelope.request_id)),
                                             trace)
                results.append(None)
                waiting.append((i, future))
        started = time.monotonic()
        deadline = started + _deadline(context)
        for i, future in waiting:
            try:
                results[i] = future.result(timeout=max(0.0, deadline - time.monotonic()))
                if self.observe_commit is not None:
                    self.observe_commit(time.monotonic() - started)
            except FutureTimeout:
                _abort(context, grpc.StatusCode.DEADLINE_EXCEEDED,
                       "not applied before the deadline; outcome unknown: retry with the same request id")
            except NotLeader as exc:
                _abort(context, grpc.StatusCode.UNAVAILABLE, str(exc), exc.leader_hint)
            except NotCommitted as exc:
                _abort(context, grpc.StatusCode.UNAVAILABLE,
                       f"not committed ({exc}); outcome unknown: retry with the same request id",
                       self.engine.leader_id)
        return api.ProposeResponse(results=[r for r in results if r is not None])

    # ----- Get -----
    def get(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        self._authenticate("Get", raw, context)
        request = self._parse(api.GetRequest(), raw, context)
        problem = registry.key_problem(request.key)
        if problem is not None:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, problem)
        if request.consistency == api.LINEARIZABLE:
            self._linearize(context)
        with self.store.read() as st:
            record = st.registry_get(request.key)
            applied = st.applied_index
        response = api.GetResponse(found=record is not None, applied_index=applied, served_by=self.node_id,
                                   applied_age_ms=int((time.monotonic() - self.engine.last_apply_monotonic) * 1000))
        if record is not None:
            response.record.CopyFrom(record_to_pb(record))
        return response.SerializeToString()

    def _linearize(self, context: grpc.ServicerContext) -> None:
        """Leader + a committed barrier: what is read next reflects every write acknowledged before."""
        self._require_leader(context)
        barrier = self.engine.read_barrier()
        try:
            barrier.result(timeout=_deadline(context))
        except FutureTimeout:
            _abort(context, grpc.StatusCode.DEADLINE_EXCEEDED, "read barrier did not commit in time")
        except NotCommitted as exc:
            _abort(context, grpc.StatusCode.UNAVAILABLE, f"read barrier failed: {exc}", self.engine.leader_id)

    # ----- List -----
    def list(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        self._authenticate("List", raw, context)
        request = self._parse(api.ListRequest(), raw, context)
        collection = COLLECTIONS.get(request.collection)
        if collection is None:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                   f"unknown collection {request.collection!r} (one of: {', '.join(sorted(COLLECTIONS))})")
        if request.limit > MAX_LIST_LIMIT:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"limit must be at most {MAX_LIST_LIMIT}")
        if len(request.prefix) > 512 or len(request.page_token) > 512:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "prefix and page token are at most 512 bytes")
        if request.consistency == api.LINEARIZABLE:
            self._linearize(context)
        db, field = collection
        limit = request.limit or DEFAULT_LIST_LIMIT
        hex_keyed = request.collection in HEX_KEYED
        try:
            prefix = bytes.fromhex(request.prefix) if hex_keyed else request.prefix.encode()
            after = bytes.fromhex(request.page_token) if hex_keyed else request.page_token.encode()
        except ValueError:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                   f"the {request.collection} prefix and page token are hex (an even number of digits)")
        response = api.ListResponse(served_by=self.node_id)
        items = getattr(response, field)
        last = b""
        with self.store.read() as st:
            response.applied_index = st.applied_index
            for key, value in st.items(db, prefix, start=after + b"\0" if after else b""):
                if len(items) == limit:
                    response.next_page_token = last.hex() if hex_keyed else last.decode()
                    break
                items.add().ParseFromString(value)
                last = key
        return response.SerializeToString()

    # ----- Status -----
    def status(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        request = self._parse(api.StatusRequest(), raw, context)
        header = next((v for k, v in context.invocation_metadata() if k == AUTH_HEADER), None)
        signed = header is not None
        if signed or request.include_digest:
            self._authenticate("Status", raw, context)
        e = self.engine
        response = api.StatusResponse(
            node_id=self.node_id, role="leader" if e.is_leader else "follower", leader_id=e.leader_id,
            term=e.term, commit_index=e.commit_index, has_quorum=e.has_quorum, lockdown=e.in_lockdown(),
            cluster_id=e.cluster_id, version=__version__, pool=self.pool, voters=len(e.peer_ids) + 1)
        with self.store.read() as st:
            response.applied_index = st.applied_index
            response.effective_time_ms = st.effective_ms
            if signed:
                response.chain_head = st.chain_head
                if request.include_digest:
                    response.state_digest = st.digest()
        if signed:
            used, size = self.store.usage()
            response.db_used_bytes, response.db_map_bytes = used, size
            response.journal_entries = len(e.journal)
            response.snapshot_index = e.snapshots.snapshot_index or 0
            now = time.monotonic()
            for peer in e.peer_ids:
                last = e.transport.last_contact(peer)
                response.peers.add(node_id=peer, address=self.peer_api.get(peer, ""),
                                   connected=last is not None and now - last < e.tuning.election_max_s,
                                   last_contact_ms=int((now - last) * 1000) if last is not None else 0)
        return response.SerializeToString()

    # ----- Watch -----
    def watch(self, raw: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        """Applied results from an index on, in log order (docs/decisions/0008-watch.md)."""
        self._authenticate("Watch", raw, context)
        request = self._parse(api.WatchRequest(), raw, context)
        hub = self.watch_hub
        if hub is None:
            _abort(context, grpc.StatusCode.UNIMPLEMENTED, "this node does not serve Watch")
        if self.engine.halted:
            _abort(context, grpc.StatusCode.UNAVAILABLE, f"node halted: {self.engine.halted}")
        if self.engine.in_lockdown():
            _abort(context, grpc.StatusCode.UNAVAILABLE,
                   "lockdown: this node is cut off from the quorum; watch on another node", self.engine.leader_id)
        try:
            stream = hub.open(request.from_index, request.include_barriers)
        except Compacted as exc:
            _abort(context, grpc.StatusCode.OUT_OF_RANGE, str(exc))
        except TooManyStreams as exc:
            _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except HubStopped as exc:
            _abort(context, grpc.StatusCode.UNAVAILABLE, str(exc))

        def check() -> bool:
            if not context.is_active():
                return False
            if self.engine.in_lockdown() or self.engine.halted:
                raise _Lockdown
            return True

        try:
            for event in stream.events(check):
                yield event.SerializeToString()
        except Overflow as exc:
            _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except Compacted as exc:
            _abort(context, grpc.StatusCode.OUT_OF_RANGE, str(exc))
        except _Lockdown:
            _abort(context, grpc.StatusCode.UNAVAILABLE,
                   f"lockdown: this node is cut off from the quorum; resume with from_index {stream.next_index} "
                   "on another node", self.engine.leader_id)
        finally:
            stream.close()

    # ----- ExportLog -----
    def export_log(self, raw: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        """The log with its checkpoints as this node applied it (fedraft.crypto.logfile format).

        Written to a temporary file under one read transaction first, so that a slow reader never
        holds the state (a snapshot install waits for readers), then streamed from the file."""
        self._authenticate("ExportLog", raw, context)
        self._parse(api.ExportLogRequest(), raw, context)
        with tempfile.TemporaryFile(prefix="fedraft-export-") as spool:
            with self.store.read() as st:
                for part in chunked(export_records(st, self.engine.genesis.raw)):
                    spool.write(part)
            spool.seek(0)
            while block := spool.read(1 << 20):
                yield api.ExportLogChunk(data=block).SerializeToString()

    # ----- Simulate (what-if, read-only; fedraft.service.simulate) -----
    def simulate(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        header = next((v for k, v in context.invocation_metadata() if k == AUTH_HEADER), None)
        try:
            caller = self.verifier.verify("Simulate", raw, header if isinstance(header, bytes) else None)
        except AuthError as exc:
            _abort(context, grpc.StatusCode.UNAUTHENTICATED, str(exc))
        request = self._parse(api.SimulateRequest(), raw, context)
        try:
            scenario = check_request(caller.principal, request)
        except NotAllowed as exc:
            _abort(context, grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except CallerError as exc:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if request.consistency == api.LINEARIZABLE:
            self._linearize(context)
        try:
            return answer(self.store, scenario, self.node_id).SerializeToString()
        except CallerError as exc:  # a pool or GPU this state does not hold
            _abort(context, grpc.StatusCode.NOT_FOUND, str(exc))

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        def unary(fn: Any) -> grpc.RpcMethodHandler[Any, Any]:
            method = fn.__name__.capitalize()

            def guarded(raw: bytes, context: grpc.ServicerContext) -> bytes:
                try:
                    return bytes(fn(raw, context))
                except Exception:
                    self._note_abort(method, context)  # a refusal goes to the audit journal
                    raise

            # No deserializer: handlers get the raw bytes that were signed.
            return grpc.unary_unary_rpc_method_handler(guarded)

        def stream(fn: Any) -> grpc.RpcMethodHandler[Any, Any]:
            method = fn.__name__.capitalize()

            def guarded(raw: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
                try:
                    yield from fn(raw, context)
                except Exception:
                    self._note_abort(method, context)
                    raise

            return grpc.unary_stream_rpc_method_handler(guarded)

        return grpc.method_handlers_generic_handler(SERVICE, {
            "Propose": unary(self.propose), "Get": unary(self.get), "List": unary(self.list),
            "Status": unary(self.status), "Watch": stream(self.watch), "ExportLog": stream(self.export_log),
            "Simulate": unary(self.simulate)})
