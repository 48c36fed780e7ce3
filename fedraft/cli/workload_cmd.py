"""`fedraft submit|cancel|workloads|explain|migrate`: workloads from an operator's seat (SPEC §7).

Submitting is one signed Submit: the scheduler runs inside apply, so the answer already says where the
workload went (pool, worker, GPUs) or that it is pending and why. `explain` renders the compact
explanation the federation stored with the workload's last decision, and its move history.
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
    emit_json,
    emit_table,
    print_error,
    wants_json,
)
from fedraft.cli.placement_common import (
    SINT32,
    TRUST_CHOICES,
    UINT32_MAX,
    connect,
    find_workload,
    integer,
    name,
    names,
    refused,
    timestamp,
    trust,
    workload_not_found,
)
from fedraft.domain.outcome import Code
from fedraft.domain.placement.commands import MAX_GPUS_PER_WORKLOAD
from fedraft.domain.placement.model import Phase
from fedraft.errors import CallerError

AMOUNT_MAX = 2**40  # MiB or millicores: far above any machine, well inside uint64
PHASES = tuple(p.value for p in Phase)
NOT_FOUND_HINT = "`fedraft workloads` lists the workloads"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        subparsers, "submit", func=submit,
        help="submit a workload; prints where it was placed, or why it is pending",
        description="Submit a workload to the federation. The scheduler runs inside the replicated log, so the\n"
                    "answer says where it was placed (pool, worker, GPUs) or that it is pending and why.\n"
                    "Your own pool always trusts you; other pools only when paired at --min-trust or above.\n"
                    "Exit 0 when the federation accepted it, placed or pending.",
        example="fedraft submit train-llm --gpus 8 --gpu-mem 80000 --cpu 32000 --ram 262144 --priority 10\n"
                "fedraft submit etl-nightly --gpus 0 --cpu 4000 --ram 16384 --label ssd --exclude cpu-branch\n"
                "fedraft submit infer-7b --gpus 1 --min-trust high --region dc-east --model llama-7b -o json",
    )
    p.add_argument("workload_id", metavar="WORKLOAD_ID", help="a new id: 1-63 of a-z 0-9 . _ -")
    p.add_argument("--gpus", metavar="N", help=f"GPUs on one worker (0..{MAX_GPUS_PER_WORKLOAD}; default 0: CPU only)")
    p.add_argument("--gpu-mem", metavar="MB", help="memory floor per GPU in MiB (default 0: any GPU)")
    p.add_argument("--cpu", metavar="MILLIS", help="CPU in millicores (1000 = one core)")
    p.add_argument("--ram", metavar="MB", help="RAM in MiB")
    p.add_argument("--priority", metavar="P", help="higher wins; may preempt lower priority work (default 0)")
    p.add_argument("--min-trust", metavar="LEVEL", default="standard",
                   help=f"least trust a pool other than yours must have: {', '.join(TRUST_CHOICES)} "
                        "(default standard)")
    p.add_argument("--label", action="append", metavar="L", help="a label the pool must have (repeat, or a,b)")
    p.add_argument("--exclude", action="append", metavar="POOL", help="a pool not to use (repeat, or a,b)")
    p.add_argument("--region", metavar="R", default="", help="preferred region (scored, not required)")
    p.add_argument("--model", metavar="NAME", default="", help="catalog model: pools with a replica score higher")
    p.add_argument("--max-latency", metavar="MS", help="at most this latency from your region (policy table)")
    p.add_argument("--mig-profile", metavar="PROFILE", default="",
                   help="only MIG instances of this profile, e.g. 1g.10gb (default: any unit, whole or MIG)")
    _common(p)

    p = add_command(subparsers, "cancel", func=cancel, help="cancel a workload (its resources are freed)",
                    example="fedraft cancel train-llm\nfedraft cancel train-llm -o json")
    p.add_argument("workload_id", metavar="WORKLOAD_ID")
    _common(p)

    p = add_command(
        subparsers, "workloads", func=workloads, help="list the workloads and where they run",
        description="List the workloads: phase, pool, worker, GPUs, home pool, submitter, priority, moves\n"
                    "and the reason of the last change (why it is pending, failed or cancelled).",
        example="fedraft workloads\nfedraft workloads --phase pending\nfedraft workloads --pool gpu-dc -o json",
    )
    p.add_argument("--phase", metavar="PHASE", help=f"only this phase: {', '.join(PHASES)}")
    p.add_argument("--pool", metavar="POOL", help="only workloads placed on this pool")
    _common(p)

    p = add_command(
        subparsers, "explain", func=explain, help="why a workload is where it is (or pending)",
        description="Show the explanation stored with the workload's last placement decision: per pool the\n"
                    "filter that refused it, or its score parts; then the workload's move history.",
        example="fedraft explain train-llm\nfedraft explain train-llm -o json",
    )
    p.add_argument("workload_id", metavar="WORKLOAD_ID")
    _common(p)

    p = add_command(
        subparsers, "migrate", func=migrate, help="move a placed workload to another pool",
        description="Move a placed workload. With --to the scheduler must fit it on that pool; without, on\n"
                    "any pool but its current one. Refused (exit 1) when nothing fits.",
        example="fedraft migrate train-llm --to gpu-dc\nfedraft migrate train-llm",
    )
    p.add_argument("workload_id", metavar="WORKLOAD_ID")
    p.add_argument("--to", metavar="POOL", default="", help="the pool to move to (default: the scheduler picks)")
    _common(p)


def _common(p: argparse.ArgumentParser) -> None:
    add_target_args(p)
    add_output_arg(p)


# --- records as dicts ------------------------------------------------------------------------------

def _spec_doc(s: Any) -> dict[str, Any]:
    return {"gpus": s.gpus, "gpu_memory_mb": s.gpu_memory_mb, "cpu_millis": s.cpu_millis, "ram_mb": s.ram_mb,
            "priority": s.priority, "min_trust": s.min_trust or "standard", "labels": list(s.labels),
            "exclude_pools": list(s.exclude_pools), "preferred_region": s.preferred_region, "model": s.model,
            "max_latency_ms": s.max_latency_ms, "mig_profile": s.mig_profile}


def _move_doc(m: Any) -> dict[str, Any]:
    return {"at_ms": m.at_ms, "at": timestamp(m.at_ms), "index": m.index, "from_pool": m.from_pool,
            "to_pool": m.to_pool, "reason": m.reason}


def _workload_doc(w: Any) -> dict[str, Any]:
    placed = w.HasField("placement")
    return {"id": w.id, "phase": w.phase, "pool": w.placement.pool if placed else "",
            "worker": w.placement.worker if placed else "", "gpu_ids": list(w.placement.gpus) if placed else [],
            "home_pool": w.home_pool, "submitter_pool": w.submitter_pool, "submitted_index": w.submitted_index,
            "placed_ms": w.placed_ms, "reason": w.reason, "spec": _spec_doc(w.spec),
            "moves": [_move_doc(m) for m in w.moves]}


def _workload_row(w: Any) -> dict[str, Any]:
    placed = w.HasField("placement")
    return {"id": w.id, "phase": w.phase, "pool": w.placement.pool if placed else "",
            "worker": w.placement.worker if placed else "", "gpus": w.spec.gpus, "home": w.home_pool,
            "submitter": w.submitter_pool, "priority": w.spec.priority, "moves": len(w.moves), "reason": w.reason}


# --- submit ----------------------------------------------------------------------------------------

def _spec(args: argparse.Namespace) -> Any:
    from fedraft.domain.placement.model import WorkloadSpec

    return WorkloadSpec(
        gpus=integer(args.gpus, "--gpus", 0, MAX_GPUS_PER_WORKLOAD),
        gpu_memory_mb=integer(args.gpu_mem, "--gpu-mem", 0, AMOUNT_MAX),
        cpu_millis=integer(args.cpu, "--cpu", 0, AMOUNT_MAX),
        ram_mb=integer(args.ram, "--ram", 0, AMOUNT_MAX),
        priority=integer(args.priority, "--priority", *SINT32),
        min_trust=trust(args.min_trust, "--min-trust"),
        labels=names("label", args.label, "--label"),
        exclude_pools=names("pool", args.exclude, "--exclude"),
        preferred_region=name("preferred region", args.region, "--region") if args.region else "",
        model=name("model", args.model, "--model") if args.model else "",
        max_latency_ms=integer(args.max_latency, "--max-latency", 0, UINT32_MAX),
        mig_profile=args.mig_profile,
    )


def submit(args: argparse.Namespace) -> int:
    from fedraft.domain.placement.commands import Submit, static_problem

    workload_id = name("workload id", args.workload_id)
    spec = _spec(args)
    problem = static_problem(Submit(workload_id, spec))  # the federation's own check, before signing
    if problem is not None:
        raise CallerError(problem, hint="see `fedraft submit --help`")
    with connect(args) as client:
        result = client.submit(workload_id, spec, check=False)
        if result.code != 0:
            return refused(result, {Code.ALREADY_EXISTS: f"choose another id; `fedraft explain {workload_id}` "
                                                         "shows the existing workload"})
        pr = result.placement
        why: list[str] = []
        if pr.phase == Phase.PENDING.value:
            record = find_workload(client, workload_id)
            why = _refusals(record.explanation) if record is not None else []
    doc = {"ok": True, "index": result.index, "workload_id": pr.workload_id or workload_id, "phase": pr.phase,
           "pool": pr.pool, "worker": pr.worker, "gpus": list(pr.gpus), "preempted": list(pr.preempted),
           "reason": result.message if pr.phase == Phase.PENDING.value else ""}
    if pr.pool:
        gpus = f", GPUs {', '.join(pr.gpus)}" if pr.gpus else ""
        lines = [f"{workload_id} {pr.phase} on pool {pr.pool}, worker {pr.worker}{gpus} (index {result.index})"]
        if pr.preempted:
            lines.append(f"preempted (back to pending): {', '.join(pr.preempted)}")
    else:
        lines = [f"{workload_id} is {pr.phase}: {result.message or 'no pool fits'} (index {result.index})",
                 *(f"  {line}" for line in why)]
    emit(args, doc, "\n".join(lines))
    return EXIT_OK


def _refusals(explanation: bytes) -> list[str]:
    """The refusing filters of a stored explanation, one line each (empty if it does not decode)."""
    from fedraft.domain.scheduler.explain import decode_explanation, render

    try:
        e = decode_explanation(explanation)
    except ValueError:
        return []
    return [line for line in render(e) if line.startswith("refused by")]


# --- cancel, migrate -------------------------------------------------------------------------------

def cancel(args: argparse.Namespace) -> int:
    workload_id = name("workload id", args.workload_id)
    with connect(args) as client:
        result = client.cancel(workload_id, check=False)
    if result.code != 0:
        return refused(result, {Code.NOT_FOUND: NOT_FOUND_HINT})
    doc = {"ok": True, "index": result.index, "workload_id": workload_id, "phase": result.placement.phase}
    emit(args, doc, f"{workload_id} {result.placement.phase or 'cancelled'} (index {result.index})")
    return EXIT_OK


def migrate(args: argparse.Namespace) -> int:
    workload_id = name("workload id", args.workload_id)
    to_pool = name("pool", args.to, "--to") if args.to else ""
    with connect(args) as client:
        result = client.migrate(workload_id, to_pool, check=False)
    if result.code != 0:
        return refused(result, {Code.NOT_FOUND: NOT_FOUND_HINT,
                                Code.RESOURCE_EXHAUSTED: "`fedraft pools` shows the free GPUs of each pool",
                                Code.FAILED_PRECONDITION: "only a placed or running workload moves"})
    pr = result.placement
    doc = {"ok": True, "index": result.index, "workload_id": workload_id, "phase": pr.phase, "pool": pr.pool,
           "worker": pr.worker, "gpus": list(pr.gpus)}
    gpus = f", GPUs {', '.join(pr.gpus)}" if pr.gpus else ""
    emit(args, doc, f"{workload_id} moved to pool {pr.pool}, worker {pr.worker}{gpus} ({pr.phase}, "
                    f"index {result.index})")
    return EXIT_OK


# --- workloads, explain ----------------------------------------------------------------------------

def workloads(args: argparse.Namespace) -> int:
    phase = args.phase.lower() if args.phase else None
    if phase is not None and phase not in PHASES:
        raise CallerError(f"--phase: unknown phase {args.phase!r} (one of: {', '.join(PHASES)})")
    pool = name("pool", args.pool, "--pool") if args.pool else None
    with connect(args) as client:
        records = client.list("workloads")
    selected = [w for w in records if (phase is None or w.phase == phase)
                and (pool is None or (w.HasField("placement") and w.placement.pool == pool))]
    if wants_json(args):
        emit_json([_workload_doc(w) for w in selected])
    else:
        emit_table(args, [_workload_row(w) for w in selected],
                   title=f"fedraft workloads ({len(selected)} of {len(records)})")
    return EXIT_OK


def explain(args: argparse.Namespace) -> int:
    from fedraft.domain.scheduler.explain import Explanation, decode_explanation, render

    workload_id = name("workload id", args.workload_id)
    with connect(args) as client:
        w = find_workload(client, workload_id)
    if w is None:
        return workload_not_found(workload_id)
    try:
        e = decode_explanation(w.explanation)
        problem = ""
    except ValueError as exc:
        e, problem = Explanation(), str(exc)
    doc = _workload_doc(w)
    doc["explanation"] = _explanation_doc(e) if not problem else {"error": problem}
    if wants_json(args):
        emit_json(doc)
        return EXIT_OK
    where = f" on {doc['pool']} worker {doc['worker']}" if doc["pool"] else ""
    lines = [f"workload {w.id}: {w.phase}{where}; submitted by {w.submitter_pool}"
             + (f", home {w.home_pool}" if w.home_pool else "") + (f"; {w.reason}" if w.reason else ""),
             "", "last decision:"]
    if problem:
        print_error(f"the stored explanation does not decode: {problem}")
    lines.extend(f"  {line}" for line in render(e))
    lines.extend(["", "moves:" if w.moves else "moves: none"])
    lines.extend(f"  {timestamp(m.at_ms)} index {m.index}: {m.from_pool or '-'} -> {m.to_pool or '-'} ({m.reason})"
                 for m in w.moves)
    print("\n".join(lines))
    return EXIT_OK


def _explanation_doc(e: Any) -> dict[str, Any]:
    from fedraft.domain.scheduler.rank import PARTS

    return {
        "note": e.note, "chosen": e.chosen, "worker": e.worker, "gpus": list(e.gpus),
        "weights": dict(zip(PARTS, e.weights, strict=False)),
        "scored": [{"pool": s.pool, "total": s.total, "parts": dict(zip(PARTS, s.parts, strict=False))}
                   for s in e.scored],
        "refused": [{"filter": r.filter, "count": r.count,
                     "examples": [{"pool": p, "reason": why} for p, why in r.examples]} for r in e.refused],
        "unranked": e.unranked, "preempted": list(e.preempted), "preempted_total": e.preempted_total,
    }
