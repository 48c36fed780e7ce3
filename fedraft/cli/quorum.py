"""`scripts/quorum-status` and `fedraft quorum-status` (SPEC §8): is there a quorum, and who is up.

Asks every endpoint for its Status at once (each within --timeout), signed when a key is at hand
(more fields: DB usage, peers' last contact), unsigned otherwise, and for the pools' GPUs with a STALE
List from any node that answered. Works with the leader dead and with one node answering: the summary
trusts what the answering nodes say about the others (a node in contact with a majority says so).

Exit codes: 0 healthy, 1 degraded (a voter down, in lockdown or failing, but a quorum), 2 no quorum,
3 unreachable (no node answered), 64 usage (bad arguments, profile, key or CA file).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXIT_HEALTHY, EXIT_DEGRADED, EXIT_NO_QUORUM, EXIT_UNREACHABLE, EXIT_USAGE = 0, 1, 2, 3, 64
STATES = {EXIT_HEALTHY: "healthy", EXIT_DEGRADED: "degraded", EXIT_NO_QUORUM: "no quorum",
          EXIT_UNREACHABLE: "unreachable"}
COLUMNS = ("NODE", "ADDRESS", "ROLE", "TERM", "COMMIT", "APPLIED", "LAG", "LAST_CONTACT", "DB USED/MAP", "GPUS",
           "VERSION", "ERRORS")
DEFAULT_TIMEOUT_S = 2.0
DESCRIPTION = """Show whether the federation has a quorum and the state of every voter node.

One summary line (leader, term, voters up/total, quorum, failure tolerance), then a table:
NODE | ADDRESS | ROLE | TERM | COMMIT | APPLIED | LAG | LAST_CONTACT | DB USED/MAP | GPUS | VERSION | ERRORS.
LAG is how many entries a node's applied index is behind the most advanced answering node;
LAST_CONTACT the freshest contact another answering node reports with it (signed Status only);
GPUS the healthy/total GPUs of the node's pool. Without a key (--endpoints and --ca only) Status is
asked unsigned: DB usage, last contact and GPUs stay empty."""
EPILOG = """examples:
  scripts/quorum-status --profile fed/admins/hq.profile.toml
  FEDRAFT_PROFILE=fed/admins/hq.profile.toml scripts/quorum-status -o json
  scripts/quorum-status --endpoints 10.0.0.1:7400,10.0.0.2:7410 --ca fed/ca/ca.pem --timeout 1

exit codes:
  0   healthy: every voter up, a quorum
  1   degraded: a quorum, but a voter is down, cut off (lockdown) or failing
  2   no quorum: writes are refused
  3   unreachable: no node answered
  64  usage: bad arguments, profile, key or CA file"""


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise UsageError(message)


@dataclass
class Probe:
    """One endpoint's answer."""

    endpoint: str
    status: Any | None = None   # fedraft.v1.StatusResponse
    signed: bool = False
    errors: list[str] = field(default_factory=list)
    rtt_ms: float | None = None


@dataclass
class Target:
    endpoints: tuple[str, ...]
    ca_pem: bytes
    identity: Any | None        # fedraft.crypto.signing.Identity; None: unsigned
    cluster_id: bytes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fedraft.cli.common import add_target_args

    parser.add_argument("-o", "--output", choices=("table", "json"), default="table",
                        help="table (default; plain text when piped) or json for scripts")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                        help=f"seconds to wait for each node (default {DEFAULT_TIMEOUT_S:g})")
    add_target_args(parser)


def resolve(args: argparse.Namespace) -> Target:
    """The profile / $FEDRAFT_PROFILE / flags (fedraft.cli.common.resolve_target); without a key,
    --endpoints and --ca suffice for unsigned Status."""
    from fedraft.cli.common import _parse_endpoints, resolve_target
    from fedraft.crypto.keyfile import load_private_key
    from fedraft.errors import CallerError

    try:
        profile = resolve_target(args)
    except CallerError:
        if args.endpoints is None or args.ca is None or args.key is not None:
            raise
        return Target(_parse_endpoints(args.endpoints), _read(args.ca, "CA certificate"), None, b"\0" * 32)
    return Target(profile.endpoints, _read(profile.ca_cert, "CA certificate"), load_private_key(profile.key_path),
                  profile.cluster_id)


def _read(path: Path, what: str) -> bytes:
    from fedraft.errors import ConfigError

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror}") from None
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise ConfigError(f"{what} {path} is not a PEM certificate", hint="pass the federation's ca/ca.pem")
    return data


def probe(target: Target, timeout: float) -> tuple[list[Probe], list[Any]]:
    """Every endpoint's Status (in parallel), then the pools (STALE List) from one that answered."""
    import grpc

    from fedraft._proto.fedraft.v1 import api_pb2 as api
    from fedraft.client import Client
    from fedraft.crypto.signing import Identity

    identity = target.identity if target.identity is not None else Identity.generate()
    client = Client(target.endpoints, identity, target.ca_pem, target.cluster_id, timeout=timeout,
                    attempt_timeout=timeout)

    def one(endpoint: str) -> Probe:
        p = Probe(endpoint)
        started = time.monotonic()
        signed = target.identity is not None
        try:
            try:
                p.status = client.status(endpoint, signed=signed, timeout=timeout)
                p.signed = signed
            except grpc.RpcError as exc:
                if not signed or exc.code() != grpc.StatusCode.UNAUTHENTICATED:
                    raise
                p.errors.append(f"signed Status refused ({exc.details()}); unsigned fields only")
                p.status = client.status(endpoint, signed=False, timeout=timeout)
            p.rtt_ms = round((time.monotonic() - started) * 1000, 1)
        except grpc.RpcError as exc:
            p.errors.append(f"{exc.code().name}: {exc.details()}")
        return p

    try:
        with ThreadPoolExecutor(max_workers=max(1, len(target.endpoints))) as pool:
            probes = list(pool.map(one, target.endpoints))
        pools: list[Any] = []
        if target.identity is not None:
            request = api.ListRequest(collection="pools", limit=1000, consistency=api.STALE).SerializeToString()
            for p in probes:
                if p.status is None or not p.signed:
                    continue
                try:
                    response = api.ListResponse()
                    response.ParseFromString(client.call(p.endpoint, "List", request, timeout=timeout))
                    pools = list(response.pools)
                    break
                except grpc.RpcError:
                    continue
        return probes, pools
    finally:
        client.close()


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _ms(ms: int | None) -> str:
    if ms is None:
        return ""
    return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def summarize(probes: Sequence[Probe], pools: Sequence[Any] = ()) -> dict[str, Any]:
    """The report (summary and one row per node) and its exit code; pure, from what the nodes said."""
    answered: list[Any] = [p for p in probes if p.status is not None]
    statuses: list[Any] = [p.status for p in answered]
    # who is who: answering nodes name themselves, signed ones name their peers' API addresses
    names: dict[str, str] = {p.endpoint: p.status.node_id for p in answered}
    peer_rows: dict[str, str] = {}
    freshest: dict[str, int] = {}
    connected: set[str] = set()
    for status in statuses:
        for peer in status.peers:
            if peer.address:
                peer_rows.setdefault(peer.node_id, peer.address)
            if peer.last_contact_ms or peer.connected:
                ms = int(peer.last_contact_ms)
                freshest[peer.node_id] = min(freshest.get(peer.node_id, ms), ms)
            if peer.connected and not status.lockdown:
                connected.add(peer.node_id)
    by_address = {addr: node for node, addr in peer_rows.items()}
    for p in probes:
        if p.endpoint not in names and p.endpoint in by_address:
            names[p.endpoint] = by_address[p.endpoint]
    total = max([int(s.voters) for s in statuses if s.voters] or [len(probes)])
    majority = total // 2 + 1
    up_nodes = {s.node_id for s in statuses} | connected
    up = min(total, len(up_nodes))
    # SPEC D11: a node not in lockdown heard a majority of voters (itself included) within raftMaxTimeout
    quorum = any(not s.lockdown for s in statuses)
    leaders = [s for s in statuses if s.role == "leader" and not s.lockdown]
    leader = max(leaders, key=lambda s: s.term) if leaders else None
    if leader is None:  # the leader did not answer: what do the nodes in quorum believe?
        believed = {s.leader_id for s in statuses if s.leader_id and not s.lockdown}
        leader_name = next(iter(believed)) + " (did not answer)" if len(believed) == 1 else ""
    else:
        leader_name = leader.node_id
    term = max((int(s.term) for s in statuses), default=0)
    most_applied = max((int(s.applied_index) for s in statuses), default=0)
    from fedraft.wire.placement import gpu_units

    gpus = {pool.id: gpu_units(pool) for pool in pools}

    rows: list[dict[str, Any]] = []
    trouble = False
    for p in probes:
        s = p.status
        node = names.get(p.endpoint, "")
        errors = list(p.errors)
        row: dict[str, Any] = {"node": node or "?", "address": p.endpoint, "role": "unreachable", "term": None,
                               "commit": None, "applied": None, "lag": None,
                               "last_contact_ms": freshest.get(node) if node else None, "db_used_bytes": None,
                               "db_map_bytes": None, "pool": "", "gpus_healthy": None, "gpus_total": None,
                               "version": "", "rtt_ms": p.rtt_ms, "signed": p.signed}
        if s is not None:
            row.update(role=s.role, term=s.term, commit=s.commit_index, applied=s.applied_index,
                       lag=most_applied - s.applied_index, version=s.version, pool=s.pool)
            if p.signed:
                row.update(db_used_bytes=s.db_used_bytes, db_map_bytes=s.db_map_bytes)
            if s.lockdown:
                errors.append("lockdown: cut off from the quorum")
            if s.pool in gpus:
                row["gpus_healthy"], row["gpus_total"] = gpus[s.pool]
        if errors:
            trouble = True
        row["errors"] = errors
        rows.append(row)
    seen_nodes = {r["node"] for r in rows}
    for node, address in sorted(peer_rows.items()):  # voters not among the endpoints asked
        if node not in seen_nodes and node not in names.values():
            rows.append({"node": node, "address": address, "role": "not asked", "term": None, "commit": None,
                         "applied": None, "lag": None, "last_contact_ms": freshest.get(node), "db_used_bytes": None,
                         "db_map_bytes": None, "pool": "", "gpus_healthy": None, "gpus_total": None, "version": "",
                         "rtt_ms": None, "signed": False,
                         "errors": ["not in the endpoints asked" + ("" if node in connected else "; not connected")]})

    if not answered:
        code = EXIT_UNREACHABLE
    elif not quorum:
        code = EXIT_NO_QUORUM
    elif up < total or trouble:
        code = EXIT_DEGRADED
    else:
        code = EXIT_HEALTHY
    summary = {"state": STATES[code], "exit_code": code, "leader": leader_name, "term": term,
               "voters_up": up if answered else 0, "voters_total": total, "quorum": quorum,
               "failure_tolerance": max(0, up - majority) if quorum else 0,
               "answered": len(answered), "asked": len(probes),
               "signed": any(p.signed for p in answered)}
    return {"summary": summary, "nodes": rows}


def summary_line(summary: dict[str, Any]) -> str:
    leader = summary["leader"] or "none (election in progress or no quorum)"
    return (f"{summary['state'].upper()}: leader {leader}, term {summary['term']}, "
            f"voters up {summary['voters_up']}/{summary['voters_total']}, "
            f"quorum {'yes' if summary['quorum'] else 'no'}, failure tolerance {summary['failure_tolerance']}")


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    out = []
    for r in report["nodes"]:
        db = f"{_size(r['db_used_bytes'])}/{_size(r['db_map_bytes'])}" if r["db_map_bytes"] else ""
        gpus = f"{r['gpus_healthy']}/{r['gpus_total']}" if r["gpus_total"] is not None else ""
        out.append([r["node"], r["address"], r["role"], _cell(r["term"]), _cell(r["commit"]), _cell(r["applied"]),
                    _cell(r["lag"]), _ms(r["last_contact_ms"]), db, gpus, r["version"], "; ".join(r["errors"])])
    return out


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def run(args: argparse.Namespace) -> int:
    """Probe, print and return the exit code (FedraftError and UsageError propagate)."""
    from fedraft.cli.common import emit_json, print_table

    if not args.timeout > 0:
        raise UsageError("--timeout must be more than 0 seconds")
    target = resolve(args)
    probes, pools = probe(target, args.timeout)
    report = summarize(probes, pools)
    if args.output == "json":
        emit_json(report)
    else:
        print(summary_line(report["summary"]))
        print_table(COLUMNS, table_rows(report))
    return int(report["summary"]["exit_code"])


def build_parser(prog: str = "quorum-status") -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return parser


def _usage(message: str, hint: str = "") -> int:
    from fedraft.cli.common import print_error

    print_error(message, hint)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None, prog: str = "quorum-status") -> int:
    """The script's entry point: exit codes as in SPEC §8 (64 for every usage problem)."""
    from fedraft.errors import FedraftError

    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
        return run(args)
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        return _usage(str(exc))
    except FedraftError as exc:
        return _usage(exc.message, exc.hint)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_DEGRADED


# --- `fedraft quorum-status` --------------------------------------------------------------------------

def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from fedraft.cli.common import add_command

    p = add_command(subparsers, "quorum-status", func=_verb, help="quorum, leader and every voter's state at a glance",
                    description=DESCRIPTION, example=EPILOG.split("\n\n")[0].removeprefix("examples:\n  ")
                    .replace("scripts/quorum-status", "fedraft quorum-status").replace("\n  ", "\n"))
    p.epilog = (p.epilog or "") + "\n\n" + EPILOG.split("\n\n", 1)[1]
    add_arguments(p)

    def error(message: str) -> Any:  # usage errors exit 64 here too (2 means "no quorum")
        p.print_usage(sys.stderr)
        sys.exit(_usage(message))

    p.error = error  # type: ignore[method-assign]
    p.set_defaults(usage_error=error)  # fedraft's main calls it for options it did not recognize


def _verb(args: argparse.Namespace) -> int:
    from fedraft.errors import FedraftError

    try:
        return run(args)
    except UsageError as exc:
        return _usage(str(exc))
    except FedraftError as exc:
        return _usage(exc.message, exc.hint)
