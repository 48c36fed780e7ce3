"""Why a workload went where it went: a compact, deterministic record and its rendering for `fedraft explain`.

Encoded as small JSON (sorted keys, no spaces, ASCII) so every node stores the same bytes. Bounded:
at most LISTED scored pools, EXAMPLES refused pools per filter (the rest counted), every string cut
to MAX_TEXT characters, at most LISTED preempted ids (the rest counted).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import NamedTuple

from fedraft.domain.scheduler.feasible import FILTER_NAMES, Refused
from fedraft.domain.scheduler.rank import PARTS

FORMAT = 1
MAX_TEXT = 96
MAX_PREEMPTED = 16


class ScoredPool(NamedTuple):
    """One listed pool (a named tuple, not a frozen dataclass: apply builds up to 16 per placement)."""

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
    """Compact JSON: the bytes `json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)`
    gives for the document below (keys in sorted order), written out directly because apply encodes one
    per placement (tests hold the two together)."""
    s = _text
    scored = ",".join([f"[{_plain(p.pool if len(p.pool) <= MAX_TEXT else _cut(p.pool))},{_int(p.total)},["
                       + ",".join(map(_int, p.parts)) + "]]" for p in e.scored])
    refused = ",".join(f"[{_plain(r.filter)},{_int(r.count)},["
                       + ",".join(f"[{s(p)},{s(why)}]" for p, why in r.examples) + "]]" for r in e.refused)
    preempted = _text_list(e.preempted[:MAX_PREEMPTED])
    return (f'{{"c":{s(e.chosen)},"g":{_text_list(e.gpus)},"n":{s(e.note)},"p":{preempted},'
            f'"pn":{_int(e.preempted_total)},"r":[{refused}],"s":[{scored}],"u":{_int(e.unranked)},'
            f'"v":{FORMAT},"w":{s(e.worker)},"wt":{_int_list(e.weights)}}}').encode("ascii")


_plain = encode_basestring_ascii  # a JSON string literal, non-ASCII escaped (what json.dumps writes)
_int = int.__repr__               # what json.dumps writes for an int (an IntEnum too)


def _text(text: str) -> str:
    return _plain(_cut(text))


def _text_list(texts: tuple[str, ...]) -> str:
    return "[" + ",".join(_plain(_cut(t)) for t in texts) + "]"


def _int_list(values: tuple[int, ...]) -> str:
    return "[" + ",".join(map(int.__repr__, values)) + "]"


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
