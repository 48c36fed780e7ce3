"""`fedraft pair offer|accept` and `fedraft pairings`: reciprocal pairing between pools (SPEC §5).

A pairing is active once both halves are in the log: an admin of one pool offers it at a trust level,
an admin of the other pool accepts. Until then no pool trusts another (zero default trust), so only a
submitter's own pool can run its work.
"""

from __future__ import annotations

import argparse
from typing import Any

from fedraft.cli.common import (
    EXIT_OK,
    add_command,
    add_output_arg,
    add_target_args,
    emit,
    emit_table,
)
from fedraft.cli.placement_common import TRUST_CHOICES, connect, name, refused, trust
from fedraft.domain.outcome import Code
from fedraft.errors import CallerError

LIST_HINT = "`fedraft pairings` shows the pairings and standing offers"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pair = add_command(
        subparsers, "pair", func=_no_action, help="pair your pool with another: offer, then the other accepts",
        description="Pair two pools. An admin of your pool offers a trust level; an admin of the other pool\n"
                    "accepts; the pairing is active once both halves are in the log. The profile's key says\n"
                    "which pool is yours.",
        example="fedraft pair offer gpu-dc --trust high --profile fed/admins/hq.profile.toml\n"
                "fedraft pair accept hq --profile fed/admins/gpu-dc.profile.toml",
    )
    actions = pair.add_subparsers(title="actions", metavar="ACTION")
    p = add_command(actions, "offer", func=offer, help="offer a pairing to another pool at a trust level",
                    example="fedraft pair offer gpu-dc --trust high\nfedraft pair offer cpu-branch --trust standard")
    p.add_argument("pool", metavar="POOL", help="the pool to pair with")
    p.add_argument("--trust", required=True, metavar="LEVEL",
                   help=f"how far that pool is trusted with your work: {', '.join(TRUST_CHOICES)}")
    _common(p)
    p = add_command(actions, "accept", func=accept, help="accept the standing offer of another pool",
                    example="fedraft pair accept hq\nfedraft pair accept hq -o json")
    p.add_argument("pool", metavar="POOL", help="the pool that made the offer")
    _common(p)

    p = add_command(subparsers, "pairings", func=pairings, help="list the pairings and standing offers",
                    example="fedraft pairings\nfedraft pairings -o json")
    _common(p)


def _common(p: argparse.ArgumentParser) -> None:
    add_target_args(p)
    add_output_arg(p)


def _no_action(args: argparse.Namespace) -> int:
    raise CallerError("fedraft pair: say offer or accept",
                      hint="fedraft pair offer POOL --trust LEVEL; fedraft pair accept POOL")


def offer(args: argparse.Namespace) -> int:
    pool = name("pool", args.pool)
    level = trust(args.trust, "--trust")
    with connect(args) as client:
        result = client.pair_offer(pool, level, check=False)
    if result.code != 0:
        return refused(result, {Code.NOT_FOUND: "`fedraft pools` lists the registered pools",
                                Code.ALREADY_EXISTS: LIST_HINT})
    state = result.governance.state or "offered"
    emit(args, {"ok": True, "index": result.index, "to_pool": pool, "trust": level.label, "state": state},
         f"offered {pool} a pairing at trust {level.label} (index {result.index}): {state} until an admin of "
         f"{pool} runs `fedraft pair accept <your pool>`")
    return EXIT_OK


def accept(args: argparse.Namespace) -> int:
    pool = name("pool", args.pool)
    with connect(args) as client:
        result = client.pair_accept(pool, check=False)
    if result.code != 0:
        return refused(result, {Code.FAILED_PRECONDITION: f"an admin of {pool} offers first: "
                                                          "`fedraft pair offer <your pool> --trust LEVEL`",
                                Code.ALREADY_EXISTS: LIST_HINT})
    state = result.governance.state or "active"
    emit(args, {"ok": True, "index": result.index, "from_pool": pool, "state": state},
         f"pairing with {pool} is {state} (index {result.index})")
    return EXIT_OK


def _row(p: Any) -> dict[str, Any]:
    return {"pool_a": p.pool_a, "pool_b": p.pool_b, "trust": p.trust, "state": "active" if p.active else "offered",
            "offered_by": p.offered_by}


def pairings(args: argparse.Namespace) -> int:
    with connect(args) as client:
        records = client.list("pairings")
    emit_table(args, [_row(p) for p in records], title="fedraft pairings")
    return EXIT_OK
