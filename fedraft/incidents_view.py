"""The client side of the aggregated incident view (decision 0015): sign the query, verify every answer.

An administrator's key signs an IncidentsQuery; any node gathers every pool's signed answer. Each answer
is checked here: signed by a current `node` principal of the pool it claims (looked up in the replicated
principals), bound to our query by its digest. A pool that did not answer keeps its place with why.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import grpc

from fedraft._proto.fedraft.v1 import fanout_pb2 as fpb
from fedraft.client import FANOUT, RETRYABLE, Client
from fedraft.crypto.fanout import MAX_ANSWER_BYTES, build_incidents_query, parse, query_digest, verify_message
from fedraft.domain.outcome import Code
from fedraft.errors import CallerError, DecodeError, SignatureError, Unavailable

__all__ = ["IncidentsView", "PoolIncidents", "gather_incidents"]


@dataclass(frozen=True)
class PoolIncidents:
    pool: str
    node_id: str
    code: Code                 # OK when the pool answered and the answer verified
    message: str               # why not, otherwise
    signer: str = ""           # the node principal whose signature verified
    total: int = 0             # incidents in that pool's journal
    incidents: tuple[dict[str, Any], ...] = ()

    @property
    def answered(self) -> bool:
        return self.code == Code.OK


@dataclass(frozen=True)
class IncidentsView:
    served_by: str
    pools: tuple[PoolIncidents, ...]


def _verify(client: Client, query_sha256: bytes, item: Any) -> PoolIncidents:
    code = Code(item.code) if item.code in Code._value2member_map_ else Code.UNAVAILABLE
    base = PoolIncidents(item.pool, item.node_id, code, item.message)
    if not item.HasField("answer"):
        return base if code != Code.OK else PoolIncidents(item.pool, item.node_id, Code.UNAVAILABLE, "no answer")
    try:
        answer = parse(item.answer, "incidents_answer", MAX_ANSWER_BYTES).incidents_answer
        signer = next(iter(client.list("principals", prefix=bytes(item.answer.key_id).hex(), stale=True)), None)
        if signer is None or signer.role != "node" or signer.pool != item.pool or signer.revoked_index:
            raise SignatureError(f"signed by {signer.name if signer else 'an unknown key'}, not a current node "
                                 f"key of {item.pool}")
        verify_message(bytes(signer.public_key), client.cluster_id, item.answer)
        if answer.query_sha256 != query_sha256 or answer.pool != item.pool:
            raise SignatureError("the answer is for another query or pool")
    except (DecodeError, SignatureError) as exc:
        return PoolIncidents(item.pool, item.node_id, Code.UNAUTHENTICATED, f"answer does not verify: {exc}")
    records = tuple({"seq": r.seq, "at_ms": r.at_ms, "level": r.level, "kind": r.kind,
                     "applied_index": r.applied_index, "detail": json.loads(r.detail_json or "{}"), "hash": r.hash}
                    for r in answer.incidents)
    return PoolIncidents(item.pool, answer.node_id, Code.OK, "", signer.name, answer.total, records)


def gather_incidents(client: Client, *, limit: int = 0, timeout_ms: int = 0) -> IncidentsView:
    """Every pool's latest `limit` incidents, through the first node that answers.

    Principals are read STALE: the view must work in a lockdown, when it matters most (each node checks
    the query against its own state anyway)."""
    me = next(iter(client.list("principals", prefix=client.signer.key_id.hex(), stale=True)), None)
    if me is None:
        raise CallerError(f"key {client.signer.key_id.hex()} is not a principal of this federation")
    signed = build_incidents_query(client.signer, client.cluster_id, origin_pool=me.pool, author=me.name,
                                   now_ms=int(time.time() * 1000), limit=limit)
    request = fpb.IncidentsRequest(query=signed, timeout_ms=timeout_ms).SerializeToString()
    last = ""
    for endpoint in client.endpoints:
        try:
            raw = client.call(endpoint, "Incidents", request, service=FANOUT, timeout=client.timeout + 30)
        except grpc.RpcError as exc:
            status = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
            last = f"{endpoint}: {status.name}: {exc.details() if hasattr(exc, 'details') else exc}"
            if status in RETRYABLE:
                continue
            raise
        response = fpb.IncidentsResponse()
        response.ParseFromString(raw)
        digest = query_digest(signed)
        return IncidentsView(response.served_by, tuple(_verify(client, digest, a) for a in response.answers))
    raise Unavailable(f"no node gathered the incidents (last: {last})")
