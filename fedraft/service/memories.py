"""The gRPC service fedraft.v1.Memories (decision 0009): who a value is sealed to, and reading one.

Recipients: the pools a value of a data class must be sealed to now, for the caller's pool (the
memory's pool), with their Ed25519 keys; LINEARIZABLE by default (leader and a committed barrier), so
a client that seals to them is refused at apply only if trust or keys change in between.

Read: a memory's metadata and the caller's own pool's box (ciphertext; a principal never gets another
pool's box). With `open`, a node opens its own pool's box with its node key and returns the plaintext
— only to an authenticated principal of its own pool; a caller of another pool is told which pool's
node to ask. Every request is signed (SPEC D2).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

import grpc

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft._proto.fedraft.v1 import memory_pb2 as mpb
from fedraft.crypto.request_auth import AUTH_HEADER
from fedraft.crypto.sealing import OpenError, open_box
from fedraft.crypto.signing import Identity
from fedraft.domain.governance.memories import key_problem
from fedraft.domain.outcome import Code
from fedraft.domain.placement.commands import name_problem
from fedraft.service.audit import RefusedRequest
from fedraft.service.auth import AuthError, Caller, RequestVerifier
from fedraft.service.fanout import REFUSAL_CODES, Refusal, parse_request
from fedraft.storage import governance_schema, memory_schema

if TYPE_CHECKING:  # importing the engine patches pysyncobj's pickle for the whole process: only when used
    from fedraft.consensus.engine import RaftEngine

log = logging.getLogger(__name__)

SERVICE = "fedraft.v1.Memories"
MAX_REQUEST_BYTES = 4096
MAX_WAIT_S = 10.0


def method_name(method: str) -> str:
    """What a request signature (D2) names for a method of this service."""
    return f"{SERVICE}/{method}"


class MemoriesService:
    def __init__(self, engine: RaftEngine, node_id: str, identity: Identity, *,
                 on_refused: Callable[[RefusedRequest], None] | None = None,
                 verifier: RequestVerifier | None = None) -> None:
        self.engine = engine
        self.store = engine.store
        self.genesis = engine.genesis
        self.node_id = node_id
        voter = self.genesis.voter(node_id)
        self.pool = voter.pool if voter is not None else ""
        self.identity = identity
        self.on_refused = on_refused
        self.verifier = verifier or RequestVerifier(engine.store, engine.cluster_id)

    def _authenticate(self, method: str, raw: bytes, context: grpc.ServicerContext) -> Caller:
        header = next((v for k, v in context.invocation_metadata() if k == AUTH_HEADER), None)
        try:
            return self.verifier.verify(method_name(method), raw, header if isinstance(header, bytes) else None)
        except AuthError as exc:
            raise Refusal(Code.UNAUTHENTICATED, str(exc)) from None

    @staticmethod
    def _wait_s(context: grpc.ServicerContext) -> float:
        remaining = context.time_remaining()
        return min(MAX_WAIT_S, remaining) if remaining is not None else MAX_WAIT_S

    def _linearize(self, context: grpc.ServicerContext) -> None:
        from fedraft.consensus.engine import NotCommitted

        e = self.engine
        if e.halted or e.in_lockdown() or not e.is_leader:
            why = (f"node halted: {e.halted}" if e.halted else "lockdown" if e.in_lockdown()
                   else f"not the leader; leader is {e.leader_id or 'unknown'}")
            if e.leader_id and not e.is_leader:
                context.set_trailing_metadata((("fedraft-leader", e.leader_id),))
            raise Refusal(Code.UNAVAILABLE, why)
        try:
            e.read_barrier().result(timeout=self._wait_s(context))
        except FutureTimeout:
            raise Refusal(Code.DEADLINE_EXCEEDED, "read barrier did not commit in time") from None
        except NotCommitted as exc:
            raise Refusal(Code.UNAVAILABLE, f"read barrier failed: {exc}") from None

    # ----- Recipients -----
    def recipients(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        caller = self._authenticate("Recipients", raw, context)
        request = parse_request(mpb.RecipientsRequest(), raw)
        problem = name_problem("data class", request.data_class) or (key_problem(request.key) if request.key else None)
        if problem is not None:
            raise Refusal(Code.INVALID_ARGUMENT, problem)
        if request.consistency == mpb.MEMORY_LINEARIZABLE:
            self._linearize(context)
        pool = caller.principal.pool
        with self.store.read() as st:
            policy = governance_schema.policy(st)
            data_class = policy.data_class(request.data_class)
            if data_class is None:
                raise Refusal(Code.NOT_FOUND, f"unknown data class {request.data_class!r} (policy has: "
                                              f"{', '.join(dc.name for dc in policy.data_classes)})")
            record = memory_schema.get(st, request.key) if request.key else None
            if record is not None and record.pool != pool:
                raise Refusal(Code.PERMISSION_DENIED, f"memory {request.key} belongs to pool {record.pool}, not to "
                                                      f"{caller.principal.name}'s pool {pool}")
            wanted = memory_schema.recipients_of(st, self.genesis, pool, data_class.level)
            applied = st.applied_index
        response = mpb.RecipientsResponse(
            pool=pool, data_class=data_class.name, level=data_class.level.label, excluded=wanted.excluded,
            version=record.version if record is not None else 0, applied_index=applied, served_by=self.node_id)
        for r in wanted.recipients:
            response.recipients.add(pool=r.pool, key_id=r.key.key_id, public_key=r.key.public_key, trust=r.trust)
        return response.SerializeToString()

    # ----- Read -----
    def read(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        caller = self._authenticate("Read", raw, context)
        request = parse_request(mpb.MemoryReadRequest(), raw)
        problem = key_problem(request.key)
        if problem is not None:
            raise Refusal(Code.INVALID_ARGUMENT, problem)
        pool = caller.principal.pool
        if request.open and pool != self.pool:
            raise Refusal(Code.FAILED_PRECONDITION, f"node {self.node_id} opens pool {self.pool}'s values only: ask "
                                                    f"a node of {pool}, or open the box with {pool}'s key")
        if request.min_index:
            deadline = time.monotonic() + self._wait_s(context)
            while self.store.applied_index() < request.min_index:
                if time.monotonic() >= deadline:
                    raise Refusal(Code.DEADLINE_EXCEEDED, f"node {self.node_id} has applied only up to "
                                                          f"{self.store.applied_index()}, not {request.min_index}")
                time.sleep(0.02)
        with self.store.read() as st:
            record = memory_schema.get(st, request.key)
            sealed = memory_schema.box(st, request.key, pool) if record is not None else None
            applied = st.applied_index
        response = mpb.MemoryReadResponse(found=record is not None, applied_index=applied, served_by=self.node_id,
                                          served_pool=self.pool)
        if record is None:
            if request.open:
                raise Refusal(Code.NOT_FOUND, f"no memory {request.key} (at index {applied} on {self.node_id})")
            return response.SerializeToString()
        response.record.CopyFrom(record)
        if sealed is not None:
            response.sealed.CopyFrom(sealed)
        if request.open:
            if sealed is None:
                raise Refusal(Code.PERMISSION_DENIED,
                              f"pool {pool} holds no sealed value of {request.key}: class {record.data_class} "
                              f"({record.level}) of {record.pool} was sealed to {', '.join(record.pools)}")
            try:
                response.value = open_box(self.identity, bytes(sealed.box), record.key, record.pool)
            except OpenError as exc:
                raise Refusal(Code.FAILED_PRECONDITION, f"{exc}; after a key rotation the memory's pool reseals it "
                                                        "(fedraft memory reseal)") from None
            response.opened = True
        return response.SerializeToString()

    # ----- gRPC wiring -----
    def _refused(self, method: str, context: grpc.ServicerContext, refusal: Refusal) -> None:
        if self.on_refused is None or refusal.status not in REFUSAL_CODES:
            return
        try:
            header = next((v for k, v in context.invocation_metadata() if k == AUTH_HEADER), None)
            key_id = b""
            if isinstance(header, bytes) and len(header) <= 1024:
                signed = pb.Signed()
                signed.ParseFromString(header)
                key_id = bytes(signed.key_id)[:16]
            self.on_refused(RefusedRequest(method=method_name(method), code=refusal.status.name,
                                           reason=refusal.message, key_id=key_id, peer=context.peer() or ""))
        except Exception:
            log.debug("could not record a refused memory request", exc_info=True)

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        def unary(method: str, fn: Callable[[bytes, grpc.ServicerContext], bytes]) -> grpc.RpcMethodHandler[Any, Any]:
            def guarded(raw: bytes, context: grpc.ServicerContext) -> bytes:
                if len(raw) > MAX_REQUEST_BYTES:
                    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"request over {MAX_REQUEST_BYTES} bytes")
                try:
                    return fn(raw, context)
                except Refusal as refusal:
                    self._refused(method, context, refusal)
                    context.abort(refusal.status, refusal.message)
                    raise

            return grpc.unary_unary_rpc_method_handler(guarded)

        return grpc.method_handlers_generic_handler(SERVICE, {
            "Recipients": unary("Recipients", self.recipients), "Read": unary("Read", self.read)})
