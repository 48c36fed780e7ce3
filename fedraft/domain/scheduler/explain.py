"""Why a workload went where it went: a compact, deterministic record and its rendering for `fedraft explain`.

Encoded as small JSON (sorted keys, no spaces, ASCII) so every node stores the same bytes. Bounded:
at most LISTED scored pools, EXAMPLES refused pools per filter (the rest counted), every string cut
to MAX_TEXT characters, at most LISTED preempted ids (the rest counted).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from fedraft.domain.scheduler.feasible import FILTER_NAMES, Refused
from fedraft.domain.scheduler.rank import PARTS

FORMAT = 1
MAX_TEXT = 96
MAX_PREEMPTED = 16


@dataclass(frozen=True)
class ScoredPool:
    pool: str
    total: int
    parts: tuple[int, ...]            # 0..100 each, in rank.PARTS order


@dataclass(frozen=True)
class Explanation:
    chosen: str = ""                  # "" when nothing was placed
    worker: str = ""
    gpus: tuple[str, ...] = ()
    note: str = ""                    # one line: what happened
    weights: tuple[int, ...] = ()     # rank.PARTS order
    scored: tuple[ScoredPool, ...] = ()  # the chosen pool first, then best first
    refused: tuple[Refused, ...] = ()    # in filter order
    unranked: int = 0                 # passed the pool filters, scored below the listed, not checked further
    preempted: tuple[str, ...] = ()
    preempted_total: int = 0

    def refused_count(self) -> int:
        return sum(r.count for r in self.refused)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "~"


def encode_explanation(e: Explanation) -> bytes:
    doc = {
        "v": FORMAT,
        "c": _cut(e.chosen),
        "w": _cut(e.worker),
        "g": [_cut(g) for g in e.gpus],
        "n": _cut(e.note),
        "wt": list(e.weights),
        "s": [[_cut(s.pool), s.total, list(s.parts)] for s in e.scored],
        "r": [[r.filter, r.count, [[_cut(p), _cut(why)] for p, why in r.examples]] for r in e.refused],
        "u": e.unranked,
        "p": [_cut(p) for p in e.preempted[:MAX_PREEMPTED]],
        "pn": e.preempted_total,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _strs(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("explanation: expected a list of strings")
    return tuple(value)


def _ints(value: object) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
        raise ValueError("explanation: expected a list of integers")
    return tuple(value)


def decode_explanation(data: bytes) -> Explanation:
    """The inverse of encode_explanation; b"" (never explained) is an empty Explanation."""
    if not data:
        return Explanation()
    try:
        doc = json.loads(data.decode("ascii"))
        if not isinstance(doc, dict) or doc.get("v") != FORMAT:
            raise ValueError(f"explanation: unknown format {doc.get('v') if isinstance(doc, dict) else '?'}")
        scored = tuple(ScoredPool(str(p), int(t), _ints(parts)) for p, t, parts in doc["s"])
        refused = tuple(
            Refused(str(f), int(n), tuple((str(p), str(why)) for p, why in ex)) for f, n, ex in doc["r"]
        )
        return Explanation(
            chosen=str(doc["c"]), worker=str(doc["w"]), gpus=_strs(doc["g"]), note=str(doc["n"]),
            weights=_ints(doc["wt"]), scored=scored, refused=refused, unranked=int(doc["u"]),
            preempted=_strs(doc["p"]), preempted_total=int(doc["pn"]),
        )
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"explanation: malformed ({exc})") from None


def render(e: Explanation) -> list[str]:
    """Lines for `fedraft explain`."""
    lines = [e.note or "no explanation recorded"]
    if e.chosen:
        gpus = f" GPUs {', '.join(e.gpus)}" if e.gpus else ""
        lines.append(f"placed on {e.chosen} worker {e.worker}{gpus}")
    if e.preempted:
        more = f" (+{e.preempted_total - len(e.preempted)} more)" if e.preempted_total > len(e.preempted) else ""
        lines.append(f"preempts: {', '.join(e.preempted)}{more}")
    if e.scored:
        if e.weights:
            lines.append("weights: " + ", ".join(f"{n} {w}" for n, w in zip(PARTS, e.weights, strict=False)))
        width = max(len("pool"), *(len(s.pool) for s in e.scored))
        lines.append(f"{'pool':<{width}}  {'total':>6}  " + "  ".join(f"{n:>9}" for n in PARTS))
        for s in e.scored:
            mark = " *" if s.pool == e.chosen else ""
            lines.append(f"{s.pool:<{width}}  {s.total:>6}  " + "  ".join(f"{p:>9}" for p in s.parts) + mark)
    if e.unranked:
        lines.append(f"{e.unranked} more pools passed every pool filter but scored below these (not checked further)")
    order = {name: i for i, name in enumerate(FILTER_NAMES)}
    for r in sorted(e.refused, key=lambda r: (order.get(r.filter, len(order)), r.filter)):
        examples = "; ".join(f"{p}: {why}" for p, why in r.examples)
        more = f" (+{r.count - len(r.examples)} more)" if r.count > len(r.examples) else ""
        lines.append(f"refused by {r.filter}: {r.count} — {examples}{more}")
    return lines
