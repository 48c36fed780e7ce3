"""`fedraft pools|drain|cordon|uncordon|agent`: the pools, their control, and a member pool's agent.

`pools` joins the pool records with the workloads that hold resources (GPUs booked, load) and with a
node's effective time (heartbeat age). `agent` is what a member pool runs instead of a node: it tells
the federation the pool is alive and what it has (SPEC §5, D7), signed with the pool's key.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from fedraft.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    add_command,
    add_output_arg,
    add_target_args,
    emit,
    emit_json,
    emit_table,
    print_error,
    resolve_target,
    wants_json,
)
from fedraft.cli.placement_common import age, connect, effective_now, name, names, refused
from fedraft.domain.outcome import Code
from fedraft.domain.placement.model import Phase
from fedraft.errors import CallerError

INVENTORY_KINDS = ("auto", "static", "nvml", "none")
HOLDS_RESOURCES = frozenset(p.value for p in Phase if p.holds_resources)
CONTROL = {
    "drain": ("draining", "cordoned; its workloads move to other pools within the drain window "
                          "(`fedraft workloads --pool {pool}` follows them)"),
    "cordon": ("cordoned", "no new placements there; what runs stays (`fedraft uncordon {pool}` reopens it)"),
    "uncordon": ("uncordoned", "open for placements again"),
}
UNREGISTERED_HINT = "`fedraft pools` lists the registered pools"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        subparsers, "pools", func=pools, help="list the pools: health, inventory, GPUs booked, load",
        description="List the pools with their health, region, tier, workers, GPUs (healthy/total), GPUs booked\n"
                    "by workloads holding resources, GPU load (booked/healthy; CPU share for pools without GPUs),\n"
                    "cordon and drain state, and the age of the last heartbeat in effective time.",
        example="fedraft pools\nfedraft pools -o json",
    )
    _common(p)
    for action, (_, what) in CONTROL.items():
        p = add_command(subparsers, action, func=pool_control, help=f"{action} a pool: {what.split(';')[0]}",
                        example=f"fedraft {action} gpu-dc\nfedraft {action} gpu-dc -o json")
        p.add_argument("pool", metavar="POOL")
        p.set_defaults(action=action)
        _common(p)

    p = add_command(
        subparsers, "agent", func=agent, help="run the pool agent of a member pool (heartbeats, inventory)",
        description="Run the agent of a member pool in the foreground: every --interval seconds it sends a\n"
                    "heartbeat, or its inventory when that changed. It signs with the profile's key, which the\n"
                    "federation must know as the pool's node key. Ctrl-C stops it; --once sends one report and\n"
                    "exits 0 if the federation took it, 1 if not.",
        example="fedraft agent --profile edge-1/agent.profile.toml --pool edge-1 --region eu-west --tier gpu\n"
                "fedraft agent --config fed/gpu-dc/node.toml --pool gpu-dc --inventory static \\\n"
                "    --inventory-file fed/gpu-dc/inventory.toml --once",
    )
    p.add_argument("--pool", required=True, metavar="POOL", help="the pool this agent speaks for")
    p.add_argument("--inventory", default="auto", metavar="KIND",
                   help=f"where the inventory comes from: {', '.join(INVENTORY_KINDS)} (default auto: NVML, "
                        "else --inventory-file, else none)")
    p.add_argument("--inventory-file", type=Path, metavar="F", help="static inventory (.toml or .json)")
    p.add_argument("--region", default="", metavar="R", help="the pool's region")
    p.add_argument("--tier", default="", metavar="T", help="the pool's tier: gpu, cpu, hq, ...")
    p.add_argument("--label", action="append", metavar="L", help="a pool label (repeat, or a,b)")
    p.add_argument("--interval", default="10", metavar="S", help="seconds between heartbeats (default 10)")
    p.add_argument("--once", action="store_true", help="send one report and exit")
    _common(p)


def _common(p: argparse.ArgumentParser) -> None:
    add_target_args(p)
    add_output_arg(p)


# --- pools -----------------------------------------------------------------------------------------

def _pool_doc(pool: Any, booked: dict[str, tuple[int, int]], now_ms: int | None) -> dict[str, Any]:
    from fedraft.wire.placement import gpu_units

    healthy, total = gpu_units(pool)
    gpus_booked, cpu_booked = booked.get(pool.id, (0, 0))
    cpu_total = sum(w.cpu_millis for w in pool.workers)
    if healthy:
        load = round(100 * gpus_booked / healthy)
    elif cpu_total:
        load = round(100 * cpu_booked / cpu_total)
    else:
        load = None
    return {
        "pool": pool.id, "health": pool.health, "voter": pool.voter, "region": pool.region, "tier": pool.tier,
        "labels": list(pool.labels), "workers": len(pool.workers), "gpus_healthy": healthy, "gpus_total": total,
        "gpus_booked": gpus_booked, "cpu_millis": cpu_total, "cpu_booked": cpu_booked, "load_pct": load,
        "cordoned": pool.cordoned, "draining": pool.HasField("drain_started_ms"),
        "last_heartbeat_ms": pool.last_heartbeat_ms,
        "heartbeat_age_ms": max(0, now_ms - pool.last_heartbeat_ms) if now_ms and pool.last_heartbeat_ms else None,
        "heartbeat_age": age(now_ms, pool.last_heartbeat_ms),
    }


def _pool_row(doc: dict[str, Any]) -> dict[str, Any]:
    return {"pool": doc["pool"], "health": doc["health"], "voter": doc["voter"], "region": doc["region"],
            "tier": doc["tier"], "workers": doc["workers"], "gpus": f"{doc['gpus_healthy']}/{doc['gpus_total']}",
            "booked": doc["gpus_booked"], "load %": doc["load_pct"], "cordoned": doc["cordoned"],
            "draining": doc["draining"], "heartbeat": doc["heartbeat_age"]}


def pools(args: argparse.Namespace) -> int:
    with connect(args) as client:
        records = client.list("pools")
        booked: dict[str, tuple[int, int]] = {}
        for w in client.list("workloads"):
            if w.phase in HOLDS_RESOURCES and w.HasField("placement"):
                gpus, cpu = booked.get(w.placement.pool, (0, 0))
                booked[w.placement.pool] = (gpus + len(w.placement.gpus), cpu + w.spec.cpu_millis)
        now_ms = effective_now(client)
    docs = [_pool_doc(p, booked, now_ms) for p in records]
    if wants_json(args):
        emit_json(docs)
    else:
        emit_table(args, [_pool_row(d) for d in docs], title="fedraft pools")
    return EXIT_OK


def pool_control(args: argparse.Namespace) -> int:
    pool = name("pool", args.pool)
    done, what = CONTROL[args.action]
    with connect(args) as client:
        result = client.pool_control(pool, args.action, check=False)
    if result.code != 0:
        return refused(result, {Code.NOT_FOUND: UNREGISTERED_HINT,
                                Code.ALREADY_EXISTS: f"`fedraft uncordon {pool}` ends the drain"})
    emit(args, {"ok": True, "index": result.index, "pool": pool, "action": args.action},
         f"{done} {pool}: {what.format(pool=pool)} (index {result.index})")
    return EXIT_OK


# --- agent -----------------------------------------------------------------------------------------

def agent(args: argparse.Namespace) -> int:
    from fedraft.agent import PoolAgent, PoolIdentity
    from fedraft.client import Client
    from fedraft.inventory.select import open_inventory

    identity = PoolIdentity(pool=name("pool", args.pool, "--pool"),
                            region=name("region", args.region, "--region") if args.region else "",
                            tier=name("tier", args.tier, "--tier") if args.tier else "",
                            labels=names("label", args.label, "--label"))
    if args.inventory not in INVENTORY_KINDS:
        raise CallerError(f"--inventory: unknown kind {args.inventory!r} (one of: {', '.join(INVENTORY_KINDS)})")
    try:
        interval = float(args.interval)
    except ValueError:
        interval = 0.0
    if not 0.1 <= interval <= 3600:
        raise CallerError(f"--interval: {args.interval!r} is not a number of seconds in 0.1..3600")
    target = resolve_target(args)
    # A one-shot run shows only what went wrong; a running agent also logs what it reports.
    logging.basicConfig(level=logging.WARNING if args.once else logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s agent {identity.pool} %(levelname)s: %(message)s")
    inventory = open_inventory(args.inventory, args.inventory_file, host=socket.gethostname())
    with Client.from_profile(target) as client:
        # The first report is sent here, so a refusal (wrong key, unknown pool) stops the agent at once.
        result, problem = _first_report(client, identity, inventory)
        if result is not None and result.code != 0:
            return refused(result, {Code.NOT_FOUND: "the pool must be registered first (`fedraft pools`)",
                                    Code.PERMISSION_DENIED: f"the agent signs as pool {identity.pool}'s node: use "
                                                            "that pool's agent key, not an admin profile"})
        if args.once:
            if result is None:
                print_error(f"pool {identity.pool}: report not delivered: {problem}",
                            "check `fedraft status`: a majority of nodes must be up")
                return EXIT_FAILURE
            emit(args, {"ok": True, "pool": identity.pool, "index": result.index},
                 f"pool {identity.pool}: report delivered (index {result.index})")
            return EXIT_OK
        if result is None:
            logging.getLogger("fedraft.agent").warning("first report not delivered (%s); retrying", problem)
        runner = PoolAgent(client, identity, inventory, interval_s=interval)
        stop = threading.Event()
        previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
        # Ctrl-C / SIGINT stops it even when started from a script in the background, whose shell left
        # SIGINT ignored (Python then installs no KeyboardInterrupt handler of its own).
        previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
        if not wants_json(args):
            print(f"fedraft agent for pool {identity.pool}: reporting every {interval:g} s to "
                  f"{', '.join(target.endpoints)} (Ctrl-C stops)", flush=True)
        runner.start()
        try:
            stop.wait()
        finally:  # Ctrl-C raises KeyboardInterrupt here: stop cleanly, main reports it (exit 130)
            runner.stop()
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)
    return EXIT_OK


def _first_report(client: Any, identity: Any, inventory: Any) -> tuple[Any | None, str]:
    """Report the inventory (a heartbeat if it does not read): (the result, "") or (None, why not delivered)."""
    from fedraft.domain.placement.commands import ReportInventory
    from fedraft.errors import FedraftError
    from fedraft.inventory.base import InventoryError

    try:
        inv = inventory.read()
    except InventoryError as exc:
        logging.getLogger("fedraft.agent").warning("inventory does not read (%s); sending a heartbeat only", exc)
        inv = None
    try:
        if inv is None:
            return client.heartbeat(identity.pool, check=False), ""
        return client.report_inventory(ReportInventory(identity.pool, inv, identity.region, identity.tier,
                                                       identity.labels), check=False), ""
    except FedraftError as exc:
        return None, exc.message
