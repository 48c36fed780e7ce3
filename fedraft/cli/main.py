"""The `fedraft` command line: builds the parser from the command modules and turns errors into exit codes.

Each module in COMMAND_MODULES has `register(subparsers)` and sets `func` on its parsers (see
fedraft.cli.common); add a module to the list to add its commands.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Sequence

from fedraft import __version__
from fedraft.cli.common import (
    EXIT_CODES_HELP,
    EXIT_FAILURE,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    HelpFormatter,
    print_error,
)
from fedraft.errors import CallerError, ConfigError, FedraftError

COMMAND_MODULES: list[str] = [
    "fedraft.cli.keys",
    "fedraft.cli.node_cmd",
    "fedraft.cli.demo_cmd",
    "fedraft.cli.registry_cmd",
    "fedraft.cli.profile_cmd",
    "fedraft.cli.workload_cmd",
    "fedraft.cli.failover_cmd",
    "fedraft.cli.pool_cmd",
    "fedraft.cli.pair_cmd",
    "fedraft.cli.audit_cmd",
    "fedraft.cli.catalog_cmd",
    "fedraft.cli.governance_cmd",
    "fedraft.cli.approvals_cmd",
    "fedraft.cli.memory_cmd",
    "fedraft.cli.fanout_cmd",
    "fedraft.cli.recover_cmd",
    "fedraft.cli.watch_cmd",
    "fedraft.cli.quorum",
    "fedraft.cli.log_cmd",
    "fedraft.cli.tls_cmd",
]

EXAMPLES = """examples:
  fedraft init --dir ./fed                      write a local 3-node federation
  fedraft keygen --out alice.key --label alice  make an identity key
  fedraft <command> --help                      options and an example for each command"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedraft",
        description="fedraft: the control plane of a federation of compute pools, on a signed, replicated Raft log.",
        epilog=f"{EXAMPLES}\n\n{EXIT_CODES_HELP}",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fedraft {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of errors")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def _report(exc: FedraftError, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print_error(exc.message, exc.hint)
    return EXIT_USAGE if isinstance(exc, ConfigError | CallerError) else EXIT_FAILURE


def _grpc_error(exc: Exception) -> str | None:
    """`CODE: details` when `exc` is a gRPC call error (grpc is imported only by commands that use it)."""
    grpc = sys.modules.get("grpc")
    if grpc is None or not isinstance(exc, grpc.RpcError) or not hasattr(exc, "code"):
        return None
    return f"{exc.code().name}: {exc.details()}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:  # a command may report usage errors its own way (quorum-status exits 64)
        getattr(args, "usage_error", parser.error)(f"unrecognized arguments: {' '.join(extras)}")
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    debug = bool(getattr(args, "debug", False))
    try:
        code = func(args)
        sys.stdout.flush()
        return int(code) if code is not None else EXIT_OK
    except FedraftError as exc:
        return _report(exc, debug)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`fedraft ... | head`): stop quietly, without a second error at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except Exception as exc:
        rpc = _grpc_error(exc)
        if rpc is not None:  # a node unreachable or refusing: the command failed, not a bug
            if debug:
                traceback.print_exc()
            print_error(rpc)
            return EXIT_FAILURE
        traceback.print_exc()
        print("error: internal error (a bug); please report it with the traceback above", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
