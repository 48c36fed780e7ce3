"""encode_explanation writes its JSON by hand (apply encodes one per placement): the bytes must be exactly
what json.dumps(sorted keys, no spaces, ASCII) writes for the same document, for any strings (quotes,
backslashes, control and non-ASCII characters, over-long text) and integers (hypothesis)."""

from __future__ import annotations

import json
from enum import IntEnum

from hypothesis import given, settings
from hypothesis import strategies as st

from fedraft.domain.scheduler.explain import (
    FORMAT,
    MAX_PREEMPTED,
    Explanation,
    ScoredPool,
    _cut,
    decode_explanation,
    encode_explanation,
)
from fedraft.domain.scheduler.feasible import Refused


def json_dumps_reference(e: Explanation) -> bytes:
    """The encoding as json.dumps writes it (the implementation before the hand-written one)."""
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


texts = st.text(max_size=120) | st.sampled_from(("", "pool-0001", 'a "quoted" \\ path', "tab\there\n", "é✓😀\x00"))
ints = st.integers(-(2**70), 2**70)
small = st.lists(ints, max_size=7).map(tuple)
explanations = st.builds(
    Explanation,
    chosen=texts, worker=texts, gpus=st.lists(texts, max_size=4).map(tuple), note=texts, weights=small,
    scored=st.lists(st.builds(ScoredPool, texts, ints, small), max_size=4).map(tuple),
    refused=st.lists(st.builds(Refused, texts, ints, st.lists(st.tuples(texts, texts), max_size=3).map(tuple)),
                     max_size=4).map(tuple),
    unranked=ints, preempted=st.lists(texts, max_size=20).map(tuple), preempted_total=ints)


@settings(max_examples=400, deadline=None)
@given(explanations)
def test_hand_written_encoding_is_json_dumps_byte_for_byte(e: Explanation) -> None:
    assert encode_explanation(e) == json_dumps_reference(e)


class Level(IntEnum):
    HIGH = 3


def test_integer_enums_are_written_as_their_value_as_json_does() -> None:
    e = Explanation(chosen="p", weights=(Level.HIGH, 1), scored=(ScoredPool("p", Level.HIGH, (Level.HIGH,)),))
    assert encode_explanation(e) == json_dumps_reference(e)
    assert decode_explanation(encode_explanation(e)).weights == (3, 1)
