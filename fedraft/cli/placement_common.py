"""What the placement and pairing commands share: argument checks, refused results, record lookups.

Not a command module (it registers nothing). Values are checked here, in the command's handler, so a
bad value is one `error:` line with exit 2, the same message the federation would give.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fedraft.cli.common import fail_result, print_error, resolve_target
from fedraft.domain.outcome import Code
from fedraft.domain.placement.commands import name_problem
from fedraft.domain.placement.model import Trust
from fedraft.errors import CallerError

if TYPE_CHECKING:
    from fedraft.client import Client

NOT_FOUND_EXIT = 4  # as `fedraft get`
TRUST_CHOICES = ("standard", "high", "max")
UINT32_MAX = 2**32 - 1
SINT32 = (-(2**31), 2**31 - 1)
PERMISSION_HINT = "`fedraft profile` shows which key signs; that key's role or pool may not do this"
DEFAULT_HINTS: dict[int, str] = {Code.PERMISSION_DENIED: PERMISSION_HINT}


def connect(args: argparse.Namespace) -> Client:
    from fedraft.client import Client

    return Client.from_profile(resolve_target(args))


def name(what: str, value: str, flag: str = "") -> str:
    """`value` if it is a valid pool / workload / label name, else a CallerError naming the flag."""
    problem = name_problem(what, value)
    if problem is not None:
        raise CallerError(f"{flag + ': ' if flag else ''}{problem}")
    return value


def names(what: str, values: Iterable[str] | None, flag: str) -> tuple[str, ...]:
    """Repeated and comma-separated values, checked, sorted and without repeats (the wire wants them so)."""
    items = {v.strip() for text in values or () for v in text.split(",") if v.strip()}
    return tuple(sorted(name(what, v, flag) for v in items))


def integer(text: str | None, flag: str, low: int, high: int, *, default: int = 0) -> int:
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise CallerError(f"{flag}: {text!r} is not a whole number") from None
    if not low <= value <= high:
        raise CallerError(f"{flag} {value} is out of range ({low}..{high})")
    return value


def trust(text: str, flag: str) -> Trust:
    if text.lower() not in TRUST_CHOICES:
        raise CallerError(f"{flag}: unknown trust level {text!r} (one of: {', '.join(TRUST_CHOICES)})")
    return Trust.parse(text)


def refused(result: Any, hints: Mapping[int, str] | None = None) -> int:
    """Report a non-OK result on one line (common.fail_result) and a hint for its code; NOT_FOUND exits 4."""
    exit_code = fail_result(result)
    code = int(result.code)
    hint = {**DEFAULT_HINTS, **(hints or {})}.get(code, "")
    if hint:
        print(f"hint: {' '.join(hint.split())}", file=sys.stderr)
    return NOT_FOUND_EXIT if code == Code.NOT_FOUND else exit_code


def workload_not_found(workload_id: str) -> int:
    print_error(f"workload {workload_id} not found", "`fedraft workloads` lists the workloads")
    return NOT_FOUND_EXIT


def find_workload(client: Client, workload_id: str) -> Any | None:
    """The stored record of one workload (linearizable), or None."""
    return next((w for w in client.list("workloads", prefix=workload_id) if w.id == workload_id), None)


def effective_now(client: Client) -> int | None:
    """The federation's effective time (SPEC D6) as the first answering node knows it; None if unknown."""
    import grpc

    for endpoint in client.endpoints:
        try:
            now = client.status(endpoint, timeout=2.0).effective_time_ms
        except grpc.RpcError:
            continue
        return int(now) or None
    return None


def age(now_ms: int | None, then_ms: int) -> str:
    """`12s`, `4m05s`, `2h10m` between two effective times; "" when either is unknown."""
    if now_ms is None or not then_ms:
        return ""
    seconds = max(0, now_ms - then_ms) // 1000
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def timestamp(ms: int) -> str:
    """An effective time (about wall-clock milliseconds, SPEC D6) as UTC ISO 8601."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if ms else ""
