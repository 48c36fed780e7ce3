"""Conventions every `fedraft` command shares: subcommand parsers, output (table/json), exit codes, targets.

A command module exposes `register(subparsers)`; it adds its parsers (`add_command` gives each one the
shared --debug flag and an example epilog) and sets `func`, a function `(args) -> int` returning the
exit code. It raises FedraftError for anything the operator should read; main turns that into one
`error:` line and an exit code. Output goes through `emit`, `emit_table`, `print_table` and
`print_fields`: rich on a terminal, plain aligned text when piped, JSON with `-o json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fedraft.config import Profile, load_genesis, load_node_config, load_profile
from fedraft.errors import CallerError, ConfigError

EXIT_OK = 0
EXIT_FAILURE = 1  # the command ran and failed: unavailable, refused, a peer's fault
EXIT_USAGE = 2  # the caller's mistake: bad arguments, config, profile or key file
EXIT_INTERNAL = 70  # a bug (EX_SOFTWARE): the traceback is printed
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """exit codes:
  0   success
  1   the command failed (no quorum, refused by the federation, a peer's fault)
  2   usage or configuration error (bad arguments, missing or malformed file)
  4   not found (get)
  70  internal error (a bug: please report it with the traceback)
  130 interrupted (Ctrl-C)"""

PROFILE_ENV = "FEDRAFT_PROFILE"

Handler = Callable[[argparse.Namespace], int]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of descriptions and examples."""


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, *, help: str,
                func: Handler, example: str, description: str = "") -> argparse.ArgumentParser:
    """Add a subcommand with the shared conventions; `example` is shown under "example:" in --help."""
    parser = subparsers.add_parser(name, help=help, description=description or help,
                                   epilog="example:\n" + "\n".join(f"  {line}" for line in example.splitlines()),
                                   formatter_class=HelpFormatter)
    # SUPPRESS keeps `fedraft --debug CMD` working: the subparser does not overwrite the top-level value.
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of errors")
    parser.set_defaults(func=func)
    return parser


def add_output_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table",
                        help="table (default; plain text when piped) or json for scripts")


def wants_json(args: argparse.Namespace) -> bool:
    return getattr(args, "output", "table") == "json"


def is_terminal() -> bool:
    return sys.stdout.isatty()


def emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def emit(args: argparse.Namespace, doc: Any, text: str) -> None:
    """`doc` as JSON with -o json, else `text` (nothing if empty)."""
    if wants_json(args):
        emit_json(doc)
    elif text:
        print(text)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def emit_table(args: argparse.Namespace, rows: Sequence[dict[str, Any]], *, title: str = "") -> None:
    """Rows of dicts: a JSON list with -o json, else a table whose columns are the keys in first-seen order."""
    if wants_json(args):
        emit_json(list(rows))
        return
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    print_table(columns, [[_cell(row.get(c)) for c in columns] for row in rows], title=title)


def print_error(message: str, hint: str = "") -> None:
    """The one-line error format of every command (stderr)."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    if hint:
        print(f"hint: {' '.join(hint.split())}", file=sys.stderr)


def fail_result(result: Any) -> int:
    """Report a non-OK apply result (fedraft.v1.Result: code, message) and return the exit code."""
    from fedraft.domain.outcome import Code

    code = int(result.code)
    name = Code(code).name if code in Code._value2member_map_ else f"code {code}"
    print_error(f"{name}: {result.message}" if result.message else name)
    return EXIT_FAILURE


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str = "") -> None:
    """A rich table on a terminal; plain columns (two spaces apart, header in capitals) when piped."""
    cells = [[_cell(v) for v in row] for row in rows]
    if is_terminal():
        from rich.console import Console
        from rich.table import Table

        table = Table(*columns, title=title or None, title_justify="left")
        for row in cells:
            table.add_row(*row)
        Console().print(table)
        return
    if title:
        print(title)
    header = [c.upper() for c in columns]
    widths = [max(len(r[i]) for r in [header, *cells]) for i in range(len(columns))]
    for row in [header, *cells]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def print_fields(fields: Sequence[tuple[str, Any]], *, title: str = "") -> None:
    """Key/value lines: `name: value`."""
    if title:
        print(title)
    width = max((len(k) for k, _ in fields), default=0)
    for key, value in fields:
        print(f"{key + ':':<{width + 1}} {value}")


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# --- target resolution for client commands --------------------------------------------------------

def add_target_args(parser: argparse.ArgumentParser) -> None:
    """Options that say which federation to talk to and with which key; see `resolve_target`."""
    group = parser.add_argument_group("target", f"which federation and key (default: ${PROFILE_ENV})")
    group.add_argument("--profile", type=Path, metavar="FILE",
                       help=f"client profile written by `fedraft init` (default: ${PROFILE_ENV})")
    group.add_argument("--endpoints", metavar="HOST:PORT,...", help="API endpoints, comma-separated")
    group.add_argument("--key", type=Path, metavar="FILE", help="private key to sign with")
    group.add_argument("--ca", type=Path, metavar="FILE", help="federation CA certificate")
    group.add_argument("--cluster-id", metavar="HEX", help="cluster id (sha256 of genesis.json)")
    group.add_argument("--config", type=Path, metavar="NODE.toml",
                       help="on a node's host: use that node's API address, CA, node key and genesis")


def _parse_endpoints(text: str) -> tuple[str, ...]:
    endpoints = tuple(e.strip() for e in text.split(",") if e.strip())
    if not endpoints:
        raise CallerError("--endpoints is empty", hint="pass host:port[,host:port...]")
    for e in endpoints:
        host, sep, port = e.rpartition(":")
        if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            raise CallerError(f"--endpoints: {e!r} is not a host:port address")
    return endpoints


def _parse_cluster_id(text: str) -> bytes:
    try:
        cluster_id = bytes.fromhex(text)
    except ValueError:
        cluster_id = b""
    if len(cluster_id) != 32:
        raise CallerError(f"--cluster-id {text!r} is not 64 hex digits (32 bytes)")
    return cluster_id


def _connectable(address: str) -> str:
    """A node listening on every interface is reached on loopback from its own host."""
    host, _, port = address.rpartition(":")
    if host in ("0.0.0.0", ""):
        return f"127.0.0.1:{port}"
    if host in ("[::]", "::"):
        return f"[::1]:{port}"
    return address


def _profile_from_node_config(path: Path) -> Profile:
    cfg = load_node_config(path)
    genesis = load_genesis(cfg.genesis_path)
    # This node first, then the others ([api_peers]), so writes from a follower's host find the leader.
    endpoints = (_connectable(cfg.api_listen), *(p.address for p in cfg.api_peers))
    return Profile(path=cfg.path, name=cfg.node_id, endpoints=endpoints,
                   ca_cert=cfg.ca_cert, key_path=cfg.key_path, cluster_id=genesis.cluster_id)


def resolve_target(args: argparse.Namespace) -> Profile:
    """The client profile a command uses: --config, else --profile / $FEDRAFT_PROFILE, else the explicit
    flags; explicit flags (--endpoints, --key, --ca, --cluster-id) override what the profile says."""
    config: Path | None = getattr(args, "config", None)
    profile_path: Path | None = getattr(args, "profile", None)
    if config is not None and profile_path is not None:
        raise CallerError("pass either --config or --profile, not both")
    endpoints_text: str | None = getattr(args, "endpoints", None)
    key: Path | None = getattr(args, "key", None)
    ca: Path | None = getattr(args, "ca", None)
    cluster_hex: str | None = getattr(args, "cluster_id", None)

    base: Profile | None = None
    if config is not None:
        base = _profile_from_node_config(config)
    elif profile_path is not None:
        base = load_profile(profile_path)
    elif os.environ.get(PROFILE_ENV):
        env_path = Path(os.environ[PROFILE_ENV])
        try:
            base = load_profile(env_path)
        except ConfigError as exc:
            raise ConfigError(f"{exc.message} (from ${PROFILE_ENV})", hint=exc.hint) from None

    if base is None:
        if endpoints_text is None and key is None and ca is None:
            raise CallerError(f"no target: pass --profile, set {PROFILE_ENV}, or pass --endpoints/--key/--ca")
        if endpoints_text is None or key is None or ca is None or cluster_hex is None:
            missing = [flag for flag, value in (("--endpoints", endpoints_text), ("--key", key), ("--ca", ca),
                                                ("--cluster-id", cluster_hex)) if value is None]
            raise CallerError(f"incomplete target: missing {', '.join(missing)}",
                              hint="--endpoints, --key, --ca and --cluster-id go together; or use --profile")
        return Profile(path=Path(), name="command line", endpoints=_parse_endpoints(endpoints_text), ca_cert=ca,
                       key_path=key, cluster_id=_parse_cluster_id(cluster_hex))

    return Profile(
        path=base.path,
        name=base.name,
        endpoints=_parse_endpoints(endpoints_text) if endpoints_text is not None else base.endpoints,
        ca_cert=ca if ca is not None else base.ca_cert,
        key_path=key if key is not None else base.key_path,
        cluster_id=_parse_cluster_id(cluster_hex) if cluster_hex is not None else base.cluster_id,
    )
