"""The pool agent: keeps the federation told that a pool is alive and what it has (SPEC §5, D7).

Every voter node runs one for its own pool, and a member pool runs one as `fedraft agent`. Every
heartbeat interval it sends PoolHeartbeat, or ReportInventory (which also counts as a heartbeat)
when the inventory's fingerprint changed since the last accepted report. It signs with the pool's
node or agent key and goes through the API like any client, so it follows the leader.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from fedraft.client import Client, RequestFailed, ResultError
from fedraft.domain.placement.commands import ReportInventory
from fedraft.errors import FedraftError
from fedraft.inventory.base import InventoryError, InventorySource
from fedraft.inventory.fingerprint import fingerprint

log = logging.getLogger(__name__)

HEARTBEAT_S = 10.0
RETRY_S = 1.0
STOP_WAIT_S = 2.0  # how long stop() waits for a beat in flight


@dataclass(frozen=True)
class PoolIdentity:
    pool: str
    region: str = ""
    tier: str = ""
    labels: tuple[str, ...] = ()


class PoolAgent:
    def __init__(self, client: Client, identity: PoolIdentity, inventory: InventorySource,
                 interval_s: float = HEARTBEAT_S) -> None:
        self.client = client
        self.identity = identity
        self.inventory = inventory
        self.interval_s = interval_s
        self._reported: bytes | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"fedraft-agent-{self.identity.pool}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop beating. A report still in flight is not waited for long: closing the client cancels it
        (its outcome is unknown, the next agent start reports again)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=STOP_WAIT_S)

    def run(self) -> None:
        while not self._stop.is_set():
            delivered = self.beat()
            # Undelivered (no leader yet, an election): try again soon rather than a full interval later.
            self._stop.wait(self.interval_s if delivered else min(self.interval_s, RETRY_S))

    def beat(self) -> bool:
        """One round: report the inventory if it changed, else a heartbeat. Never raises; True if delivered."""
        try:
            inv = self.inventory.read()
        except InventoryError as exc:
            log.warning("inventory of pool %s does not read (%s); sending a heartbeat only", self.identity.pool, exc)
            inv = None
        current = fingerprint(inv) if inv is not None else None
        try:
            if inv is not None and current != self._reported:
                i = self.identity
                self.client.report_inventory(ReportInventory(i.pool, inv, i.region, i.tier, i.labels))
                self._reported = current
                log.info("pool %s: reported inventory (%d workers, %d healthy GPUs)", i.pool, len(inv.workers),
                         inv.gpu_count)
            else:
                self.client.heartbeat(self.identity.pool)
            self.sent += 1
            return True
        except ResultError as exc:
            log.warning("pool %s: the federation refused the report: %s", self.identity.pool, exc)
            return True
        except (RequestFailed, FedraftError) as exc:
            log.info("pool %s: heartbeat not delivered (%s); retrying", self.identity.pool, exc)
        except Exception:  # the agent thread must survive anything
            log.exception("pool %s: heartbeat failed", self.identity.pool)
        return False
