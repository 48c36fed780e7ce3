"""Seeded placement workloads whose every decision is hashed: the golden digests in
placement_golden.json were computed from the scheduler before the 2026-11-29 speed-up work
(decision 0005, "Decision-identical speed-ups") and must never change: a faster scheduler has
to decide exactly as the old one did.

Three runs, all fully deterministic (fixed keys, request ids, clock):

- `scheduler_run`: the scheduler alone at a few hundred pools (place + book/release, as the apply
  handler does it): GPU and CPU work, MIG, faulted and unhealthy units, cordon/drain/down pools,
  replicas, spread, latency limits, labels, avoid sets, preemption; every decision's placement,
  victims and encoded explanation are hashed, then the view's fingerprint.
- `apply_run`: signed entries through the real Applier into LMDB: Submits from three pools onto 40
  seeded pools and the three node pools, status reports, cancels, migrations, cordon/drain,
  inventories with failed GPUs (fault failover), Ticks; every entry's results are hashed, then
  the state digest (SPEC D18).

Print the digests of the code in this tree: python -m tests.consensus.placement_golden
"""

from __future__ import annotations

import hashlib
import json
import random
import tempfile
from dataclasses import replace
from pathlib import Path

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.consensus.applier import Applier
from fedraft.crypto.envelopes import build_envelope
from fedraft.crypto.signing import Identity, Signer
from fedraft.domain import commands as c
from fedraft.domain.genesis import FORMAT, encode_genesis, parse_genesis
from fedraft.domain.governance.pairing import Pairing
from fedraft.domain.governance.policy import GovernancePolicy
from fedraft.domain.placement import commands as pc
from fedraft.domain.placement.model import (
    Gpu,
    GpuFault,
    Health,
    Inventory,
    Latency,
    Phase,
    Policy,
    Pool,
    PoolHealth,
    Trust,
    Worker,
    Workload,
    WorkloadSpec,
)
from fedraft.domain.scheduler.explain import encode_explanation
from fedraft.domain.scheduler.stack import place
from fedraft.domain.scheduler.view import FederationView
from fedraft.storage import governance_schema, placement_schema
from fedraft.storage.state import StateStore
from tests.helpers import NODE_IDS, Fed, sign_entry

FIXTURE = Path(__file__).with_name("placement_golden.json")
REGIONS = ("r0", "r1", "r2", "r3")
LATENCIES = (Latency("r0", "r1", 20), Latency("r0", "r2", 80), Latency("r1", "r2", 40), Latency("r2", "r3", 150))
MIG = ("1g.10gb", "3g.40gb")
T0 = 1_800_000_000_000


def _seed(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


# -- the scheduler alone ------------------------------------------------------------------------------


def _pool(i: int, rng: random.Random) -> Pool:
    workers = []
    for w in range(rng.choice((1, 1, 1, 2, 3))):
        units: list[Gpu] = []
        for g in range(rng.choice((0, 4, 8, 8, 8)) if i % 9 else 0):
            uuid = f"GPU-{i:04d}-{w}-{g}"
            if i % 11 == 3 and g < 2:  # a MIG-partitioned card: instances of two profiles
                units += [Gpu(f"MIG-{i:04d}-{w}-{g}-{k}", "A100", 10_240 if k < 3 else 40_960, parent=uuid,
                              profile=MIG[k >= 3]) for k in range(4)]
            else:
                units.append(Gpu(uuid, "A100", rng.choice((24_576, 40_960, 81_920)),
                                 healthy=rng.random() > 0.03, fault="" if rng.random() > 0.03 else "xid 79"))
        workers.append(Worker(f"w{w}", rng.choice((32_000, 64_000)), rng.choice((128_000, 512_000)),
                              tuple(sorted(units, key=lambda u: u.uuid))))
    faults = tuple(GpuFault(f"GPU-{i:04d}-0-7", "w0", "xid 48", T0) for _ in range(1) if i % 13 == 5)
    return Pool(f"pool-{i:04d}", region=REGIONS[i % 4], tier=("gpu", "gpu", "cpu", "edge")[i % 4 if i % 3 else 0],
                labels=("nvlink",) if i % 2 else (), inventory=Inventory(tuple(workers)), gpu_faults=faults,
                status=PoolHealth(health=Health.DOWN if i % 37 == 1 else Health.UP),
                cordoned=i % 41 == 2, drain_started_ms=T0 if i % 43 == 4 else None)


def _spec(rng: random.Random) -> WorkloadSpec:
    kind = rng.randrange(12)
    if kind < 2:
        return WorkloadSpec(cpu_millis=rng.choice((500, 2_000, 8_000)), ram_mb=rng.choice((1_024, 8_192)),
                            priority=rng.randrange(4), preferred_region=rng.choice(("", "r1")))
    if kind == 2:
        return WorkloadSpec(gpus=rng.choice((1, 1, 2)), mig_profile=rng.choice(MIG), cpu_millis=500, ram_mb=1_024,
                            priority=rng.randrange(4))
    gpus = (1, 1, 2, 2, 4, 8, 1, 2, 3)[kind - 3]
    return WorkloadSpec(gpus=gpus, gpu_memory_mb=rng.choice((0, 0, 40_960, 81_920)), cpu_millis=1_000 * gpus,
                        ram_mb=4_096 * gpus, priority=rng.randrange(4),
                        min_trust=Trust.HIGH if rng.random() < 0.1 else Trust.STANDARD,
                        labels=("nvlink",) if rng.random() < 0.15 else (),
                        preferred_region=rng.choice(("", "", "r0", "r2")),
                        model=rng.choice(("", "", "llama")),
                        max_latency_ms=rng.choice((0, 0, 0, 50, 100)),
                        exclude_pools=("pool-0005",) if rng.random() < 0.05 else ())


def scheduler_run(pools: int = 300, submissions: int = 4_000, seed: int = 1) -> dict[str, object]:
    rng = random.Random(seed)
    federation = [_pool(i, rng) for i in range(pools)]
    submitters = [p.id for p in federation[:4]]
    pairings = [(s, p.id, (Trust.STANDARD, Trust.HIGH, Trust.HIGH)[i % 3])
                for s in submitters for i, p in enumerate(federation) if p.id != s and (i + len(s)) % 17]
    view = FederationView.build(federation, (), pairings, [("llama", p.id) for p in federation[::7]])
    policy = Policy(latencies=LATENCIES)
    h = hashlib.sha256()
    live: list[str] = []
    counts = {"placed": 0, "preempting": 0, "evicted": 0, "pending": 0}
    for i in range(submissions):
        index = 10 + i
        spec = _spec(rng)
        w = Workload(f"wl-{i:05d}", spec, rng.choice(submitters), submitted_index=index)
        avoid = frozenset(rng.sample([p.id for p in federation], 3)) if rng.random() < 0.05 else frozenset()
        d = place(view, w, index=index, request_id=_seed("scheduler", seed, i)[:16], policy=policy, avoid=avoid)
        h.update(repr((d.placement, d.preempted)).encode() + encode_explanation(d.explanation))
        if d.placement is not None:
            for victim in d.preempted:
                view.release(victim)
            view.book(replace(w, phase=Phase.PLACED, placement=d.placement))
            live.append(w.id)
            counts["placed"] += 1
            counts["preempting"] += bool(d.preempted)
            counts["evicted"] += len(d.preempted)
        else:
            counts["pending"] += 1
        roll = rng.random()
        if roll < 0.35 and live:  # work finishes
            view.release(live.pop(rng.randrange(len(live))))
        elif roll < 0.37:  # a pool changes: cordon/uncordon, down/up, a unit fails or comes back
            p = federation[rng.randrange(pools)]
            change = rng.randrange(3)
            if change == 0:
                p = replace(p, cordoned=not p.cordoned)
            elif change == 1:
                up = p.status.health is Health.UP
                p = replace(p, status=PoolHealth(health=Health.DOWN if up else Health.UP))
            elif p.inventory.workers and p.inventory.workers[0].gpus:
                w0 = p.inventory.workers[0]
                g = rng.randrange(len(w0.gpus))
                flipped = replace(w0.gpus[g], healthy=not w0.gpus[g].healthy)
                w0 = replace(w0, gpus=(*w0.gpus[:g], flipped, *w0.gpus[g + 1:]))
                p = replace(p, inventory=Inventory((w0, *p.inventory.workers[1:])))
            federation[int(p.id[5:])] = p
            view.set_pool(p)
    h.update(view.fingerprint())
    return {"digest": h.hexdigest(), **counts}


def uniform_run(pools: int = 1_000, submissions: int = 5_000) -> dict[str, object]:
    """bench/placement_apply's federation and submissions at the scheduler: alike pools in 4 regions, one
    submitter paired with all, so the best total is shared by many pools (the tie-break decides), and
    the federation fills so that later work preempts."""
    federation = [Pool(f"pool-{i:04d}", region=f"r{i % 4}", tier="gpu" if i % 5 else "cpu", inventory=Inventory((
        Worker("w00", 64_000, 512_000,
               tuple(Gpu(f"GPU-{i:04d}-00-{g}", "A100", 81_920 if (i + g) % 3 else 40_960) for g in range(8))),)))
        for i in range(pools)]
    view = FederationView.build([*federation, Pool("hq")], (), [("hq", p.id, Trust.HIGH) for p in federation], ())
    policy = Policy()
    h = hashlib.sha256()
    placed = evicted = 0
    for i in range(submissions):
        kind = i % 10
        gpus = 0 if kind < 2 else (1, 1, 2, 2, 4, 8, 1, 2)[kind - 2]
        spec = (WorkloadSpec(cpu_millis=2_000, ram_mb=8_192, priority=i % 3) if kind < 2 else
                WorkloadSpec(gpus=gpus, gpu_memory_mb=40_960 if kind % 2 else 0, cpu_millis=1_000 * gpus,
                             ram_mb=4_096 * gpus, priority=i % 3))
        w = Workload(f"w{i:06d}", spec, "hq", submitted_index=2 + i // 500)
        d = place(view, w, index=2 + i // 500, request_id=_seed("uniform", i)[:16], policy=policy)
        h.update(repr((d.placement, d.preempted)).encode() + encode_explanation(d.explanation))
        if d.placement is not None:
            for victim in d.preempted:
                view.release(victim)
            view.book(replace(w, phase=Phase.PLACED, placement=d.placement))
            placed += 1
            evicted += len(d.preempted)
    h.update(view.fingerprint())
    return {"digest": h.hexdigest(), "placed": placed, "evicted": evicted}


# -- through apply ------------------------------------------------------------------------------------


def federation() -> Fed:
    """make_federation with fixed keys and nonce (so every signature and digest is the same each run)."""
    nodes = {n: Identity(_seed("node", n)) for n in NODE_IDS}
    admins = {n: Identity(_seed("admin", n)) for n in NODE_IDS}
    bg = Identity(_seed("break-glass"))
    doc = {
        "format": FORMAT, "federation": "golden", "nonce": _seed("nonce")[:16].hex(), "created_at_ms": 1,
        "voters": [{"node_id": n, "pool": n, "public_key": nodes[n].public_key.hex(),
                    "tls_spki_sha256": _seed("spki", n).hex()} for n in NODE_IDS],
        "admins": [{"name": f"{n}-admin", "pool": n, "public_key": admins[n].public_key.hex()} for n in NODE_IDS],
        "break_glass": {"public_key": bg.public_key.hex()},
    }
    return Fed(parse_genesis(encode_genesis(doc)), nodes, admins, bg)


def _node_inventory(pool: str, rng: random.Random, sick: float = 0.0) -> Inventory:
    workers = []
    for w in range(2):
        units = [Gpu(f"GPU-{pool}-{w}-{g}", "H100", (40_960, 81_920)[g % 2], healthy=rng.random() >= sick,
                     fault="") for g in range(4)]
        units = [replace(u, fault="" if u.healthy else "xid 79") for u in units]
        if w == 1:
            units += [Gpu(f"MIG-{pool}-{w}-{k}", "H100", 10_240, parent=f"GPU-{pool}-{w}-9", profile=MIG[0])
                      for k in range(3)]
        workers.append(Worker(f"{pool}-{w}", 32_000, 256_000, tuple(sorted(units, key=lambda u: u.uuid))))
    return Inventory(tuple(workers))


def apply_run(entries: int = 150, seed: int = 2) -> dict[str, object]:
    rng = random.Random(seed)
    fed = federation()
    with tempfile.TemporaryDirectory(prefix="fedraft-golden-") as tmp:
        store = StateStore(Path(tmp) / "state", fed.genesis, map_size=1 << 30)
        st = store.writer()
        seeded = [replace(_pool(i, rng), status=PoolHealth(last_heartbeat_ms=T0, changed_ms=T0)) for i in range(40)]
        for p in seeded:
            placement_schema.put_pool(st, replace(p, id=f"p-{p.id}"))
        for n, node in enumerate(NODE_IDS):
            for i, p in enumerate(seeded):
                if (i + n) % 5:
                    a, b = sorted((node, f"p-{p.id}"))
                    governance_schema.put_pairing(st, Pairing(a, b, (Trust.STANDARD, Trust.HIGH)[(i + n) % 2], node,
                                                              active=True))
        a, b = sorted(("hq", "gpu-dc"))
        governance_schema.put_pairing(st, Pairing(a, b, Trust.HIGH, "hq", active=True))
        governance_schema.put_policy(st, GovernancePolicy(placement=Policy(
            heartbeat_ms=60_000, latencies=LATENCIES, hysteresis_ms=30_000)))
        store.commit()
        applier = Applier(store)
        h = hashlib.sha256()
        counter = 0
        now = T0
        ids: list[str] = []
        placed = preempted = failed_over = 0

        def env(who: Identity, command: c.Command) -> pb.Signed:
            nonlocal counter
            counter += 1
            return build_envelope(Signer(who), fed.cluster_id, command, now_ms=now,
                                  request_id=_seed("apply", seed, counter)[:16])

        def apply(index: int, envs: list[pb.Signed]) -> list[pb.Result]:
            applied = applier.apply(index, 1, sign_entry(fed, "hq", 1, envs, now))
            store.commit()
            assert applied is not None
            for r in applied.results:
                h.update(r.SerializeToString(deterministic=True))
            return list(applied.results)

        apply(2, [env(fed.nodes[p], pc.ReportInventory(p, _node_inventory(p, rng), region=REGIONS[k], tier="gpu"))
                  for k, p in enumerate(NODE_IDS)])
        for n in range(entries):
            index = 3 + n
            now += rng.choice((200, 500, 1_000, 2_000))
            envs = [env(fed.nodes[p], pc.PoolHeartbeat(p)) for p in NODE_IDS if rng.random() < 0.8]
            for k in range(20):
                roll = rng.randrange(40)
                pool = rng.choice(NODE_IDS)
                target = rng.choice(ids) if ids else "none"
                if roll < 28:
                    wid = f"w{n:03d}-{k:02d}"
                    ids.append(wid)
                    envs.append(env(fed.admins[pool], pc.Submit(wid, _spec(rng))))
                elif roll < 31:
                    envs.append(env(fed.nodes[pool], pc.ReportStatus(target, rng.choice((Phase.RUNNING,
                                                                                        Phase.COMPLETED)))))
                elif roll < 34:
                    envs.append(env(fed.admins[pool], pc.Cancel(target)))
                elif roll < 35:
                    to = rng.choice(("", "hq", "gpu-dc", f"p-pool-{rng.randrange(40):04d}"))
                    envs.append(env(fed.admins["hq"], pc.Migrate(target, to)))
                elif roll < 36:
                    victim = rng.choice((*NODE_IDS, f"p-pool-{rng.randrange(40):04d}"))
                    envs.append(env(fed.admins["hq"], pc.PoolControl(victim, rng.choice(("cordon", "uncordon",
                                                                                         "drain")))))
                elif roll < 38:
                    envs.append(env(fed.nodes[pool], pc.ReportInventory(pool, _node_inventory(pool, rng, 0.2),
                                                                        region=REGIONS[NODE_IDS.index(pool)],
                                                                        tier="gpu")))
                else:
                    envs.append(env(fed.nodes["hq"], c.Tick(now)))
            for r in apply(index, envs):
                if r.placement.pool and r.placement.phase == "placed":
                    placed += 1
                preempted += len(r.placement.preempted)
        failed_over = sum(1 for w in _workloads(store) for m in w.moves if m.reason == "gpu-fault")
        digest = store.digest()
        store.close()
    h.update(digest)
    return {"digest": h.hexdigest(), "placed": placed, "preempted": preempted, "gpu_fault_moves": failed_over}


def _workloads(store: StateStore) -> list[Workload]:
    with store.read() as st:
        return list(placement_schema.workloads(st))


def compute() -> dict[str, dict[str, object]]:
    return {"scheduler_run": scheduler_run(), "uniform_run": uniform_run(), "apply_run": apply_run()}


if __name__ == "__main__":
    print(json.dumps(compute(), indent=2, sort_keys=True))
