"""This node's signatures over the log's checkpoints (SPEC §4), proposed through the leader.

Apply records a checkpoint (chain head, state digest) every policy.checkpoint_interval indexes.
The cosigner is level-triggered from that state (SPEC D14): it wakes when entries are applied, looks
for checkpoints this node has not cosigned, signs each with its node key (context fedraft/v1/cosign)
and proposes a Cosign with the request id sha256(node_id || "cosign" || index)[:16] (D13) through
the API of whichever node leads, like the pool agent. A retry sends the same signed envelope until it
expires, so a restart or a lost answer never cosigns twice (apply ignores a second one anyway).

It signs only checkpoints this node applied itself: those at or below `floor`, the index of the
snapshot it started from or installed since, arrived inside a snapshot and are left to the nodes
that computed them. A node never signs a digest it did not compute.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.client import Client
from fedraft.crypto.checkpoint import cosign_request_id, sign_checkpoint
from fedraft.crypto.envelopes import build_envelope
from fedraft.crypto.signing import Signer
from fedraft.domain.commands import Cosign
from fedraft.domain.outcome import Code
from fedraft.storage import checkpoint_schema
from fedraft.storage.state import StateStore

log = logging.getLogger(__name__)

VALIDITY_MS = 120_000
RETRY_S = 2.0
MIN_ROUND_S = 0.25  # rounds at most this often: a checkpoint comes every policy.checkpoint_interval entries


class Cosigner:
    def __init__(self, client: Client, store: StateStore, node_id: str, signer: Signer, cluster_id: bytes, *,
                 floor: int = 0, wall_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> None:
        self.client = client
        self.store = store
        self.node_id = node_id
        self.signer = signer
        self.cluster_id = cluster_id
        self.floor = floor
        self.wall_ms = wall_ms
        self.signed = 0  # Cosigns this process saw applied (for tests and status)
        self._scan_from = floor + 1  # every checkpoint below it is cosigned by us or not ours to sign
        self._installs_seen = store.installs  # the state's snapshot installs that `floor` accounts for
        self._envelopes: dict[int, pb.Signed] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"fedraft-cosigner-{node_id}", daemon=True)

    # ----- engine listeners (tick thread: never block) -----
    def on_applied(self, _applied: object) -> None:
        self._wake.set()

    def on_snapshot(self, _first: int, last: int) -> None:
        """Checkpoints up to `last` arrived by snapshot: not computed here, not signed here."""
        self.floor = max(self.floor, last)
        self._installs_seen = self.store.installs  # after the floor: a round seeing this sees the floor
        self._wake.set()

    # ----- thread -----
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(RETRY_S)
            # Applied entries wake it; coalesce them so a busy log costs a few rounds per second, not one
            # read transaction per entry (decision 0018).
            self._stop.wait(MIN_ROUND_S)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.round()
            except Exception:  # never lose the thread: the next round looks again
                log.exception("cosigner round failed")

    def due(self) -> list[pb.CheckpointRecord]:
        """Checkpoints past the floor that this node has not cosigned, oldest first."""
        with self.store.read() as st:
            if self.store.installs != self._installs_seen:
                # A snapshot replaced the state and its listener has not raised the floor yet: what is
                # past the old floor may have come with it, computed elsewhere. The listener wakes us.
                return []
            start = max(self._scan_from, self.floor + 1)
            records = list(checkpoint_schema.records(st, start))
        todo = [r for r in records if not any(s.node_id == self.node_id for s in r.cosignatures)]
        # Everything before the first open one is done: do not scan it again.
        self._scan_from = todo[0].index if todo else (records[-1].index + 1 if records else start)
        return todo

    def round(self) -> int:
        """Propose the due Cosigns; returns how many were applied as accepted."""
        done = 0
        for record in self.due()[:8]:
            if self._stop.is_set():
                break
            result = self._propose(record)
            if result is None or result.code in (Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED):
                break  # no leader now, or the entry did not make it: the next round retries
            if result.code == Code.OK:
                done += 1
                self.signed += 1
                self._envelopes.pop(record.index, None)
            else:
                # Refused for good (this node's digest differs: it diverged, or was not a voter): say
                # so loudly once, and do not sign that checkpoint again.
                log.critical("cosign of checkpoint %d refused: %s", record.index, result.message)
                self._envelopes.pop(record.index, None)
                self._scan_from = max(self._scan_from, record.index + 1)
        return done

    def _propose(self, record: pb.CheckpointRecord) -> pb.Result | None:
        now = self.wall_ms()
        env = self._envelopes.get(record.index)
        if env is not None and pb.Envelope.FromString(env.body).expires_at_ms <= now + 5_000:
            env = None  # about to expire: a new window, same request id
        if env is None:
            head, digest = bytes(record.chain_head), bytes(record.state_digest)
            command = Cosign(record.index, head, digest,
                             sign_checkpoint(self.signer, self.cluster_id, record.index, head, digest))
            env = build_envelope(self.signer, self.cluster_id, command, now_ms=now, validity_ms=VALIDITY_MS,
                                 request_id=cosign_request_id(self.node_id, record.index))
            self._envelopes[record.index] = env
        try:
            [result] = self.client.propose_signed([env])
        except Exception as exc:  # Unavailable, a refusal of the request itself: retry next round
            log.info("cosign of checkpoint %d not delivered (%s); retrying", record.index, exc)
            return None
        if result.code == Code.INVALID_ARGUMENT and "reused" in result.message:
            # An earlier window of this request was applied: that one counts.
            return pb.Result(code=int(Code.OK), message=result.message)
        return result
