"""The aggregated incident view: every pool's incidents, gathered by signed fan-out (decision 0015).

Incidents stay pool-local (SPEC §5: each node's own incident journal, never replicated). An
administrator of any voter pool signs an `IncidentsQuery` (context fedraft/v1/fanout) and sends it
with `Incidents` to any node. That node answers for its own pool and sends the query with
`AskIncidents` (D2-signed by its node key) to the node of every other voter pool, concurrently and
bounded in time. Each node checks the query itself from its replicated state — the author is a
current administrator of the origin pool, the signature, the window, a fresh nonce — and signs its
answer (the latest incidents of its journal) with its node key. Pools without an answer are listed
with why (unreachable, timed out, refused; member pools run no API server), never left out.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from google.protobuf.message import DecodeError as ProtoDecodeError

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft._proto.fedraft.v1 import fanout_pb2 as fpb
from fedraft.crypto import fanout as fcrypto
from fedraft.crypto.request_auth import AUTH_HEADER, sign_request
from fedraft.crypto.signing import key_id_of
from fedraft.domain.governance.fanout import MAX_WINDOW_MS
from fedraft.domain.outcome import Code
from fedraft.errors import DecodeError, SignatureError
from fedraft.service.fanout import (
    DEFAULT_TIMEOUT_MS,
    MAX_TIMEOUT_MS,
    FanoutService,
    Refusal,
    method_name,
    parse_request,
)
from fedraft.storage import placement_schema
from fedraft.storage.local import INCIDENTS, LocalStore

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "IncidentsService"]

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 100
MAX_LIMIT = 500
SKEW_MS = 30_000


class IncidentsService:
    """Incidents and AskIncidents on the API server; shares the fan-out service's signer, nonces, channels."""

    def __init__(self, fanout: FanoutService, local: LocalStore) -> None:
        self.fanout = fanout
        self.local = local
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="fedraft-incidents")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def methods(self) -> dict[str, Any]:
        """The methods this adds to the fedraft.v1.Fanout service (FanoutService.handler(extra=...))."""
        return {"Incidents": self.gather, "AskIncidents": self.ask}

    # ----- checks every node makes -----
    def _check_query(self, signed: pb.Signed, now_ms: int) -> fpb.IncidentsQuery:
        try:
            query = fcrypto.parse(signed, "incidents_query", fcrypto.MAX_QUERY_BYTES).incidents_query
        except DecodeError as exc:
            raise Refusal(Code.INVALID_ARGUMENT, f"malformed incidents query: {exc}") from None
        key_id = bytes(signed.key_id)
        with self.fanout.store.read() as st:
            author = st.principal(key_id)
        if author is None:
            raise Refusal(Code.UNAUTHENTICATED, "the query's author key is not a principal of this federation", key_id)
        if author.revoked_index:
            raise Refusal(Code.UNAUTHENTICATED, f"the query's author key was revoked at index {author.revoked_index}",
                          key_id)
        try:
            fcrypto.verify_message(bytes(author.public_key), self.fanout.cluster_id, signed)
        except SignatureError:
            raise Refusal(Code.UNAUTHENTICATED, "the query's signature does not verify", key_id) from None
        if author.role != "admin":
            raise Refusal(Code.PERMISSION_DENIED, f"only administrators see every pool's incidents ({author.name} is "
                                                  f"a {author.role})", key_id)
        if query.origin_pool != author.pool:
            raise Refusal(Code.PERMISSION_DENIED, f"{author.name} is an administrator of {author.pool}, not of "
                                                  f"{query.origin_pool or '(no pool)'}", key_id)
        if len(query.nonce) != fcrypto.NONCE_LEN or query.limit > MAX_LIMIT or \
                not 0 < query.expires_at_ms - query.issued_at_ms <= MAX_WINDOW_MS:
            raise Refusal(Code.INVALID_ARGUMENT, f"an incidents query has a 16-byte nonce, a limit of at most "
                                                 f"{MAX_LIMIT} and a validity of at most {MAX_WINDOW_MS // 1000} s",
                          key_id)
        if now_ms > query.expires_at_ms + SKEW_MS or now_ms + SKEW_MS < query.issued_at_ms:
            raise Refusal(Code.DEADLINE_EXCEEDED, "the incidents query is expired or from the future", key_id)
        keep = query.expires_at_ms + SKEW_MS
        if not self.fanout.checker.nonces.add(b"I" + key_id + bytes(query.nonce), keep, now_ms):
            raise Refusal(Code.UNAUTHENTICATED, "replayed incidents query (this key's nonce was seen already)", key_id)
        return query

    def _answer(self, signed: pb.Signed, query: fpb.IncidentsQuery) -> pb.Signed:
        limit = query.limit or DEFAULT_LIMIT
        records = self.local.records(INCIDENTS, limit=limit, latest=True)
        answer = fpb.IncidentsAnswer(query_sha256=fcrypto.query_digest(signed), pool=self.fanout.pool,
                                     node_id=self.fanout.node_id, answered_at_ms=int(time.time() * 1000),
                                     total=self.local.count(INCIDENTS))
        for r in records:
            answer.incidents.add(
                seq=int(r.get("seq") or 0), at_ms=int(r.get("at_ms") or 0), level=str(r.get("level", "")),
                kind=str(r.get("kind", "unreadable" if r.get("unreadable") else "")),
                applied_index=int(r.get("applied_index") or 0),
                detail_json=json.dumps(r.get("detail") or {}, sort_keys=True, separators=(",", ":"))[:4096],
                hash=str(r.get("hash", "")))
        return fcrypto.sign_message(self.fanout.signer, self.fanout.cluster_id,
                                    fpb.FanoutMessage(incidents_answer=answer))

    # ----- AskIncidents: another pool's node asks for ours -----
    def ask(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        caller = self.fanout.authenticate("AskIncidents", raw, context)
        signed = parse_request(pb.Signed(), raw, "request is not a Signed incidents query")
        if caller.principal.role != "node" or caller.principal.revoked_index:
            raise Refusal(Code.PERMISSION_DENIED, f"only a voter node forwards incidents queries "
                                                  f"({caller.principal.name} is a {caller.principal.role})",
                          bytes(signed.key_id))
        query = self._check_query(signed, int(time.time() * 1000))
        return self._answer(signed, query).SerializeToString(deterministic=True)

    # ----- Incidents: an administrator asks any node -----
    def gather(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        caller = self.fanout.authenticate("Incidents", raw, context)
        request = parse_request(fpb.IncidentsRequest(), raw)
        signed = request.query
        if bytes(signed.key_id) != caller.key_id:
            raise Refusal(Code.PERMISSION_DENIED, "the query must be signed by the key that signs the request")
        query = self._check_query(signed, int(time.time() * 1000))
        timeout_ms = min(request.timeout_ms or DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS)
        remaining = context.time_remaining()
        if remaining is not None:
            timeout_ms = max(1, min(timeout_ms, int(remaining * 1000) - 200))
        voters = {v.pool: v for v in self.fanout.genesis.voters}
        with self.fanout.store.read() as st:
            registered = {p.id for p in placement_schema.pools(st)}
        response = fpb.IncidentsResponse(served_by=self.fanout.node_id)
        futures = {pool: self._pool.submit(self._ask_pool, pool, signed, timeout_ms / 1000)
                   for pool in sorted(voters) if pool != self.fanout.pool}
        for pool in sorted(set(voters) | registered):
            item = response.answers.add(pool=pool, node_id=voters[pool].node_id if pool in voters else "")
            if pool == self.fanout.pool:
                item.answer.CopyFrom(self._answer(signed, query))
            elif pool not in voters:
                item.code, item.message = int(Code.UNAVAILABLE), "unreachable: a member pool runs no API server"
            else:
                answer, code, message = futures[pool].result()
                item.code, item.message = int(code), message
                if answer is not None:
                    item.answer.CopyFrom(answer)
        return response.SerializeToString()

    def _ask_pool(self, pool: str, signed: pb.Signed, timeout_s: float) -> tuple[pb.Signed | None, Code, str]:
        voter = next(v for v in self.fanout.genesis.voters if v.pool == pool)
        address = self.fanout.peer_api.get(voter.node_id)
        if not address:
            return None, Code.UNAVAILABLE, f"unreachable: no API address for node {voter.node_id} ([api_peers])"
        body = signed.SerializeToString(deterministic=True)
        metadata = ((AUTH_HEADER, sign_request(self.fanout.signer, self.fanout.cluster_id,
                                               method_name("AskIncidents"), body)),)
        try:
            stub = self.fanout.channel(address).unary_unary("/fedraft.v1.Fanout/AskIncidents", None, None)
            raw: bytes = stub(body, timeout=timeout_s, metadata=metadata)
        except grpc.RpcError as exc:
            status = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
            details = exc.details() if hasattr(exc, "details") else str(exc)
            code = Code(status.value[0]) if status.value[0] in Code._value2member_map_ else Code.UNAVAILABLE
            if status == grpc.StatusCode.DEADLINE_EXCEEDED:
                details = f"no answer within {timeout_s:.1f} s"
            return None, code, f"unreachable: {details or status.name}" if code in (
                Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED) else str(details or status.name)
        answer = pb.Signed()
        try:
            answer.ParseFromString(raw)
            fcrypto.parse(answer, "incidents_answer", fcrypto.MAX_ANSWER_BYTES)
            if bytes(answer.key_id) != key_id_of(voter.public_key):
                raise SignatureError("signed by another key than the node's")
            fcrypto.verify_message(voter.public_key, self.fanout.cluster_id, answer)
        except (ProtoDecodeError, DecodeError, SignatureError) as exc:
            return None, Code.UNAUTHENTICATED, f"{voter.node_id}'s answer does not verify: {exc}"
        return answer, Code.OK, ""
