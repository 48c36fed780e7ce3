"""What the simulated clients do: a federation with keys derived from the seed, and signed envelopes
for registry writes and GPU placements, built with request ids from the seeded RNG."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.crypto.envelopes import build_envelope
from fedraft.crypto.signing import Identity, Signer
from fedraft.domain import commands as c
from fedraft.domain.genesis import FORMAT, Genesis, encode_genesis, parse_genesis
from fedraft.domain.governance.commands import PairAccept, PairOffer
from fedraft.domain.placement import commands as pc
from fedraft.domain.placement.model import Gpu, Inventory, Trust, Worker, WorkloadSpec

NODE_IDS = ("cpu-branch", "gpu-dc", "hq")
KEYS = tuple(f"/settings/k{i}" for i in range(6))
T0_MS = 1_800_000_000_000


def _identity(seed: int, name: str) -> Identity:
    return Identity(hashlib.sha256(f"fedraft-sim/{seed}/{name}".encode()).digest())


@dataclass(frozen=True)
class SimFederation:
    genesis: Genesis
    nodes: dict[str, Identity]
    admins: dict[str, Identity]


def make_federation(seed: int) -> SimFederation:
    nodes = {n: _identity(seed, f"node/{n}") for n in NODE_IDS}
    admins = {n: _identity(seed, f"admin/{n}") for n in NODE_IDS}
    doc = {
        "format": FORMAT, "federation": "sim", "created_at_ms": 1,
        "nonce": hashlib.sha256(f"nonce/{seed}".encode()).hexdigest()[:32],
        "voters": [{"node_id": n, "pool": n, "public_key": nodes[n].public_key.hex(),
                    "tls_spki_sha256": hashlib.sha256(f"spki/{n}".encode()).hexdigest()} for n in NODE_IDS],
        "admins": [{"name": f"{n}-admin", "pool": n, "public_key": admins[n].public_key.hex()} for n in NODE_IDS],
        "break_glass": {"public_key": _identity(seed, "break-glass").public_key.hex()},
    }
    return SimFederation(parse_genesis(encode_genesis(doc)), nodes, admins)


def _inventory(pool: str, workers: int, gpus: int) -> Inventory:
    return Inventory(tuple(
        Worker(f"{pool}-{w}", 32_000, 131_072, tuple(Gpu(f"GPU-{pool}-{w}-{g}", "sim", 40_960) for g in range(gpus)))
        for w in range(workers)))


INVENTORY = {"hq": _inventory("hq", 1, 2), "gpu-dc": _inventory("gpu-dc", 2, 4),
             "cpu-branch": _inventory("cpu-branch", 1, 0)}


@dataclass
class Op:
    """One client request: its signed envelope is sent again, unchanged, until it is acknowledged."""

    name: str
    signed: pb.Signed
    key: tuple[bytes, bytes]            # (author key id, request id)
    attempts: int = 0
    next_try_at: float = 0.0
    result: pb.Result | None = None
    acked_at_step: int = -1
    in_flight: bool = False
    sent_to: str = ""
    sent_at: float = 0.0
    verified_on: set[str] = field(default_factory=set)


class Clients:
    def __init__(self, seed: int, fed: SimFederation) -> None:
        self.rng = random.Random(f"{seed}/clients")
        self.fed = fed
        self.ops: list[Op] = []
        self._workloads = 0
        self._values = 0

    def _op(self, name: str, who: Identity, command: c.Command, now_ms: int) -> Op:
        request_id = self.rng.randbytes(16)
        signer = Signer(who)
        signed = build_envelope(signer, self.fed.genesis.cluster_id, command, now_ms=now_ms,
                                validity_ms=240_000, request_id=request_id)
        op = Op(name, signed, (signer.key_id, request_id))
        self.ops.append(op)
        return op

    def setup(self, now_ms: int) -> None:
        """Inventories of every pool, and hq and gpu-dc paired, so placements cross pools."""
        for pool in NODE_IDS:
            self._op(f"report {pool}", self.fed.nodes[pool], pc.ReportInventory(pool, INVENTORY[pool]), now_ms)
        self._op("offer hq->gpu-dc", self.fed.admins["hq"], PairOffer("gpu-dc", Trust.HIGH), now_ms)
        self._op("accept gpu-dc<-hq", self.fed.admins["gpu-dc"], PairAccept("hq"), now_ms)

    def new_put(self, now_ms: int) -> Op:
        self._values += 1
        key = self.rng.choice(KEYS)
        return self._op(f"put {key}", self.fed.admins["hq"], c.Put(key, b"v%d" % self._values), now_ms)

    def new_request(self, now_ms: int) -> Op:
        rng = self.rng
        admin = rng.choice(("hq", "gpu-dc"))
        roll = rng.random()
        if roll < 0.5:
            key = rng.choice(KEYS)
            self._values += 1
            return self._op(f"put {key}", self.fed.admins[admin], c.Put(key, b"v%d" % self._values), now_ms)
        if roll < 0.85 or self._workloads == 0:
            self._workloads += 1
            name = f"w{self._workloads}"
            spec = WorkloadSpec(gpus=rng.choice((1, 1, 2)), gpu_memory_mb=10_000, cpu_millis=100)
            return self._op(f"submit {name}", self.fed.admins[admin], pc.Submit(name, spec), now_ms)
        target = rng.randint(1, self._workloads)
        return self._op(f"cancel w{target}", self.fed.admins[admin], pc.Cancel(f"w{target}"), now_ms)
