"""Alert hooks (SPEC §8): each new incident of this node is delivered to a webhook and/or a program.

Delivery is level-triggered from the incident journal, on threads of its own, never on the tick
thread: each sink keeps a cursor (the last incident seq it delivered) in the node's local store and
delivers every later incident in order. A webhook gets an HTTP POST of the JSON document (2 s timeout);
a program gets it on stdin (10 s timeout, exit status 0 means delivered). A failure is retried with
exponential backoff (1 s, 2 s, 4 s, ... up to 60 s); after MAX_ATTEMPTS the incident is skipped with an
error in the log, so one bad incident cannot block the ones after it. A sink that has never run starts
at the current end of the journal; a restarted node delivers what it raised while a sink was failing
(at most MAX_BACKLOG incidents, the latest).

The document: {"source": "fedraft", "cluster_id": hex, "node": id, "incident": <the journal record>}.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedraft.storage.local import INCIDENTS, LocalStore

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_S = 2.0
EXEC_TIMEOUT_S = 10.0
MAX_ATTEMPTS = 8
MAX_BACKOFF_S = 60.0
MAX_BACKLOG = 100


@dataclass(frozen=True)
class AlertTargets:
    webhook: str | None = None
    exec_path: Path | None = None


def post_webhook(url: str, document: bytes) -> None:
    request = urllib.request.Request(url, data=document, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "fedraft-alerts"})
    with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as response:  # the operator's own URL
        if not 200 <= response.status < 300:
            raise OSError(f"webhook answered HTTP {response.status}")


def run_program(path: Path, document: bytes) -> None:
    done = subprocess.run([str(path)], input=document, capture_output=True, timeout=EXEC_TIMEOUT_S, check=False)
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip()[-300:]
        raise OSError(f"{path} exited with status {done.returncode}: {tail}")


class _Sink:
    def __init__(self, name: str, deliver: Callable[[bytes], None], dispatcher: AlertDispatcher) -> None:
        self.name = name
        self.deliver = deliver
        self.d = dispatcher
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"fedraft-alert-{name}", daemon=True)

    @property
    def cursor_name(self) -> str:
        return f"alert_cursor/{self.name}"

    def _run(self) -> None:
        local = self.d.local
        cursor = local.meta_int(self.cursor_name)
        if cursor is None:
            cursor = local.count(INCIDENTS)
            local.set_meta_int(self.cursor_name, cursor)
        while not self.d.stopping.is_set():
            backlog = local.records(INCIDENTS, after_seq=cursor)
            if len(backlog) > MAX_BACKLOG:
                log.error("alerts (%s): %d undelivered incidents; delivering the latest %d", self.name,
                          len(backlog), MAX_BACKLOG)
                backlog = backlog[-MAX_BACKLOG:]
            for record in backlog:
                if self.d.stopping.is_set():
                    return
                self._deliver_one(record)
                cursor = int(record.get("seq", cursor + 1))
                local.set_meta_int(self.cursor_name, cursor)
            self.wake.wait(5.0)
            self.wake.clear()

    def _deliver_one(self, record: dict[str, Any]) -> None:
        document = json.dumps({"source": "fedraft", "cluster_id": self.d.cluster_id.hex(), "node": self.d.node_id,
                               "incident": record}, sort_keys=True).encode()
        backoff = 1.0
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                self.deliver(document)
                return
            except (OSError, urllib.error.URLError, subprocess.SubprocessError, ValueError) as exc:
                if attempt == MAX_ATTEMPTS:
                    log.error("alerts (%s): incident %s not delivered after %d attempts, skipped: %s",
                              self.name, record.get("seq"), attempt, exc)
                    return
                log.warning("alerts (%s): incident %s not delivered (%s); retrying in %.0f s",
                            self.name, record.get("seq"), exc, backoff)
            if self.d.stopping.wait(backoff * self.d.backoff_scale):
                return
            backoff = min(backoff * 2, MAX_BACKOFF_S)


class AlertDispatcher:
    """Delivers incidents to the configured sinks; `notify()` after an incident was written."""

    def __init__(self, local: LocalStore, targets: AlertTargets, *, node_id: str, cluster_id: bytes,
                 backoff_scale: float = 1.0) -> None:
        self.local = local
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.backoff_scale = backoff_scale
        self.stopping = threading.Event()
        self.sinks: list[_Sink] = []
        if targets.webhook:
            url = targets.webhook
            self.sinks.append(_Sink("webhook", lambda doc: post_webhook(url, doc), self))
        if targets.exec_path is not None:
            path = targets.exec_path
            self.sinks.append(_Sink("exec", lambda doc: run_program(path, doc), self))

    def start(self) -> None:
        for sink in self.sinks:
            sink.thread.start()

    def notify(self) -> None:
        for sink in self.sinks:
            sink.wake.set()

    def stop(self, timeout: float = 3.0) -> None:
        self.stopping.set()
        self.notify()
        for sink in self.sinks:
            if sink.thread.is_alive():
                sink.thread.join(timeout)
