"""The gRPC service fedraft.v1.Fanout: cross-pool signed fan-out (decision 0009).

Fanout (client -> a node of the client's pool): the request is signed (SPEC D2) by the query's author;
the node checks the query as any receiver would (its own pool needs no pairing), then sends it with
Ask to the node of every pool paired with its pool at the query's level or more (addresses: the
node config's [api_peers]), concurrently and bounded in time, and returns every pool's signed answer
or why there is none.

Ask (origin node -> receiving node): the request is signed (D2) by a node of the query's origin pool
and carries the author-signed query. The receiver checks, from its own replicated state: the author
key (known, not revoked, of the origin pool, a person), the signature (context fedraft/v1/fanout),
the pairing and its trust against the query's level, the validity window, and that it has not seen
the (author key, nonce) before. It answers from its local handler, stores nothing but the nonce (in
memory, until the query expires), and signs the answer with its node key.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError as ProtoDecodeError
from google.protobuf.message import Message

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft._proto.fedraft.v1 import fanout_pb2 as fpb
from fedraft.crypto import fanout as fcrypto
from fedraft.crypto.request_auth import AUTH_HEADER, sign_request
from fedraft.crypto.signing import Identity, Signer, key_id_of
from fedraft.domain.genesis import Genesis
from fedraft.domain.governance.fanout import MAX_WINDOW_MS, QueryFacts, query_problem, targets
from fedraft.domain.outcome import Code
from fedraft.domain.placement.model import Trust
from fedraft.errors import DecodeError, SignatureError
from fedraft.service.audit import RefusedRequest
from fedraft.service.auth import AuthError, Caller, RequestVerifier
from fedraft.service.fanout_search import FanoutHandler, Query
from fedraft.storage import governance_schema
from fedraft.storage.state import StateStore

log = logging.getLogger(__name__)

SERVICE = "fedraft.v1.Fanout"
DEFAULT_TIMEOUT_MS = 5_000
MAX_TIMEOUT_MS = 30_000
NONCE_CACHE_MAX = 100_000
MAX_REQUEST_BYTES = 16 * 1024
REFUSAL_CODES = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
                           grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED})
_BY_CODE = {int(c.value[0]): c for c in grpc.StatusCode}


def method_name(method: str) -> str:
    """What a request signature (D2) names for a method of this service."""
    return f"{SERVICE}/{method}"


class Refusal(Exception):
    def __init__(self, code: Code, message: str, key_id: bytes = b"") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.key_id = key_id

    @property
    def status(self) -> grpc.StatusCode:
        return _BY_CODE[int(self.code)]


M = TypeVar("M", bound=Message)


def parse_request(message: M, raw: bytes, refusal: str = "request does not decode") -> M:
    """`message` filled from `raw`, or a Refusal (INVALID_ARGUMENT) saying `refusal`."""
    try:
        message.ParseFromString(raw)
    except ProtoDecodeError:
        raise Refusal(Code.INVALID_ARGUMENT, refusal) from None
    return message


class NonceCache:
    """(author key, nonce) pairs seen, each kept until its query expires (plus the clock skew). A live
    entry is never dropped to make room: when full of live ones, new queries are refused instead."""

    def __init__(self, max_entries: int = NONCE_CACHE_MAX) -> None:
        self.max_entries = max_entries
        self._seen: dict[bytes, int] = {}
        self._lock = threading.Lock()

    def add(self, key: bytes, keep_until_ms: int, now_ms: int) -> bool:
        """False when `key` was seen and is still kept: a replay. Raises Refusal when full."""
        with self._lock:
            until = self._seen.get(key)
            if until is not None and until > now_ms:
                return False
            if len(self._seen) >= self.max_entries:
                self._seen = {k: until for k, until in self._seen.items() if until > now_ms}
                if len(self._seen) >= self.max_entries:
                    raise Refusal(Code.RESOURCE_EXHAUSTED, "too many fan-out queries in flight; retry shortly")
            self._seen[key] = keep_until_ms
            return True


@dataclass(frozen=True)
class Verified:
    query: fpb.FanoutQuery
    signed: pb.Signed
    author: pb.Principal


class QueryChecker:
    """Everything a node checks before it answers (or, at the origin, sends on) a query."""

    def __init__(self, store: StateStore, cluster_id: bytes, pool: str, nonces: NonceCache | None = None) -> None:
        self.store = store
        self.cluster_id = cluster_id
        self.pool = pool
        self.nonces = nonces or NonceCache()

    def check(self, signed: pb.Signed, now_ms: int) -> Verified:
        try:
            message = fcrypto.parse(signed, "query", fcrypto.MAX_QUERY_BYTES)
        except DecodeError as exc:
            raise Refusal(Code.INVALID_ARGUMENT, f"malformed fan-out query: {exc}") from None
        key_id = bytes(signed.key_id)
        query = message.query
        with self.store.read() as st:
            author = st.principal(key_id)
            pairing = (governance_schema.get_pairing(st, query.origin_pool, self.pool)
                       if query.origin_pool and query.origin_pool != self.pool else None)
        if author is not None and not author.revoked_index:
            try:
                fcrypto.verify_message(bytes(author.public_key), self.cluster_id, signed)
            except SignatureError:
                raise Refusal(Code.UNAUTHENTICATED, "the query's signature does not verify (wrong key, another "
                                                    "federation, or altered bytes)", key_id) from None
        revoked = ""
        if author is not None and author.revoked_index:
            revoked = f"{author.revoked_why or 'revoked'} at index {author.revoked_index}"
        facts = QueryFacts(
            author_known=author is not None, author_name=author.name if author else "",
            author_pool=author.pool if author else "", author_role=author.role if author else "",
            author_revoked=revoked, origin_pool=query.origin_pool, receiver_pool=self.pool, pairing=pairing,
            level=query.level, text=query.text, issued_ms=query.issued_at_ms, expires_ms=query.expires_at_ms,
            now_ms=now_ms, nonce_len=len(query.nonce), max_results=query.max_results)
        problem = query_problem(facts)
        if problem is not None:
            raise Refusal(problem[0], problem[1], key_id)
        assert author is not None
        keep = min(query.expires_at_ms, now_ms + MAX_WINDOW_MS) + 30_000
        if not self.nonces.add(key_id + bytes(query.nonce), keep, now_ms):
            raise Refusal(Code.UNAUTHENTICATED, "replayed fan-out query (this key's nonce was seen already)", key_id)
        return Verified(query, signed, author)


class FanoutService:
    def __init__(self, store: StateStore, genesis: Genesis, node_id: str, identity: Identity, *,
                 handler: FanoutHandler | None, peer_api: dict[str, str], ca_pem: bytes,
                 on_refused: Callable[[RefusedRequest], None] | None = None,
                 verifier: RequestVerifier | None = None) -> None:
        self.store = store
        self.genesis = genesis
        self.cluster_id = genesis.cluster_id
        self.node_id = node_id
        voter = genesis.voter(node_id)
        self.pool = voter.pool if voter is not None else ""
        self.signer = Signer(identity)
        self.local_handler = handler
        self.peer_api = dict(peer_api)
        self.on_refused = on_refused
        self.verifier = verifier or RequestVerifier(store, genesis.cluster_id)
        self.checker = QueryChecker(store, genesis.cluster_id, self.pool)
        self._creds = grpc.ssl_channel_credentials(root_certificates=ca_pem)
        self._channels: dict[str, grpc.Channel] = {}
        self._channels_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="fedraft-fanout")

    def trust_ca(self, ca_pem: bytes) -> None:
        """Trust these CAs for Ask calls from now on (a CA rotation); channels are remade on next use."""
        with self._channels_lock:
            self._creds = grpc.ssl_channel_credentials(root_certificates=ca_pem)
            old, self._channels = self._channels, {}
        for channel in old.values():
            channel.close()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._channels_lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()

    # ----- plumbing -----
    def authenticate(self, method: str, raw: bytes, context: grpc.ServicerContext) -> Caller:
        header = next((v for k, v in context.invocation_metadata() if k == AUTH_HEADER), None)
        try:
            return self.verifier.verify(method_name(method), raw, header if isinstance(header, bytes) else None)
        except AuthError as exc:
            raise Refusal(Code.UNAUTHENTICATED, str(exc)) from None

    @staticmethod
    def _now_ms() -> int:
        return int(time.time() * 1000)

    # ----- Ask: a paired pool's node answers -----
    def ask(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        caller = self.authenticate("Ask", raw, context)
        signed = parse_request(pb.Signed(), raw, "request is not a Signed query")
        try:
            origin = fcrypto.parse(signed, "query", fcrypto.MAX_QUERY_BYTES).query.origin_pool
        except DecodeError as exc:
            raise Refusal(Code.INVALID_ARGUMENT, f"malformed fan-out query: {exc}") from None
        # Before the query's nonce is recorded: a caller that may not forward it cannot use it up.
        if caller.principal.role != "node" or caller.principal.pool != origin:
            raise Refusal(Code.PERMISSION_DENIED, f"only a node of the origin pool {origin} forwards its queries "
                                                  f"({caller.principal.name} is a {caller.principal.role} of "
                                                  f"{caller.principal.pool})", bytes(signed.key_id))
        verified = self.checker.check(signed, self._now_ms())
        return self.answer(verified).SerializeToString(deterministic=True)

    def answer(self, verified: Verified) -> pb.Signed:
        """Run the local handler on a verified query; the answer signed with this node's key."""
        if self.local_handler is None:
            raise Refusal(Code.FAILED_PRECONDITION, f"pool {self.pool} serves no fan-out (no fanout_folder in "
                                                    f"node {self.node_id}'s config)")
        q = verified.query
        result = self.local_handler.answer(Query(q.text, q.origin_pool, verified.author.name, q.level, q.max_results))
        answer = fpb.FanoutAnswer(
            query_sha256=fcrypto.query_digest(verified.signed), pool=self.pool, node_id=self.node_id,
            answered_at_ms=self._now_ms(), handler=self.local_handler.name, truncated=result.truncated,
            hits=[fpb.FanoutHit(name=h.name[:512], snippet=h.snippet[:1024], line=h.line) for h in result.hits])
        return fcrypto.sign_message(self.signer, self.cluster_id, fpb.FanoutMessage(answer=answer))

    # ----- Fanout: the origin node sends a query on -----
    def fanout(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        caller = self.authenticate("Fanout", raw, context)
        request = parse_request(fpb.FanoutRequest(), raw)
        signed = request.query
        if bytes(signed.key_id) != caller.key_id:
            raise Refusal(Code.PERMISSION_DENIED, "the query must be signed by the key that signs the request")
        try:
            origin = fcrypto.parse(signed, "query", fcrypto.MAX_QUERY_BYTES).query.origin_pool
        except DecodeError as exc:
            raise Refusal(Code.INVALID_ARGUMENT, f"malformed fan-out query: {exc}") from None
        if origin != self.pool:
            raise Refusal(Code.FAILED_PRECONDITION, f"node {self.node_id} speaks for pool {self.pool}: send a query "
                                                    f"of {origin or '(no pool)'} to a node of {origin}")
        verified = self.checker.check(signed, self._now_ms())
        q = verified.query
        with self.store.read() as st:
            chosen, skipped = targets(self.pool, Trust.parse(q.level), list(governance_schema.pairings(st)))
        timeout_ms = min(request.timeout_ms or DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS,
                         max(1, q.expires_at_ms - self._now_ms()))
        remaining = context.time_remaining()
        if remaining is not None:
            timeout_ms = max(1, min(timeout_ms, int(remaining * 1000) - 200))
        futures = [(pool, trust, self._pool.submit(self._ask_pool, pool, signed, timeout_ms / 1000))
                   for pool, trust in chosen]
        response = fpb.FanoutResponse(origin_pool=self.pool, served_by=self.node_id, skipped=skipped)
        for pool, trust, future in futures:
            node_id, answer, code, message = future.result()
            item = response.answers.add(pool=pool, node_id=node_id, trust=trust.label, code=int(code),
                                        message=message)
            if answer is not None:
                item.answer.CopyFrom(answer)
        return response.SerializeToString()

    def channel(self, address: str) -> grpc.Channel:
        with self._channels_lock:
            if address not in self._channels:
                self._channels[address] = grpc.secure_channel(address, self._creds, options=[
                    ("grpc.max_receive_message_length", 1 << 20),
                    ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000)])
            return self._channels[address]

    def _ask_pool(self, pool: str, signed: pb.Signed, timeout_s: float) -> tuple[str, pb.Signed | None, Code, str]:
        voter = next((v for v in self.genesis.voters if v.pool == pool), None)
        if voter is None:
            return "", None, Code.UNAVAILABLE, f"{pool} is a member pool: fan-out reaches voter pools' nodes only"
        address = self.peer_api.get(voter.node_id)
        if not address:
            return voter.node_id, None, Code.UNAVAILABLE, f"no API address for node {voter.node_id} ([api_peers])"
        body = signed.SerializeToString(deterministic=True)
        metadata = ((AUTH_HEADER, sign_request(self.signer, self.cluster_id, method_name("Ask"), body)),)
        try:
            stub = self.channel(address).unary_unary(f"/{SERVICE}/Ask", None, None)
            raw: bytes = stub(body, timeout=timeout_s, metadata=metadata)
        except grpc.RpcError as exc:
            status = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
            details = exc.details() if hasattr(exc, "details") else str(exc)
            code = Code(status.value[0]) if status.value[0] in Code._value2member_map_ else Code.UNAVAILABLE
            if status == grpc.StatusCode.DEADLINE_EXCEEDED:
                details = f"no answer within {timeout_s:.1f} s"
            return voter.node_id, None, code, str(details or status.name)
        answer = pb.Signed()
        try:
            answer.ParseFromString(raw)
            fcrypto.parse(answer, "answer", fcrypto.MAX_ANSWER_BYTES)
        except (ProtoDecodeError, DecodeError) as exc:
            return voter.node_id, None, Code.UNAUTHENTICATED, f"{voter.node_id}'s answer does not decode: {exc}"
        try:
            if bytes(answer.key_id) != key_id_of(voter.public_key):
                raise SignatureError("signed by another key than the node's")
            fcrypto.verify_message(voter.public_key, self.cluster_id, answer)
        except SignatureError as exc:  # passed on as it came: the client checks it too and reports it
            return voter.node_id, answer, Code.UNAUTHENTICATED, f"{voter.node_id}'s answer does not verify: {exc}"
        return voter.node_id, answer, Code.OK, ""

    # ----- gRPC wiring -----
    def _refused(self, method: str, context: grpc.ServicerContext, refusal: Refusal) -> None:
        if self.on_refused is None or refusal.status not in REFUSAL_CODES:
            return
        try:
            self.on_refused(RefusedRequest(method=method_name(method), code=refusal.status.name,
                                           reason=refusal.message, key_id=refusal.key_id,
                                           peer=context.peer() or ""))
        except Exception:
            log.debug("could not record a refused fan-out", exc_info=True)

    def handler(self, extra: dict[str, Callable[[bytes, grpc.ServicerContext], bytes]] | None = None
                ) -> grpc.GenericRpcHandler[Any, Any]:
        """Fanout and Ask, plus `extra` methods of the same service (the incident view) with the same
        size bound, refusal codes and audit of refusals."""
        def unary(method: str, fn: Callable[[bytes, grpc.ServicerContext], bytes]) -> grpc.RpcMethodHandler[Any, Any]:
            def guarded(raw: bytes, context: grpc.ServicerContext) -> bytes:
                if len(raw) > MAX_REQUEST_BYTES:
                    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"request over {MAX_REQUEST_BYTES} bytes")
                try:
                    return fn(raw, context)
                except Refusal as refusal:
                    self._refused(method, context, refusal)
                    context.abort(refusal.status, refusal.message)
                    raise  # unreachable: abort raises

            return grpc.unary_unary_rpc_method_handler(guarded)

        methods = {"Fanout": self.fanout, "Ask": self.ask, **(extra or {})}
        return grpc.method_handlers_generic_handler(SERVICE, {name: unary(name, fn) for name, fn in methods.items()})


