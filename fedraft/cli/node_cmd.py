"""`fedraft node`: run one federation node in the foreground until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

EXAMPLE = """example:
  fedraft node --config fed/hq/node.toml
  fedraft node --config fed/hq/node.toml --rejoin     # after the node's disk was wiped or replaced
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("node", help="run one node of the federation",
                              description="Run one fedraft node (Raft voter, API server) in the foreground. "
                                          "SIGTERM or Ctrl-C shuts it down gracefully; SIGHUP "
                                          "reloads its TLS certificate, key and CA bundle.",
                              epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, type=Path, help="the node's TOML config (written by fedraft init)")
    p.add_argument("--rejoin", action="store_true",
                   help="start with an empty data directory: vote only after hearing the leader (SPEC D5)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fedraft.app import FedraftNode
    from fedraft.config import load_node_config

    cfg = load_node_config(args.config)
    logging.basicConfig(level=getattr(logging, cfg.log_level.upper(), logging.INFO), stream=sys.stderr,
                        format=f"%(asctime)s {cfg.node_id} %(levelname)s %(name)s: %(message)s")
    node = FedraftNode(cfg, rejoin=args.rejoin)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        logging.getLogger("fedraft").info("signal %d: shutting down", signum)
        stop.set()

    def on_reload(_signum: int, _frame: Any) -> None:
        # Certificate or CA rotation (docs/multi-host.md): a bad set is refused and the node keeps the old one.
        from fedraft.errors import FedraftError

        try:
            node.reload_tls()
        except FedraftError as exc:
            logging.getLogger("fedraft").error("SIGHUP: TLS not reloaded: %s%s", exc.message,
                                               f" ({exc.hint})" if exc.hint else "")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_reload)
    node.start()
    print(f"fedraft node {cfg.node_id} serving api on {cfg.api_listen}", flush=True)
    stop.wait()
    node.stop()
    return 0
