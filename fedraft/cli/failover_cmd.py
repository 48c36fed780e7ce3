"""`fedraft failover simulate|status`: what would move if a pool or GPU failed, and what is failed now.

`simulate` asks a node to run the real apply code on an overlay of its state (the Simulate call,
docs/decisions/0011-gpu-faults-and-mig.md): nothing is proposed. By default the leader answers after
a read barrier; `--stale` lets the node of the profile's first endpoint answer from its applied state.

`status` reads the pools and workloads: pools DOWN, flapping or draining with their clocks, GPU units
waiting out a fault, and the work away from its pool because of a failover, a drain or a GPU fault.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from fedraft.cli.common import EXIT_OK, add_command, add_output_arg, add_target_args, emit_json, wants_json
from fedraft.cli.placement_common import connect, name, timestamp
from fedraft.errors import CallerError

# move reasons that mean "not where it was because something failed or was drained"
FAILOVER_REASONS = ("failover", "gpu-fault", "drain")
FLAP_EVENTS = 2  # fedraft.domain.placement.health.FLAP_EVENTS


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    failover = add_command(
        subparsers, "failover", func=_usage, help="what-if of a pool or GPU failure; current failovers",
        description="simulate: what the orchestrator would do if a pool went down, were drained or a GPU\n"
                    "failed, computed by a node with the real apply code on a copy of its state (nothing is\n"
                    "proposed). status: current failovers, their reasons and the hysteresis clocks.",
        example="fedraft failover simulate gpu-dc\nfedraft failover simulate --drain gpu-dc\n"
                "fedraft failover simulate --gpu GPU-5e0c...\nfedraft failover status",
    )
    actions = failover.add_subparsers(title="actions", metavar="ACTION")
    p = add_command(
        actions, "simulate", func=simulate, help="what would move, and where, if POOL (or --drain/--gpu) failed",
        example="fedraft failover simulate gpu-dc\nfedraft failover simulate --drain gpu-dc -o json\n"
                "fedraft failover simulate --gpu MIG-4f1a... --stale",
    )
    p.add_argument("pool", nargs="?", metavar="POOL", help="the pool that goes down")
    p.add_argument("--drain", metavar="POOL", help="the pool being drained (its drain end, now)")
    p.add_argument("--gpu", metavar="UUID", help="the GPU or MIG instance that fails")
    p.add_argument("--stale", action="store_true", help="any node answers from its applied state (no leader)")
    add_target_args(p)
    add_output_arg(p)
    p = add_command(actions, "status", func=status, help="pools down, flapping or draining; failed GPUs; moved work",
                    example="fedraft failover status\nfedraft failover status -o json")
    add_target_args(p)
    add_output_arg(p)


def _usage(args: argparse.Namespace) -> int:
    raise CallerError("failover needs an action: simulate or status", hint="fedraft failover --help")


def _scenario(args: argparse.Namespace) -> tuple[str, str]:
    given = [(kind, value) for kind, value in (("pool", args.pool), ("drain", args.drain), ("gpu", args.gpu))
             if value]
    if len(given) != 1:
        raise CallerError("name exactly one of POOL, --drain POOL or --gpu UUID")
    kind, value = given[0]
    if kind == "gpu":
        if len(value) > 256 or not value.isascii() or not value.isprintable() or " " in value:
            raise CallerError(f"--gpu: {value[:64]!r} is not a GPU UUID")
        return kind, value
    return kind, name("pool", value, "--drain" if kind == "drain" else "")


def _placement(p: Any, present: bool) -> str:
    if not present:
        return "-"
    gpus = f" [{','.join(p.gpus)}]" if p.gpus else ""
    return f"{p.pool}/{p.worker}{gpus}"


def simulate(args: argparse.Namespace) -> int:
    kind, target = _scenario(args)
    with connect(args) as client:
        found = client.simulate(kind, target, stale=args.stale)
    changes = [{
        "workload": x.workload_id, "phase_before": x.phase_before,
        "from": _placement(x.before, x.HasField("before")), "phase": x.phase,
        "to": _placement(x.after, x.HasField("after")), "move": x.reason or "stays", "why": x.detail,
    } for x in found.changes]
    if wants_json(args):
        emit_json({"scenario": found.scenario, "applied_index": found.applied_index, "at_index": found.at_index,
                   "effective_ms": found.effective_ms, "served_by": found.served_by, "changes": changes})
        return EXIT_OK
    moved = sum(1 for x in found.changes if x.reason and x.phase != "pending")
    pending = sum(1 for x in found.changes if x.phase == "pending")
    print(f"what if {found.scenario}: {moved} move, {pending} pending "
          f"(state at index {found.applied_index} on {found.served_by}, applied as {found.at_index}; "
          f"nothing was proposed)")
    if not changes:
        print("nothing would change")
    for row in changes:
        print(f"  {row['workload']}: {row['phase_before'] or '-'} {row['from']} -> {row['phase']} {row['to']}"
              f"  ({row['move']}{': ' + row['why'] if row['why'] else ''})")
    return EXIT_OK


def _in(ms: int, now_ms: int) -> str:
    left = (ms - now_ms) // 1000
    return f"{timestamp(ms)} (in {left}s)" if left > 0 else f"{timestamp(ms)} (due)"


def status(args: argparse.Namespace) -> int:
    with connect(args) as client:
        pools = client.list("pools")
        workloads = client.list("workloads")
        policy = client.list("policy")
    hysteresis, drain_ms, window = 300_000, 60_000, 60_000
    if policy:  # none stored: SPEC's defaults hold
        hysteresis = policy[0].hysteresis_ms or hysteresis
        drain_ms = policy[0].drain_ms or drain_ms
        window = policy[0].return_window_ms or window
    now = int(time.time() * 1000)
    pool_rows = []
    gpu_rows = []
    by_id = {p.id: p for p in pools}
    for p in pools:
        flapping = len(p.down_events_ms) >= FLAP_EVENTS
        if p.health == "down" or flapping or p.HasField("drain_started_ms"):
            clock = ""
            if p.HasField("drain_started_ms"):
                clock = f"drain ends {_in(p.drain_started_ms + drain_ms, now)}"
            elif p.health == "up" and flapping:
                clock = f"stable, a target again at {_in(p.changed_ms + hysteresis, now)}"
            state = "draining" if p.HasField("drain_started_ms") else ("flapping" if flapping and p.health == "up"
                                                                         else p.health)
            pool_rows.append({"pool": p.id, "state": state, "since": timestamp(p.changed_ms),
                              "down_events": len(p.down_events_ms), "clock": clock})
        for f in p.gpu_faults:
            back = (f"takes work at {_in(f.healthy_since_ms + hysteresis, now)}" if f.HasField("healthy_since_ms")
                    else "failing: needs a healthy report, then the hysteresis")
            gpu_rows.append({"pool": p.id, "worker": f.worker, "gpu": f.uuid, "reason": f.reason,
                             "since": timestamp(f.since_ms), "clock": back})
    work_rows = []
    for w in workloads:
        last = next((m for m in reversed(w.moves) if m.reason != "retry"), None)
        if last is None or last.reason not in FAILOVER_REASONS or w.phase in ("completed", "failed", "cancelled"):
            continue
        where = w.placement.pool if w.HasField("placement") else ""
        clock = ""
        home = by_id.get(w.home_pool)
        if last.reason == "failover" and where and where != w.home_pool and home is not None and home.health == "up":
            clock = f"return window closes {_in(home.changed_ms + window, now)}"
        work_rows.append({"workload": w.id, "phase": w.phase, "from": last.from_pool, "now_on": where or "-",
                          "home": w.home_pool, "reason": last.reason, "at": timestamp(last.at_ms),
                          "why": w.reason, "clock": clock})
    if wants_json(args):
        emit_json({"pools": pool_rows, "gpus": gpu_rows, "workloads": work_rows})
        return EXIT_OK
    for title, rows in (("pools", pool_rows), ("failed GPUs", gpu_rows), ("moved work", work_rows)):
        print(f"{title} ({len(rows)})")
        for row in rows:
            print("  " + "  ".join(f"{k}={v}" for k, v in row.items() if v != ""))
    return EXIT_OK
