"""gRPC peer links: one mutually authenticated, ordered bidirectional stream per peer pair (SPEC §3).

Who may speak, checked in two layers (docs/decisions/0002-peer-authentication.md):
- TLS: both certificates chain to the federation CA; the server also requires the client's public key
  to match the SPKI sha256 that genesis pins for a voter, and the certificate to name that voter.
- Hello, three messages: the dialer signs {cluster, itself, the peer, a fresh nonce} with its genesis
  Ed25519 key; the server answers with its own signed hello echoing that nonce (grpc Python never shows
  the dialer the server's certificate, so this signed reply is what proves the server's identity to the
  dialer); the dialer confirms with a hello echoing the server's fresh nonce, so a captured first hello
  cannot be replayed (docs/decisions/0013-hostile-input.md).

Only the node with the larger id dials; the other side serves. Frames flow only after every hello
verified. A misbehaving stream (oversized, too fast, not a PeerFrame, a second hello, a frame before
the hello) is closed alone; the node keeps serving. Raft tolerates loss, so in-flight frames of a
closed stream are dropped, never retried.

This module knows nothing of Raft: it moves PeerFrames. fedraft.consensus.peer_transport adapts it.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import grpc
from google.protobuf.message import DecodeError

from fedraft._proto.fedraft.v1.peer_pb2 import PeerFrame, PeerHello
from fedraft.crypto.signing import CTX_PEER_HELLO, Identity, Signer, verify
from fedraft.crypto.tls import cert_summary, spki_sha256
from fedraft.domain.genesis import Voter
from fedraft.errors import ConfigError, OperatorError, SignatureError
from fedraft.transport.server_tls import ServerTls

__all__ = ["NONCE_LEN", "LinkLimits", "PeerLinks", "check_hello", "sign_hello"]

log = logging.getLogger(__name__)

STREAM_METHOD = "/fedraft.v1.Peer/Stream"
NONCE_LEN = 16


@dataclass(frozen=True)
class LinkLimits:
    max_frame_bytes: int = 4 * 1024 * 1024
    max_frames_per_second: float = 20_000.0
    burst_frames: int = 40_000
    max_streams: int = 16  # concurrent inbound streams, handshakes included
    handshake_timeout_s: float = 5.0
    # A peer that stops reading would otherwise make us buffer without bound; closing its stream
    # drops the backlog and Raft resends what matters after the reconnect.
    max_queued_frames: int = 50_000
    keepalive_ms: int = 2_000
    # grpc uses min_reconnect_backoff_ms as the floor of each connection attempt's timeout
    # (TCP + TLS). 100 ms would make a link over a 200 ms RTT never connect, so the floor is
    # separate from the 100-500 ms backoff between attempts.
    connect_timeout_ms: int = 2_000


FrameCallback = Callable[[str, PeerFrame], None]
PeerCallback = Callable[[str], None]


def _noop_frame(peer_id: str, frame: PeerFrame) -> None:
    return None


def _noop_peer(peer_id: str) -> None:
    return None


# ----- the signed hello -----

def _hello_body(hello: PeerHello) -> bytes:
    unsigned = PeerHello()
    unsigned.CopyFrom(hello)
    unsigned.sig = b""
    return unsigned.SerializeToString(deterministic=True)


def sign_hello(signer: Signer, cluster_id: bytes, node_id: str, peer_node_id: str, nonce: bytes,
               echo_nonce: bytes = b"") -> PeerHello:
    hello = PeerHello(cluster_id=cluster_id, node_id=node_id, peer_node_id=peer_node_id, nonce=nonce,
                      echo_nonce=echo_nonce)
    hello.sig = signer.sign(CTX_PEER_HELLO, cluster_id, hello.SerializeToString(deterministic=True))
    return hello


def check_hello(hello: PeerHello, *, cluster_id: bytes, speaker: Voter, listener: str,
                echo_nonce: bytes) -> str | None:
    """None if `hello` is `speaker`'s signed hello to `listener` echoing `echo_nonce`, else why not."""
    if hello.cluster_id != cluster_id:
        return "hello for another cluster"
    if hello.node_id != speaker.node_id:
        return f"hello claims to be {hello.node_id!r}, the certificate or dial target is {speaker.node_id!r}"
    if hello.peer_node_id != listener:
        return f"hello addressed to {hello.peer_node_id!r}, not to us"
    if len(hello.nonce) != NONCE_LEN:
        return "hello nonce is not 16 bytes"
    if hello.echo_nonce != echo_nonce:
        return "hello does not echo our nonce"
    try:
        verify(speaker.public_key, CTX_PEER_HELLO, cluster_id, _hello_body(hello), hello.sig)
    except SignatureError:
        return "hello signature does not verify with the genesis key"
    return None


# ----- one stream -----

class _Stream:
    """One authenticated stream to a peer, from either side. Its outbound queue ends with None."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens", "cancel", "closed", "established", "outbound",
                 "peer_id")

    def __init__(self, peer_id: str, limits: LinkLimits) -> None:
        self.peer_id = peer_id
        self.outbound: queue.SimpleQueue[PeerFrame | None] = queue.SimpleQueue()
        self.closed = False
        self.established = False
        self.cancel: Callable[[str], Any] = lambda reason: None  # ends the RPC, telling the peer why
        self._rate = limits.max_frames_per_second
        self._burst = float(limits.burst_frames)
        self._tokens = self._burst
        self._stamp = time.monotonic()

    def admit(self, now: float) -> bool:
        """Token bucket: at most `burst` frames at once, `rate` per second sustained."""
        tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True


class PeerLinks:
    """The peer links of one node. Set the callbacks before start(); they run on gRPC threads and must
    not block (on_connected / on_disconnected run under the links' lock, so that a replaced stream's
    disconnect is always reported before its successor's connect)."""

    def __init__(
        self,
        *,
        node_id: str,
        identity: Identity,
        cluster_id: bytes,
        voters: Iterable[Voter],
        peer_addresses: Mapping[str, str],
        listen_address: str,
        tls_cert_pem: bytes,
        tls_key_pem: bytes,
        ca_cert_pem: bytes,
        limits: LinkLimits | None = None,
    ) -> None:
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.limits = limits or LinkLimits()
        self.on_frame: FrameCallback = _noop_frame
        self.on_connected: PeerCallback = _noop_peer
        self.on_disconnected: PeerCallback = _noop_peer
        self._signer = Signer(identity)
        self._voters = {v.node_id: v for v in voters}
        self._voters_by_pin = {v.tls_spki_sha256: v for v in self._voters.values()}
        if node_id not in self._voters:
            raise ConfigError(f"node {node_id!r} is not a genesis voter")
        if self._voters[node_id].public_key != self._signer.public_key:
            raise ConfigError(f"the identity key of {node_id!r} is not the one genesis pins")
        unknown = set(peer_addresses) - set(self._voters)
        if unknown:
            raise ConfigError(f"peer addresses name nodes that are not voters: {sorted(unknown)}")
        self._peer_addresses = dict(peer_addresses)
        self._listen_address = listen_address
        self._tls_cert_pem = tls_cert_pem
        self._tls_key_pem = tls_key_pem
        self._ca_cert_pem = ca_cert_pem
        self._server_tls = ServerTls(tls_key_pem, tls_cert_pem, ca_cert_pem, require_client_auth=True)
        # Bumped by reload_tls: dial loops of an older generation end once their stream is replaced.
        self._tls_generation = 0

        self._lock = threading.RLock()
        self._streams: dict[str, _Stream] = {}  # established stream per peer
        self._all_streams: set[_Stream] = set()  # handshaking ones too, so stop() reaches them
        self._last_contact: dict[str, float] = {}
        self._stopping = threading.Event()
        self._started = False
        self._server: grpc.Server | None = None
        self._channels: list[grpc.Channel] = []
        self._dialers: list[threading.Thread] = []
        self.port: int | None = None

    # ----- public API -----

    def start(self) -> None:
        """Bind the server and start dialing; raises OperatorError if the address cannot be bound."""
        with self._lock:
            if self._started:
                return
            server = self._make_server()
            try:
                port = server.add_secure_port(self._listen_address, self._server_credentials())
            except RuntimeError as exc:
                raise OperatorError(f"cannot listen for peers on {self._listen_address}: {exc}") from None
            if port == 0:
                raise OperatorError(f"cannot listen for peers on {self._listen_address}")
            server.start()
            self._server, self.port, self._started = server, port, True
            self._start_dialers()

    def _start_dialers(self) -> None:
        for peer_id in sorted(self._peer_addresses):
            # Only the larger id dials, so a pair never races two streams against each other.
            if peer_id < self.node_id:
                thread = threading.Thread(target=self._dial_loop, args=(peer_id, self._tls_generation), daemon=True,
                                          name=f"fedraft-dial-{self.node_id}-{peer_id}-{self._tls_generation}")
                self._dialers.append(thread)
                thread.start()

    def reload_tls(self, tls_cert_pem: bytes, tls_key_pem: bytes, ca_cert_pem: bytes) -> None:
        """Use a new certificate, key and trust bundle without dropping a link (decision 0015).

        The server presents the new certificate and trusts the new bundle from its next handshake on;
        established streams stay. The peers this node dials are redialed at once with the new
        credentials, and each new stream replaces the old one only once its handshake passed: a
        rotation the peer does not accept yet leaves the old stream running, and the refusal is logged.
        """
        with self._lock:
            self._tls_cert_pem, self._tls_key_pem, self._ca_cert_pem = tls_cert_pem, tls_key_pem, ca_cert_pem
            self._server_tls.update(tls_key_pem, tls_cert_pem, ca_cert_pem)
            self._tls_generation += 1
            self._dialers = [t for t in self._dialers if t.is_alive()]
            if self._started and not self._stopping.is_set():
                self._start_dialers()
        log.info("node %s: TLS reloaded (generation %d): %s", self.node_id, self._tls_generation,
                 cert_summary(tls_cert_pem))

    def stop(self, grace: float | None = None) -> None:
        self._stopping.set()
        with self._lock:
            streams = list(self._all_streams)
        for stream in streams:
            self._close(stream, "node stopping", logging.DEBUG)
        if self._server is not None:
            self._server.stop(grace).wait()
        for thread in self._dialers:
            thread.join(timeout=2.0)
        for channel in self._channels:
            channel.close()

    @property
    def started(self) -> bool:
        return self._started

    def send(self, peer_id: str, frame: PeerFrame) -> bool:
        """Queue a frame on the peer's stream; False if there is none. Never blocks."""
        stream = self._streams.get(peer_id)
        if stream is None:
            return False
        stream.outbound.put(frame)
        if stream.outbound.qsize() > self.limits.max_queued_frames:
            self._close(stream, f"peer reads too slowly ({self.limits.max_queued_frames} frames queued)")
            return False
        return True

    def connected(self, peer_id: str) -> bool:
        return peer_id in self._streams

    def last_contact(self, peer_id: str) -> float | None:
        """time.monotonic() of the last frame received from the peer (hellos included)."""
        return self._last_contact.get(peer_id)

    def close(self, peer_id: str, reason: str) -> None:
        """Close the peer's stream, e.g. because the owner found a frame invalid."""
        stream = self._streams.get(peer_id)
        if stream is not None:
            self._close(stream, reason)

    # ----- stream bookkeeping -----

    def _register(self, stream: _Stream) -> bool:
        with self._lock:
            if self._stopping.is_set():
                return False
            self._all_streams.add(stream)
            return True

    def _install(self, stream: _Stream) -> bool:
        """Make a handshaken stream the peer's current one, replacing any older stream."""
        with self._lock:
            if stream.closed or self._stopping.is_set():
                return False
            old = self._streams.get(stream.peer_id)
            if old is not None:
                self._detach_locked(old, "replaced by a new stream", logging.INFO)
            stream.established = True
            self._streams[stream.peer_id] = stream
            self._last_contact[stream.peer_id] = time.monotonic()
            self.on_connected(stream.peer_id)
        if old is not None:
            self._finish(old, "replaced by a new stream")
        log.info("node %s, peer %s: connected", self.node_id, stream.peer_id)
        return True

    def _detach_locked(self, stream: _Stream, reason: str, level: int) -> bool:
        if stream.closed:
            return False
        stream.closed = True
        # Logged before on_disconnected, so the reason is on record once anyone sees the peer gone.
        log.log(level, "node %s, peer %s: stream closed: %s", self.node_id, stream.peer_id, reason)
        self._all_streams.discard(stream)
        if self._streams.get(stream.peer_id) is stream:
            del self._streams[stream.peer_id]
            self.on_disconnected(stream.peer_id)
        return True

    def _close(self, stream: _Stream, reason: str, level: int = logging.WARNING) -> None:
        with self._lock:
            detached = self._detach_locked(stream, reason, level)
        if detached:
            self._finish(stream, reason)

    @staticmethod
    def _finish(stream: _Stream, reason: str) -> None:
        stream.outbound.put(None)
        stream.cancel(reason)

    def _on_raw(self, stream: _Stream, raw: bytes) -> bool:
        """Check and deliver one inbound frame; False once the stream is closed."""
        if stream.closed:
            return False
        if len(raw) > self.limits.max_frame_bytes:
            self._close(stream, f"frame of {len(raw)} bytes is over the {self.limits.max_frame_bytes} byte limit")
            return False
        now = time.monotonic()
        if not stream.admit(now):
            self._close(stream, f"more than {self.limits.max_frames_per_second:g} frames per second")
            return False
        try:
            frame = PeerFrame.FromString(raw)
        except DecodeError:
            self._close(stream, "bytes that are not a PeerFrame")
            return False
        kind = frame.WhichOneof("kind")
        if kind is None:
            self._close(stream, "a frame of no known kind")
            return False
        if kind == "hello":
            self._close(stream, "a second hello")
            return False
        self._last_contact[stream.peer_id] = now
        try:
            self.on_frame(stream.peer_id, frame)
        except Exception:
            log.exception("node %s, peer %s: the frame handler failed", self.node_id, stream.peer_id)
        return not stream.closed

    def _outbound_bytes(self, stream: _Stream) -> Iterator[bytes]:
        """Serialize queued frames on the gRPC thread, off the caller's (tick) thread."""
        limit = self.limits.max_frame_bytes
        while True:
            frame = stream.outbound.get()
            if frame is None:
                return
            data = frame.SerializeToString()
            if len(data) > limit:
                # The peer would close the stream for it; drop it and let Raft resend smaller.
                log.error("node %s, peer %s: dropped an outgoing %s frame of %d bytes (limit %d)", self.node_id,
                          stream.peer_id, frame.WhichOneof("kind"), len(data), limit)
                continue
            yield data

    # ----- serving side (we have the smaller id) -----

    def _make_server(self) -> grpc.Server:
        limits = self.limits
        options = [
            ("grpc.max_receive_message_length", _grpc_message_limit(limits)),
            ("grpc.max_send_message_length", _grpc_message_limit(limits)),
            ("grpc.keepalive_time_ms", limits.keepalive_ms),
            ("grpc.keepalive_timeout_ms", limits.keepalive_ms),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", limits.keepalive_ms // 2),
            ("grpc.http2.max_ping_strikes", 0),
            # Two processes must never share a peer port: a second node on it fails to bind.
            ("grpc.so_reuseport", 0),
        ]
        # Each stream holds one pool thread for its outbound side; its reader runs on its own thread.
        server = grpc.server(ThreadPoolExecutor(max_workers=limits.max_streams + 2,
                                                thread_name_prefix=f"fedraft-peer-{self.node_id}"),
                             options=options, maximum_concurrent_rpcs=limits.max_streams)
        handler = grpc.method_handlers_generic_handler("fedraft.v1.Peer", {
            # Raw bytes in and out: we parse and size-check ourselves, so a malformed frame closes the
            # stream with a reason in our log instead of a grpc deserialization error.
            "Stream": grpc.stream_stream_rpc_method_handler(self._serve),
        })
        server.add_generic_rpc_handlers((handler,))
        return server

    def _server_credentials(self) -> grpc.ServerCredentials:
        return self._server_tls.credentials()

    def _tls_peer(self, context: grpc.ServicerContext) -> tuple[Voter | None, str]:
        """The voter the client certificate is pinned for, or None and why not."""
        # grpc-stubs types the values as bytes; grpc returns a sequence of bytes per property.
        auth = cast(Mapping[str, Sequence[bytes]], context.auth_context())
        pems = list(auth.get("x509_pem_cert") or ())
        if not pems:
            return None, "no client certificate"
        try:
            pin = spki_sha256(pems[0])
        except ConfigError:
            return None, "unreadable client certificate"
        voter = self._voters_by_pin.get(pin)
        if voter is None:
            # CA-signed but not pinned: the stolen-CA-key case.
            return None, "client certificate key is not pinned for any voter"
        names = set(auth.get("x509_common_name") or ()) | set(auth.get("x509_subject_alternative_name") or ())
        if voter.node_id.encode() not in names:
            return None, f"client certificate does not name {voter.node_id!r}"
        if voter.node_id <= self.node_id:
            return None, f"{voter.node_id!r} must not dial {self.node_id!r} (only the larger id dials)"
        return voter, ""

    def _serve(self, request_iterator: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        voter, why = self._tls_peer(context)
        if voter is None:
            log.warning("node %s: peer connection from %s refused: %s", self.node_id, context.peer(), why)
            context.abort(grpc.StatusCode.PERMISSION_DENIED, why)
            return
        peer_id = voter.node_id
        stream = _Stream(peer_id, self.limits)
        if not self._register(stream):
            context.abort(grpc.StatusCode.UNAVAILABLE, "node stopping")
            return
        try:
            hello, why = self._read_hello(request_iterator, context, "hello")
            if hello is not None:
                why = check_hello(hello, cluster_id=self.cluster_id, speaker=voter, listener=self.node_id,
                                  echo_nonce=b"") or ""
            if why:
                self._refuse_handshake(stream, context, why)
                return
            assert hello is not None
            challenge = os.urandom(NONCE_LEN)
            reply = sign_hello(self._signer, self.cluster_id, self.node_id, peer_id, challenge,
                               echo_nonce=hello.nonce)
            yield PeerFrame(hello=reply).SerializeToString()
            # The first hello proves nothing fresh (it could be a replay); signing our new nonce does.
            confirm, why = self._read_hello(request_iterator, context, "hello confirmation")
            if confirm is not None:
                why = check_hello(confirm, cluster_id=self.cluster_id, speaker=voter, listener=self.node_id,
                                  echo_nonce=challenge) or ""
                if not why and confirm.nonce != hello.nonce:
                    why = "hello confirmation belongs to another handshake"
            if why:
                self._refuse_handshake(stream, context, why)
                return
            log.info("node %s, peer %s: handshake, their certificate %s", self.node_id, peer_id, _client_cert(context))
            # Set only now, so that a refused handshake ends with PERMISSION_DENIED, not ABORTED.
            stream.cancel = functools.partial(self._end_served, context)
            if not self._install(stream):
                return
            context.add_callback(lambda: self._close(stream, "stream ended", logging.INFO))
            threading.Thread(target=self._read_loop, args=(stream, request_iterator), daemon=True,
                             name=f"fedraft-read-{self.node_id}-{peer_id}").start()
            yield from self._outbound_bytes(stream)
        finally:
            self._close(stream, "stream ended", logging.INFO)

    def _refuse_handshake(self, stream: _Stream, context: grpc.ServicerContext, why: str) -> None:
        self._close(stream, f"handshake refused: {why}")
        context.abort(grpc.StatusCode.PERMISSION_DENIED, why)

    @staticmethod
    def _end_served(context: grpc.ServicerContext, reason: str) -> None:
        # The handler returns once it reads the end of the outbound queue, and the peer gets ABORTED
        # with our reason. If it is stuck sending to a peer that does not read, cancel after a while.
        context.set_code(grpc.StatusCode.ABORTED)
        context.set_details(reason)
        fallback = threading.Timer(1.0, context.cancel)
        fallback.daemon = True
        fallback.start()

    def _read_hello(self, request_iterator: Iterator[bytes], context: grpc.ServicerContext,
                    what: str) -> tuple[PeerHello | None, str]:
        # A stream that never says hello would hold a server slot forever; the watchdog cancels it.
        watchdog = threading.Timer(self.limits.handshake_timeout_s, context.cancel)
        watchdog.daemon = True
        watchdog.start()
        try:
            raw = next(request_iterator, None)
        except Exception:  # the RPC was cancelled (watchdog, client gone, server stopping)
            raw = None
        finally:
            watchdog.cancel()
        if raw is None:
            return None, f"no {what}"
        if len(raw) > self.limits.max_frame_bytes:
            return None, f"oversized {what}"
        try:
            frame = PeerFrame.FromString(raw)
        except DecodeError:
            return None, f"{what} is not a PeerFrame"
        if frame.WhichOneof("kind") != "hello":
            return None, f"a frame before the {what}"
        return frame.hello, ""

    def _read_loop(self, stream: _Stream, request_iterator: Iterator[bytes]) -> None:
        reason = "peer ended the stream"
        try:
            for raw in request_iterator:
                if not self._on_raw(stream, raw):
                    return
        except Exception as exc:  # grpc raises its own error types when the RPC is cancelled or fails
            reason = f"stream failed: {_describe(exc)}"
        self._close(stream, reason, logging.INFO)

    # ----- dialing side (we have the larger id) -----

    def _channel_options(self, peer_id: str) -> list[tuple[str, Any]]:
        limits = self.limits
        return [
            ("grpc.ssl_target_name_override", peer_id),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 500),
            ("grpc.min_reconnect_backoff_ms", limits.connect_timeout_ms),
            ("grpc.keepalive_time_ms", limits.keepalive_ms),
            ("grpc.keepalive_timeout_ms", limits.keepalive_ms),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.max_receive_message_length", _grpc_message_limit(limits)),
            ("grpc.max_send_message_length", _grpc_message_limit(limits)),
            ("grpc.enable_retries", 0),  # Raft messages are never retried (SPEC §3)
            # A private subchannel pool: never share a connection with another PeerLinks in this process.
            ("grpc.use_local_subchannel_pool", 1),
        ]

    def _dial_loop(self, peer_id: str, generation: int) -> None:
        with self._lock:
            credentials = grpc.ssl_channel_credentials(root_certificates=self._ca_cert_pem,
                                                       private_key=self._tls_key_pem,
                                                       certificate_chain=self._tls_cert_pem)
            channel = grpc.secure_channel(self._peer_addresses[peer_id], credentials,
                                          options=self._channel_options(peer_id))
            self._channels.append(channel)

        def current() -> bool:
            return not self._stopping.is_set() and generation == self._tls_generation

        open_stream = channel.stream_stream(STREAM_METHOD, request_serializer=None, response_deserializer=None)
        while current():
            if self._wait_ready(channel, current):
                try:
                    self._run_dialed(peer_id, open_stream)
                except Exception:
                    log.exception("node %s, peer %s: dialing failed", self.node_id, peer_id)
            # Between attempts the channel's own 100-500 ms backoff applies; this pause only keeps a
            # peer that refuses the handshake from being redialed in a tight loop.
            self._stopping.wait(random.uniform(0.1, 0.5))
        if not self._stopping.is_set():  # superseded by a TLS reload: its stream was replaced or never made
            with self._lock:
                if channel in self._channels:
                    self._channels.remove(channel)
            channel.close()

    def _wait_ready(self, channel: grpc.Channel, current: Callable[[], bool]) -> bool:
        ready = grpc.channel_ready_future(channel)
        try:
            while current():
                try:
                    ready.result(timeout=0.25)
                    return True
                except grpc.FutureTimeoutError:
                    continue
            return False
        finally:
            ready.cancel()

    def _run_dialed(self, peer_id: str, open_stream: grpc.StreamStreamMultiCallable[bytes, bytes]) -> None:
        voter = self._voters[peer_id]
        stream = _Stream(peer_id, self.limits)
        if not self._register(stream):
            return
        nonce = os.urandom(NONCE_LEN)
        hello = PeerFrame(hello=sign_hello(self._signer, self.cluster_id, self.node_id, peer_id, nonce))
        hello_bytes = hello.SerializeToString()

        def requests() -> Iterator[bytes]:
            yield hello_bytes
            yield from self._outbound_bytes(stream)

        call: Any = open_stream(requests())
        stream.cancel = lambda _reason: call.cancel()
        if stream.closed:  # stop() ran before the call existed
            call.cancel()
            return
        watchdog = threading.Timer(self.limits.handshake_timeout_s, call.cancel)
        watchdog.daemon = True
        watchdog.start()
        try:
            raw: bytes | None = next(call, None)
        except grpc.RpcError as exc:
            raw, why = None, _describe(exc)
        else:
            why = "no hello reply"
        finally:
            watchdog.cancel()
        reply: PeerHello | None = None
        if raw is not None:
            reply, why = self._check_reply(raw, voter, nonce)
        if reply is None:
            self._close(stream, f"handshake failed: {why}")
            return
        # Queued ahead of every Raft frame: the server installs the stream only once this verifies.
        stream.outbound.put(PeerFrame(hello=sign_hello(self._signer, self.cluster_id, self.node_id, peer_id,
                                                       nonce, echo_nonce=reply.nonce)))
        if not self._install(stream):
            self._close(stream, "node stopping", logging.DEBUG)
            return
        reason = "peer ended the stream"
        try:
            for raw in call:
                if not self._on_raw(stream, raw):
                    return
        except grpc.RpcError as exc:
            reason = f"stream failed: {_describe(exc)}"
        self._close(stream, reason, logging.INFO)

    def _check_reply(self, raw: bytes, voter: Voter, nonce: bytes) -> tuple[PeerHello | None, str]:
        """The server's verified hello reply, or None and why not."""
        # grpc Python never shows a client the server's certificate, so the pin cannot be checked on
        # this side: the server's signed reply, echoing our fresh nonce, is what proves who it is.
        if len(raw) > self.limits.max_frame_bytes:
            return None, "oversized hello reply"
        try:
            frame = PeerFrame.FromString(raw)
        except DecodeError:
            return None, "hello reply is not a PeerFrame"
        if frame.WhichOneof("kind") != "hello":
            return None, "a frame before the hello reply"
        why = check_hello(frame.hello, cluster_id=self.cluster_id, speaker=voter, listener=self.node_id,
                          echo_nonce=nonce)
        return (None, why) if why else (frame.hello, "")


def _client_cert(context: grpc.ServicerContext) -> str:
    auth = cast(Mapping[str, Sequence[bytes]], context.auth_context())
    pems = list(auth.get("x509_pem_cert") or ())
    try:
        return cert_summary(pems[0]) if pems else "(none)"
    except ValueError:
        return "(unreadable)"


def _grpc_message_limit(limits: LinkLimits) -> int:
    """grpc's own hard bound, above ours: frames in between are refused by our check, which logs the
    reason; grpc ends a stream carrying anything larger without telling us why."""
    return 2 * limits.max_frame_bytes


def _describe(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    details = getattr(exc, "details", None)
    if callable(code) and callable(details):
        try:
            return f"{code().name}: {details()}"
        except Exception:  # not every grpc error carries a status
            pass
    return type(exc).__name__
