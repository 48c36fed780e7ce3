"""The Python client: signs envelopes and requests, finds the leader, retries safely.

A write is a signed envelope with a fixed request id. When the outcome of an attempt is unknown (a
deadline, a dropped connection, a leader change) the client sends the *same* signed envelope again,
to the leader if it knows it: the federation applies a request id at most once and returns the
first result to every repeat (SPEC D3).

    from fedraft.client import Client
    with Client.from_profile("fed/admins/hq.profile.toml") as c:
        c.put("/routes/api", b"10.0.0.7:8080")
        print(c.get("/routes/api").record.value)
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from fedraft._proto.fedraft.v1 import api_pb2 as api
from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft._proto.fedraft.v1 import fanout_pb2 as fpb
from fedraft._proto.fedraft.v1 import memory_pb2 as mpb
from fedraft.config import Profile, load_profile
from fedraft.crypto.envelopes import build_envelope
from fedraft.crypto.fanout import MAX_ANSWER_BYTES, build_query, parse, query_digest, verify_message
from fedraft.crypto.keyfile import load_private_key
from fedraft.crypto.request_auth import AUTH_HEADER, sign_request
from fedraft.crypto.sealing import open_box, seal_all
from fedraft.crypto.signing import Identity, Signer
from fedraft.domain import commands as c
from fedraft.domain.catalog import commands as cc
from fedraft.domain.governance import commands as gc
from fedraft.domain.governance.memories import MAX_VALUE_BYTES, DeleteMemory, PutMemory
from fedraft.domain.outcome import Code
from fedraft.domain.placement import commands as pc
from fedraft.domain.placement.model import Phase, Trust, WorkloadSpec
from fedraft.domain.roles import Role
from fedraft.errors import CallerError, ConfigError, DecodeError, FedraftError, SignatureError, Unavailable
from fedraft.telemetry import client_span, trace_headers
from fedraft.wire.collections import LIST_FIELDS

SERVICE = "/fedraft.v1.Federation/"
MEMORIES = "fedraft.v1.Memories"
FANOUT = "fedraft.v1.Fanout"
LEADER_HEADER = "fedraft-leader"
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN,
             grpc.StatusCode.CANCELLED}
# Pause after an attempt that failed without naming another leader (docs/decisions/0016-failover-timing.md):
# doubling from the first value up to the cap, each drawn from 50-100% of it so clients that failed together
# spread out.
RETRY_FIRST_S = 0.05
RETRY_CAP_S = 0.1


class RequestFailed(FedraftError):
    """The federation answered with a definite refusal (not retryable as is)."""

    def __init__(self, code: grpc.StatusCode | Code, message: str) -> None:
        super().__init__(message)
        self.code = code


class ResultError(CallerError):
    """An envelope was applied (or refused) with a non-OK result."""

    def __init__(self, result: pb.Result) -> None:
        name = Code(result.code).name if result.code in Code._value2member_map_ else str(result.code)
        super().__init__(f"{name}: {result.message}")
        self.result = result
        self.code = Code(result.code) if result.code in Code._value2member_map_ else None


class Client:
    def __init__(self, endpoints: Sequence[str], identity: Identity, ca_pem: bytes, cluster_id: bytes,
                 *, timeout: float = 10.0, attempt_timeout: float = 5.0) -> None:
        if not endpoints:
            raise ConfigError("a client needs at least one endpoint")
        self.endpoints = list(endpoints)
        self.signer = Signer(identity)
        self.cluster_id = cluster_id
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self._creds = grpc.ssl_channel_credentials(root_certificates=ca_pem)
        self._channels: dict[str, grpc.Channel] = {}
        self._node_endpoint: dict[str, str] = {}
        self._preferred = 0
        self._principal: pb.Principal | None = None

    @classmethod
    def from_profile(cls, profile: Profile | str | Path, **kwargs: float) -> Client:
        if not isinstance(profile, Profile):
            profile = load_profile(Path(profile))
        try:
            ca = profile.ca_cert.read_bytes()
        except OSError as exc:
            raise ConfigError(f"CA certificate {profile.ca_cert}: {exc.strerror}") from None
        return cls(profile.endpoints, load_private_key(profile.key_path), ca, profile.cluster_id, **kwargs)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    def trust_ca(self, ca_pem: bytes) -> None:
        """Trust these CAs from now on (a CA rotation): open channels are closed, new ones use the bundle."""
        self._creds = grpc.ssl_channel_credentials(root_certificates=ca_pem)
        old, self._channels = self._channels, {}
        for channel in old.values():
            channel.close()

    # ----- low level -----
    def _channel(self, endpoint: str) -> grpc.Channel:
        if endpoint not in self._channels:
            self._channels[endpoint] = grpc.secure_channel(endpoint, self._creds, options=[
                ("grpc.max_receive_message_length", 16 * 1024 * 1024),
                ("grpc.max_send_message_length", 16 * 1024 * 1024),
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
            ])
        return self._channels[endpoint]

    def call(self, endpoint: str, method: str, request: bytes, *, signed: bool = True,
             timeout: float | None = None, service: str = "") -> bytes:
        """One attempt. `service`: another service than fedraft.v1.Federation (its methods are signed as
        SERVICE/METHOD, e.g. fedraft.v1.Memories/Read)."""
        signed_as = f"{service}/{method}" if service else method
        metadata: tuple[tuple[str, str | bytes], ...] = (
            ((AUTH_HEADER, sign_request(self.signer, self.cluster_id, signed_as, request)),) if signed else ())
        metadata += trace_headers()  # W3C trace context of the caller's current span, if any
        # No serializers: the request bytes are exactly what the header signs.
        path = f"/{service}/{method}" if service else SERVICE + method
        stub = self._channel(endpoint).unary_unary(path, None, None)
        response: bytes = stub(request, timeout=timeout or self.attempt_timeout, metadata=metadata)
        return response

    def _leader_endpoint(self, error: grpc.RpcError) -> str | None:
        trailing: Any = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
        hint = next((str(item[1]) for item in (trailing or ()) if item[0] == LEADER_HEADER), "")
        if not hint:
            return None
        if hint not in self._node_endpoint:
            self._learn_nodes()
        return self._node_endpoint.get(str(hint))

    def _learn_nodes(self) -> None:
        for endpoint in self.endpoints:
            try:
                raw = self.call(endpoint, "Status", api.StatusRequest().SerializeToString(), signed=False,
                                timeout=1.0)
            except grpc.RpcError:
                continue
            status = api.StatusResponse()
            status.ParseFromString(raw)
            self._node_endpoint[status.node_id] = endpoint

    def _with_leader(self, method: str, request: bytes, service: str = "") -> bytes:
        """Send to the leader, following hints; retry on unknown outcome until the overall timeout."""
        with client_span(method):
            return self._to_leader(method, request, service)

    def _to_leader(self, method: str, request: bytes, service: str) -> bytes:
        deadline = time.monotonic() + self.timeout
        endpoint = self.endpoints[self._preferred % len(self.endpoints)]
        last_error = "no endpoint answered"
        delay = RETRY_FIRST_S
        while time.monotonic() < deadline:
            try:
                response = self.call(endpoint, method, request, service=service,
                                     timeout=min(self.attempt_timeout, max(0.1, deadline - time.monotonic())))
                self._preferred = self.endpoints.index(endpoint)
                return response
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
                details = exc.details() if hasattr(exc, "details") else str(exc)
                if code not in RETRYABLE:
                    raise RequestFailed(code, f"{code.name}: {details}") from None
                last_error = f"{endpoint}: {code.name}: {details}"
                hinted = self._leader_endpoint(exc) if code == grpc.StatusCode.UNAVAILABLE else None
                if hinted is not None and hinted != endpoint:
                    endpoint = hinted
                    continue
                endpoint = self.endpoints[(self.endpoints.index(endpoint) + 1) % len(self.endpoints)]
                time.sleep(min(delay * random.uniform(0.5, 1.0), max(0.0, deadline - time.monotonic())))
                delay = min(delay * 2, RETRY_CAP_S)
        raise Unavailable(f"no leader answered within {self.timeout:.0f} s (last: {last_error})",
                          hint="check `fedraft status`; a majority of nodes must be up")

    # ----- commands -----
    def envelope(self, command: c.Command, request_id: bytes | None = None) -> pb.Signed:
        return build_envelope(self.signer, self.cluster_id, command, now_ms=int(time.time() * 1000),
                              request_id=request_id)

    def propose_signed(self, envelopes: list[pb.Signed]) -> list[pb.Result]:
        request = api.ProposeRequest(envelopes=envelopes, wait=True).SerializeToString()
        response = api.ProposeResponse()
        response.ParseFromString(self._with_leader("Propose", request))
        return list(response.results)

    def propose(self, commands: list[c.Command]) -> list[pb.Result]:
        return self.propose_signed([self.envelope(cmd) for cmd in commands])

    def _one(self, command: c.Command, check: bool) -> pb.Result:
        result = self.propose([command])[0]
        if check and result.code != Code.OK:
            raise ResultError(result)
        return result

    def put(self, key: str, value: bytes, *, check: bool = True) -> pb.Result:
        return self._one(c.Put(key, value), check)

    def compare_and_set(self, key: str, value: bytes, expected_version: int, *, check: bool = True) -> pb.Result:
        return self._one(c.CompareAndSet(key, value, expected_version), check)

    def delete(self, key: str, expected_version: int | None = None, *, check: bool = True) -> pb.Result:
        return self._one(c.Delete(key, expected_version), check)

    def get(self, key: str, *, stale: bool = False, endpoint: str | None = None) -> api.GetResponse:
        request = api.GetRequest(key=key, consistency=api.STALE if stale else api.LINEARIZABLE).SerializeToString()
        response = api.GetResponse()
        if stale and endpoint is None:
            endpoint = self.endpoints[self._preferred % len(self.endpoints)]
        if endpoint is not None:
            try:
                response.ParseFromString(self.call(endpoint, "Get", request))
            except grpc.RpcError as exc:
                raise RequestFailed(exc.code(), f"{exc.code().name}: {exc.details()}") from None
        else:
            response.ParseFromString(self._with_leader("Get", request))
        return response

    def simulate(self, kind: str, target: str, *, stale: bool = False) -> api.SimulateResponse:
        """What-if (pool, drain, gpu): what the orchestrator would do, computed by a node without proposing."""
        request = api.SimulateRequest(kind=kind, target=target,
                                      consistency=api.STALE if stale else api.LINEARIZABLE).SerializeToString()
        response = api.SimulateResponse()
        if stale:
            try:
                response.ParseFromString(self.call(self.endpoints[self._preferred % len(self.endpoints)],
                                                   "Simulate", request))
            except grpc.RpcError as exc:
                raise RequestFailed(exc.code(), f"{exc.code().name}: {exc.details()}") from None
        else:
            response.ParseFromString(self._with_leader("Simulate", request))
        return response

    def list_page(self, collection: str, *, prefix: str = "", page_token: str = "", limit: int = 0,
             stale: bool = False) -> api.ListResponse:
        """One page of a replicated collection (registry, pools, workloads, pairings, catalog)."""
        request = api.ListRequest(collection=collection, prefix=prefix, page_token=page_token, limit=limit,
                                  consistency=api.STALE if stale else api.LINEARIZABLE).SerializeToString()
        response = api.ListResponse()
        if stale:
            endpoint = self.endpoints[self._preferred % len(self.endpoints)]
            try:
                response.ParseFromString(self.call(endpoint, "List", request))
            except grpc.RpcError as exc:
                raise RequestFailed(exc.code(), f"{exc.code().name}: {exc.details()}") from None
        else:
            response.ParseFromString(self._with_leader("List", request))
        return response

    def list(self, collection: str, *, prefix: str = "", stale: bool = False) -> list[Any]:
        """Every item of a collection, page by page (pages may come from different applied indexes)."""
        field = LIST_FIELDS.get(collection)
        if field is None:
            raise CallerError(f"unknown collection {collection!r} (one of: {', '.join(sorted(LIST_FIELDS))})")
        items: list[Any] = []
        token = ""
        while True:
            page = self.list_page(collection, prefix=prefix, page_token=token, limit=1000, stale=stale)
            items.extend(getattr(page, field))
            token = page.next_page_token
            if not token:
                return items

    # ----- placement and pairing -----
    def submit(self, workload_id: str, spec: WorkloadSpec, *, check: bool = True) -> pb.Result:
        return self._one(pc.Submit(workload_id, spec), check)

    def cancel(self, workload_id: str, *, check: bool = True) -> pb.Result:
        return self._one(pc.Cancel(workload_id), check)

    def migrate(self, workload_id: str, to_pool: str = "", *, check: bool = True) -> pb.Result:
        return self._one(pc.Migrate(workload_id, to_pool), check)

    def pool_control(self, pool: str, action: str, *, check: bool = True) -> pb.Result:
        return self._one(pc.PoolControl(pool, action), check)

    def report_status(self, workload_id: str, phase: Phase, message: str = "", *, check: bool = True) -> pb.Result:
        return self._one(pc.ReportStatus(workload_id, phase, message), check)

    def heartbeat(self, pool: str, *, check: bool = True) -> pb.Result:
        return self._one(pc.PoolHeartbeat(pool), check)

    def report_inventory(self, command: pc.ReportInventory, *, check: bool = True) -> pb.Result:
        return self._one(command, check)

    def pair_offer(self, to_pool: str, trust: Trust, *, check: bool = True) -> pb.Result:
        return self._one(gc.PairOffer(to_pool, trust), check)

    def pair_accept(self, from_pool: str, *, check: bool = True) -> pb.Result:
        return self._one(gc.PairAccept(from_pool), check)

    # ----- model catalog -----
    def publish_model(self, name: str, version: int, sha256: bytes, size_bytes: int, gpu_memory_mb: int = 0, *,
                      check: bool = True) -> pb.Result:
        """Publish name@version from this key's pool (it becomes the master on a first publish)."""
        return self._one(cc.PublishModel(name, version, sha256, size_bytes, gpu_memory_mb), check)

    def report_replica(self, name: str, version: int, pool: str, *, check: bool = True) -> pb.Result:
        return self._one(cc.ReportReplica(name, version, pool), check)

    def promote_master(self, name: str, pool: str, *, check: bool = True) -> pb.Result:
        """Propose `pool` as the master of `name` (critical: every voter pool approves)."""
        return self._one(cc.PromoteMaster(name, pool), check)

    # ----- governance (critical operations wait as pending until every voter pool approved) -----
    def add_principal(self, public_key: bytes, pool: str, role: Role, name: str, *, check: bool = True) -> pb.Result:
        return self._one(gc.AddPrincipal(public_key, pool, role, name), check)

    def revoke_principal(self, key_id: bytes, *, check: bool = True) -> pb.Result:
        return self._one(gc.RevokePrincipal(key_id), check)

    def rotate_key(self, key_id: bytes, new_public_key: bytes, *, check: bool = True) -> pb.Result:
        return self._one(gc.RotateKey(key_id, new_public_key), check)

    def register_pool(self, pool: str, region: str, tier: str, agent_public_key: bytes, *,
                      check: bool = True) -> pb.Result:
        return self._one(gc.RegisterPool(pool, region, tier, agent_public_key), check)

    def retire_pool(self, pool: str, *, check: bool = True) -> pb.Result:
        return self._one(gc.RetirePool(pool), check)

    def set_trust(self, pool_a: str, pool_b: str, trust: Trust, *, check: bool = True) -> pb.Result:
        return self._one(gc.SetTrust(pool_a, pool_b, trust), check)

    def unpair(self, pool_a: str, pool_b: str, *, check: bool = True) -> pb.Result:
        return self._one(gc.Unpair(pool_a, pool_b), check)

    def set_policy(self, settings: dict[str, str], *, check: bool = True) -> pb.Result:
        return self._one(gc.SetPolicy(tuple(sorted(settings.items()))), check)

    def set_apply_version(self, version: int, *, check: bool = True) -> pb.Result:
        return self._one(gc.SetApplyVersion(version), check)

    def find_pending(self, prefix: str) -> Any:
        """The pending record whose hex id starts with `prefix` (a unique prefix of at least 4 digits)."""
        text = prefix.lower()
        if len(text) < 4 or not all(ch in "0123456789abcdef" for ch in text):
            raise CallerError(f"pending id {prefix!r}: give at least 4 hex digits of it",
                              hint="`fedraft pending` lists the ids")
        found = self.list("pending", prefix=text)
        if not found:
            raise CallerError(f"no critical operation has an id starting {text}", hint="`fedraft pending` lists them")
        if len(found) > 1:
            raise CallerError(f"{len(found)} critical operations have ids starting {text}: give more digits")
        return found[0]

    def approve(self, pending_id: bytes, command_digest: bytes, *, check: bool = True) -> pb.Result:
        return self._one(gc.Approve(pending_id, command_digest), check)

    def veto(self, pending_id: bytes, command_digest: bytes, reason: str, *, check: bool = True) -> pb.Result:
        return self._one(gc.Veto(pending_id, command_digest, reason), check)

    def break_glass(self, pending_id: bytes, signature: bytes, *, check: bool = True) -> pb.Result:
        return self._one(gc.BreakGlass(pending_id, signature), check)

    # ----- watch -----
    def watch(self, from_index: int = 0, *, include_barriers: bool = False, progress: bool = False,
              retry_for: float | None = None, idle_timeout: float = 20.0) -> Iterator[api.WatchEvent]:
        """Applied results from `from_index` on (0: only what is applied from now), in log order, forever.

        One WatchEvent per envelope (index, ordinal, command, author, result). When a node fails, lags
        silently (no message for `idle_timeout` s; nodes report progress every few seconds) or closes
        the stream, the watch resumes on the next endpoint from where it was: no event is lost or
        repeated. Progress reports are yielded too when `progress`. Raises RequestFailed when every
        node refuses (OUT_OF_RANGE: the index was compacted away; UNAUTHENTICATED, ...), Unavailable
        when no node served for `retry_for` seconds (default: the client's timeout).
        """
        give_up = self.timeout if retry_for is None else retry_for
        next_index = from_index          # 0 until the first node says where "now" is
        partial: tuple[int, int] | None = None  # last (index, ordinal) sent of an entry not finished
        position = self._preferred
        failing_since: float | None = None
        out_of_range: dict[str, str] = {}
        delay = 0.05
        last_error = "no endpoint answered"
        while True:
            endpoint = self.endpoints[position % len(self.endpoints)]
            request = api.WatchRequest(from_index=next_index, include_barriers=include_barriers).SerializeToString()
            metadata = ((AUTH_HEADER, sign_request(self.signer, self.cluster_id, "Watch", request)),)
            call: Any = self._channel(endpoint).unary_stream(SERVICE + "Watch", None, None)(request, metadata=metadata)
            watchdog = _Watchdog(call, idle_timeout)
            moved = False
            try:
                for raw in call:
                    watchdog.fed()
                    event = api.WatchEvent()
                    event.ParseFromString(raw)
                    failing_since, delay = None, 0.05
                    out_of_range.pop(endpoint, None)
                    if event.progress:
                        if partial is None:  # everything up to event.index was sent (or had no event for us)
                            next_index = max(next_index, event.index + 1)
                        if progress:
                            yield event
                        continue
                    if partial is not None and (event.index, event.ordinal) <= partial:
                        continue  # resumed inside an entry: its first events were sent already
                    if event.index < next_index:
                        continue
                    moved = True
                    if event.entry_last:
                        next_index, partial = event.index + 1, None
                    else:
                        next_index, partial = event.index, (event.index, event.ordinal)
                    yield event
                last_error = f"{endpoint}: the stream ended (node stopping)"
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
                details = exc.details() if hasattr(exc, "details") else str(exc)
                if watchdog.fired:
                    code, details = grpc.StatusCode.DEADLINE_EXCEEDED, f"nothing heard for {idle_timeout:.0f} s"
                last_error = f"{endpoint}: {code.name}: {details}"
                if code == grpc.StatusCode.OUT_OF_RANGE:
                    out_of_range[endpoint] = str(details or "")
                    if len(out_of_range) == len(self.endpoints):
                        raise RequestFailed(code, f"{code.name}: {details}") from None
                elif code not in RETRYABLE | {grpc.StatusCode.RESOURCE_EXHAUSTED}:
                    raise RequestFailed(code, f"{code.name}: {details}") from None
            finally:
                watchdog.stop()
                call.cancel()
            now = time.monotonic()
            if failing_since is None or moved:
                failing_since = now
            elif now - failing_since > give_up:
                raise Unavailable(f"watch: no node served the stream for {give_up:.0f} s (last: {last_error})",
                                  hint="check `fedraft status`; resume with --from "
                                       f"{next_index}" if next_index else "check `fedraft status`")
            position += 1  # another node: this one failed, stopped or shed us
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    # ----- memories (decision 0009): sealed here, before signing; opened with a pool's key -----
    def whoami(self) -> pb.Principal:
        """This client's principal (its pool, role and name), as the federation knows it."""
        if self._principal is None:
            found = self.list("principals", prefix=self.signer.key_id.hex())
            if not found:
                raise CallerError(f"key {self.signer.key_id.hex()} is not a principal of this federation")
            self._principal = found[0]
        return self._principal

    def memory_recipients(self, data_class: str, key: str = "") -> Any:
        """The pools a value of `data_class` from this key's pool is sealed to now (a linearizable read)."""
        request = mpb.RecipientsRequest(data_class=data_class, key=key).SerializeToString()
        response = mpb.RecipientsResponse()
        response.ParseFromString(self._with_leader("Recipients", request, service=MEMORIES))
        return response

    def put_memory(self, key: str, value: bytes, data_class: str, *, expected_version: int | None = None,
                   check: bool = True) -> pb.Result:
        """Seal `value` to every pool that qualifies for `data_class` and put it. When trust or a key
        changed between the read of the recipients and apply, it reseals to the new ones once."""
        if len(value) > MAX_VALUE_BYTES:
            raise CallerError(f"a memory value is at most {MAX_VALUE_BYTES} bytes, not {len(value)}")
        result = pb.Result()
        used: list[tuple[str, bytes, bytes]] | None = None
        for _ in range(2):
            recipients = self.memory_recipients(data_class, key)
            wanted = [(r.pool, bytes(r.key_id), bytes(r.public_key)) for r in recipients.recipients]
            if wanted == used:
                break  # the same recipients: the refusal is not about them
            used = wanted
            sealed = seal_all(wanted, key, recipients.pool, value)
            result = self.propose([PutMemory(key, data_class, sealed, expected_version)])[0]
            if result.code not in (Code.FAILED_PRECONDITION, Code.PERMISSION_DENIED):
                break
        if check and result.code != Code.OK:
            raise ResultError(result)
        return result

    def delete_memory(self, key: str, expected_version: int | None = None, *, check: bool = True) -> pb.Result:
        return self._one(DeleteMemory(key, expected_version), check)

    def read_memory(self, key: str, *, open_value: bool = False, min_index: int = 0,
                    endpoint: str | None = None) -> Any:
        """A memory's metadata and this key's pool's box (MemoryReadResponse). With `open_value` a node of
        this key's pool opens the box and returns the plaintext; the endpoints are tried in turn until
        one of that pool answers."""
        request = mpb.MemoryReadRequest(key=key, open=open_value, min_index=min_index).SerializeToString()
        order = [endpoint] if endpoint else self.endpoints[self._preferred:] + self.endpoints[:self._preferred]
        last = ""
        for ep in order:
            try:
                raw = self.call(ep, "Read", request, service=MEMORIES, timeout=self.timeout)
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
                last = f"{code.name}: {exc.details() if hasattr(exc, 'details') else exc}"
                if code in RETRYABLE or (open_value and code == grpc.StatusCode.FAILED_PRECONDITION
                                         and "opens pool" in last):
                    continue  # another node (of this key's pool)
                raise RequestFailed(code, last) from None
            response = mpb.MemoryReadResponse()
            response.ParseFromString(raw)
            return response
        raise Unavailable(f"no node answered the read of memory {key} (last: {last})",
                          hint="opening needs a node of this key's pool among the endpoints")

    def open_memory(self, key: str, identity: Identity | None = None, *, min_index: int = 0) -> bytes:
        """The plaintext of memory `key`: opened here with `identity` (this key's pool's node or agent
        key), or, without one, by a node of this key's pool."""
        if identity is None:
            return bytes(self.read_memory(key, open_value=True, min_index=min_index).value)
        response = self.read_memory(key, min_index=min_index)
        if not response.found:
            raise RequestFailed(Code.NOT_FOUND, f"NOT_FOUND: no memory {key}")
        if not response.HasField("sealed"):
            r = response.record
            raise RequestFailed(Code.PERMISSION_DENIED,
                                f"PERMISSION_DENIED: this key's pool holds no sealed value of {key}: class "
                                f"{r.data_class} ({r.level}) of {r.pool} is sealed to {', '.join(r.pools)}")
        return open_box(identity, bytes(response.sealed.box), key, response.record.pool)

    def reseal_memory(self, key: str, identity: Identity | None = None, *, check: bool = True) -> pb.Result:
        """Open memory `key` (see open_memory) and put it again, sealed to the pools that qualify now (after
        a trust change or a key rotation). Fails if the memory changed in between (expected version)."""
        response = self.read_memory(key)
        if not response.found:
            raise RequestFailed(Code.NOT_FOUND, f"NOT_FOUND: no memory {key}")
        value = self.open_memory(key, identity, min_index=response.applied_index)
        return self.put_memory(key, value, response.record.data_class, expected_version=response.record.version,
                               check=check)

    # ----- cross-pool fan-out (decision 0009) -----
    def fanout(self, text: str, level: str = "standard", *, max_results: int = 0, timeout_ms: int = 0,
               validity_ms: int = 60_000) -> FanoutResult:
        """Sign a query at this key's pool, have a node of that pool send it to the pools paired with it
        at `level` or more, and verify every answer's signature (the answering pool's node key)."""
        me = self.whoami()
        signed = build_query(self.signer, self.cluster_id, origin_pool=me.pool, author=me.name, text=text,
                             level=level, now_ms=int(time.time() * 1000), validity_ms=validity_ms,
                             max_results=max_results)
        request = fpb.FanoutRequest(query=signed, timeout_ms=timeout_ms).SerializeToString()
        last = ""
        for ep in self.endpoints[self._preferred:] + self.endpoints[:self._preferred]:
            try:
                raw = self.call(ep, "Fanout", request, service=FANOUT, timeout=self.timeout + 30)
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
                last = f"{code.name}: {exc.details() if hasattr(exc, 'details') else exc}"
                if code in RETRYABLE or (code == grpc.StatusCode.FAILED_PRECONDITION and "speaks for pool" in last):
                    continue
                raise RequestFailed(code, last) from None
            response = fpb.FanoutResponse()
            response.ParseFromString(raw)
            return FanoutResult(response.served_by, tuple(response.skipped),
                                tuple(self._verify_answer(signed, a) for a in response.answers))
        raise Unavailable(f"no node of pool {me.pool} sent the fan-out on (last: {last})",
                          hint="the endpoints must include a node of this key's pool")

    def _verify_answer(self, query: pb.Signed, item: Any) -> PoolAnswer:
        base = PoolAnswer(item.pool, item.node_id, item.trust, Code(item.code) if item.code in Code._value2member_map_
                          else Code.UNAVAILABLE, item.message)
        if not item.HasField("answer"):
            return base
        try:
            answer = parse(item.answer, "answer", MAX_ANSWER_BYTES).answer
            signer = next(iter(self.list("principals", prefix=bytes(item.answer.key_id).hex())), None)
            if signer is None or signer.role != "node" or signer.pool != item.pool or signer.revoked_index:
                raise SignatureError(f"signed by {signer.name if signer else 'an unknown key'}, not a current node "
                                     f"key of {item.pool}")
            verify_message(bytes(signer.public_key), self.cluster_id, item.answer)
            if bytes(answer.query_sha256) != query_digest(query) or answer.pool != item.pool:
                raise SignatureError("the answer is for another query or pool")
        except (DecodeError, SignatureError) as exc:
            return replace(base, code=Code.UNAUTHENTICATED, message=f"answer does not verify: {exc}",
                           verify_error=str(exc))
        hits = tuple((h.name, h.snippet, h.line) for h in answer.hits)
        return replace(base, code=Code.OK, message="", verified=True, signer=signer.name, hits=hits,
                       truncated=answer.truncated, handler=answer.handler)

    def export_log(self, *, timeout: float = 600.0) -> Iterator[bytes]:
        """The log export (fedraft.crypto.logfile format) of the first node that serves it, in chunks.

        One node's applied state at one index; a stream that fails part way raises (never mixed)."""
        request = api.ExportLogRequest().SerializeToString()
        last_error = "no endpoint answered"
        for endpoint in self.endpoints:
            metadata = ((AUTH_HEADER, sign_request(self.signer, self.cluster_id, "ExportLog", request)),)
            call: Any = self._channel(endpoint).unary_stream(SERVICE + "ExportLog", None, None)(
                request, metadata=metadata, timeout=timeout)
            started = False
            try:
                for raw in call:
                    started = True
                    yield bytes(api.ExportLogChunk.FromString(raw).data)
                return
            except grpc.RpcError as exc:
                if started or exc.code() not in RETRYABLE:
                    raise RequestFailed(exc.code(), f"{exc.code().name}: {exc.details()}") from None
                last_error = f"{endpoint}: {exc.code().name}: {exc.details()}"
        raise Unavailable(f"no node served the log export (last: {last_error})")

    def status(self, endpoint: str, *, include_digest: bool = False, signed: bool = True,
               timeout: float = 2.0) -> api.StatusResponse:
        raw = self.call(endpoint, "Status", api.StatusRequest(include_digest=include_digest).SerializeToString(),
                        signed=signed, timeout=timeout)
        response = api.StatusResponse()
        response.ParseFromString(raw)
        return response


@dataclass(frozen=True)
class PoolAnswer:
    """One pool's part of a fan-out: its verified answer, or why there is none."""

    pool: str
    node_id: str
    trust: str
    code: Code
    message: str = ""
    verified: bool = False  # signed by a current node key of `pool`, for this query
    signer: str = ""
    hits: tuple[tuple[str, str, int], ...] = ()  # (name, snippet, line)
    truncated: bool = False
    handler: str = ""
    verify_error: str = ""  # an answer came back but does not verify (forged, altered, another query)


@dataclass(frozen=True)
class FanoutResult:
    served_by: str
    skipped: tuple[str, ...]        # "pool: why" for paired pools below the level
    answers: tuple[PoolAnswer, ...]


class _Watchdog:
    """Cancels a stream that has been silent for `idle_s` seconds (a stopped or cut-off node)."""

    def __init__(self, call: Any, idle_s: float) -> None:
        self.call = call
        self.idle_s = idle_s
        self.fired = False
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fedraft-watchdog", daemon=True)
        self._thread.start()

    def fed(self) -> None:
        self._last = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(min(1.0, self.idle_s / 4)):
            if time.monotonic() - self._last > self.idle_s:
                self.fired = True
                self.call.cancel()
                return

    def stop(self) -> None:
        self._stop.set()
