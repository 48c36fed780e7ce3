"""A linearizability checker for histories of registry operations (SPEC §9, issue 8 item 3).

Wing & Gong's search with Lowe's memoisation (the algorithm of Porcupine and Knossos' "linear"
checker), run per key: registry keys are independent objects, and linearizability is local
(Herlihy & Wing), so a history is linearizable iff every key's sub-history is ("P-compositionality").
Each key's sub-history is capped (MAX_OPS_PER_KEY) so that the search stays small.

Operations and their observed outputs (the sequential model is etcd's, SPEC D8):

    put(key, value)                       ("ok", version)
    get(key)                              ("found", value, version) | ("absent",)
    cas(key, value, expected_version)     ("ok", version) | ("mismatch", current)      current: (value, version) | None
    delete(key[, expected_version])       ("ok", (value, version)) | ("mismatch", current) | ("absent",)

Outcomes, as in Jepsen:
- "ok": the operation completed with an observed output (a refusal such as a CAS mismatch is an ok
  completion: it observed the state);
- "fail": it definitely did not happen (refused before it could reach the log): left out;
- "info": unknown (a timeout, UNAVAILABLE after the request was sent): it may have happened at any
  point after its invocation, or never. It is open-ended: its completion time is infinite and any
  output is accepted. An unknown read is dropped (it changes nothing).

The search keeps a stack of linearized operations; at each step it tries to linearize an operation
whose invocation precedes every pending completion, and a (set of linearized ops, model state) pair
already explored is never explored again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_OPS_PER_KEY = 400
MAX_STATES = 2_000_000

Value = tuple[bytes, int]   # (value, version) of a present key
State = Value | None        # None: the key does not exist


@dataclass
class Op:
    """One operation of a history. `complete` is None for an unknown outcome ("info")."""

    process: int
    kind: str                 # put, get, cas, delete
    key: str
    invoke: float
    complete: float | None = None
    outcome: str = "info"     # ok, fail, info (or pending: not completed yet, judged as info)
    value: bytes | None = None           # put, cas
    expected: int | None = None          # cas (required), delete (optional)
    output: tuple[Any, ...] | None = None
    id: int = -1

    def describe(self) -> str:
        args = [repr(self.key)]
        if self.value is not None:
            args.append(repr(self.value))
        if self.expected is not None:
            args.append(f"expected={self.expected}")
        end = "∞" if self.complete is None else f"{self.complete:.4f}"
        return (f"#{self.id} p{self.process} {self.kind}({', '.join(args)}) -> {self.outcome} {self.output} "
                f"[{self.invoke:.4f}, {end}]")


def step(state: State, op: Op) -> tuple[bool, State]:
    """Apply `op` to the model; (whether the observed output is possible, the next state)."""
    version = state[1] if state is not None else 0
    out = op.output if op.outcome == "ok" else None
    if op.kind == "get":
        expect: tuple[Any, ...] = ("found", state[0], state[1]) if state is not None else ("absent",)
        return out is None or out == expect, state
    if op.kind == "put":
        assert op.value is not None
        new: State = (op.value, version + 1)
        return out is None or out == ("ok", version + 1), new
    if op.kind == "cas":
        assert op.value is not None and op.expected is not None
        if op.expected == version:
            return out is None or out == ("ok", version + 1), (op.value, version + 1)
        return out is None or out == ("mismatch", state), state
    if op.kind == "delete":
        if op.expected is not None and op.expected != version:
            return out is None or out == ("mismatch", state), state
        if state is None:
            return out is None or out == ("absent",), None
        return out is None or out == ("ok", state), None
    raise ValueError(f"unknown operation kind {op.kind!r}")


@dataclass
class KeyResult:
    key: str
    ok: bool
    ops: int
    explored: int
    # When not linearizable: the largest set of operations that could be linearized (in order) and
    # the operations that could not be placed after it.
    best_prefix: list[Op] = field(default_factory=list)
    stuck: list[Op] = field(default_factory=list)

    def explain(self) -> str:
        if self.ok:
            return f"{self.key}: linearizable ({self.ops} ops, {self.explored} states)"
        lines = [f"{self.key}: NOT linearizable ({self.ops} ops). Longest linearization found:"]
        lines += [f"  {op.describe()}" for op in self.best_prefix[-12:]]
        lines.append("  then none of these could come next:")
        lines += [f"  {op.describe()}" for op in self.stuck[:12]]
        return "\n".join(lines)


@dataclass
class Result:
    ok: bool
    keys: list[KeyResult]

    @property
    def operations(self) -> int:
        return sum(k.ops for k in self.keys)

    def explain(self) -> str:
        bad = [k for k in self.keys if not k.ok]
        if not bad:
            return f"linearizable: {self.operations} operations over {len(self.keys)} keys"
        return "\n".join(k.explain() for k in bad)


def prepare(ops: Iterable[Op]) -> dict[str, list[Op]]:
    """Per key: what the search considers (failed ops and unknown reads dropped), invocation order."""
    by_key: dict[str, list[Op]] = {}
    for op in ops:
        if op.outcome == "pending":  # never completed: its outcome is unknown
            op.outcome = "info"
        if op.outcome == "fail" or (op.outcome == "info" and op.kind == "get"):
            continue
        if op.outcome == "ok" and (op.complete is None or op.output is None):
            raise ValueError(f"an ok operation needs a completion time and an output: {op.describe()}")
        if op.outcome == "info":
            op.complete = None
        by_key.setdefault(op.key, []).append(op)
    for key_ops in by_key.values():
        key_ops.sort(key=lambda o: o.invoke)
    return by_key


def check_key(key: str, ops: Sequence[Op], initial: State = None, cap: int = MAX_OPS_PER_KEY,
              budget: int = MAX_STATES) -> KeyResult:
    """Wing-Gong with memoisation over one key's operations.

    Memoisation is Lowe's, sharpened for unknown outcomes: a search node is (completed ops placed,
    model state, unknown ops placed). A node is not explored again if a node with the same completed
    ops and state was explored with a subset of its unknown ops placed: unknown ops have no deadline,
    so whatever the node with more of them placed can still do, the other could do too. Completed
    ops are tried before unknown ones at every step.
    """
    if len(ops) > cap:
        raise ValueError(f"{len(ops)} operations on {key}; the checker is capped at {cap} per key "
                         "(split the workload over more keys)")
    n = len(ops)
    for i, op in enumerate(ops):
        op.id = i if op.id < 0 else op.id
    ends = [math.inf if op.complete is None else op.complete for op in ops]
    must = 0  # bit set of the completed ops: every one of them must be linearized
    for i, op in enumerate(ops):
        if op.complete is not None:
            must |= 1 << i
    unknown = ~must
    seen: dict[tuple[int, State], list[int]] = {}
    # Stack frames: (candidates at that level, position of the one placed, state before, done before).
    stack: list[tuple[list[int], int, State, int]] = []
    done, state = 0, initial
    best: list[int] = []
    explored = 0

    def candidates(done: int) -> list[int]:
        # An op may go next iff it was invoked before every not-yet-linearized op completed.
        horizon = min((ends[i] for i in range(n) if not done >> i & 1), default=math.inf)
        first: list[int] = []
        later: list[int] = []
        for i in range(n):
            if ops[i].invoke > horizon:
                break
            if not done >> i & 1:
                (first if ends[i] != math.inf else later).append(i)
        return first + later

    cands, pos = candidates(done), 0
    while True:
        if done & must == must:
            return KeyResult(key, True, n, explored)
        placed = False
        while pos < len(cands):
            i = cands[pos]
            ok, nxt = step(state, ops[i])
            if ok:
                after = done | 1 << i
                memo = seen.setdefault((after & must, nxt), [])
                infos = after & unknown
                if not any(prior & ~infos == 0 for prior in memo):
                    memo.append(infos)
                    explored += 1
                    if explored > budget:
                        raise Inconclusive(f"{key}: more than {budget} search states ({n} ops); "
                                           "fewer ops per key or fewer unknown outcomes")
                    stack.append((cands, pos, state, done))
                    done, state = after, nxt
                    if len(stack) > len(best):
                        best = [c[fr] for c, fr, _, _ in stack]
                    cands, pos = candidates(done), 0
                    placed = True
                    break
            pos += 1
        if placed:
            continue
        if not stack:
            order = set(best)
            rest = sorted((ops[i] for i in range(n) if i not in order and ops[i].complete is not None),
                          key=lambda o: o.invoke)
            return KeyResult(key, False, n, explored, [ops[i] for i in best], rest)
        cands, pos, state, done = stack.pop()
        pos += 1


class Inconclusive(Exception):
    """The search exceeded its budget: neither linearizable nor not (split the history further)."""


def check(ops: Iterable[Op], initial: dict[str, State] | None = None, cap: int = MAX_OPS_PER_KEY) -> Result:
    """Check a whole history; `initial` gives a key's state before the history (default: absent)."""
    initial = initial or {}
    results = [check_key(key, key_ops, initial.get(key), cap) for key, key_ops in sorted(prepare(ops).items())]
    return Result(all(r.ok for r in results), results)
