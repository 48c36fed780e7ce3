"""Shared pieces of the hostile-input fuzz tests (tests/security/test_fuzz_*.py).

`hostile(valid)` draws random bytes and structure-aware mutations of valid inputs: bit flips,
truncation, extension, byte overwrites, chunk swaps, and for protobuf the top-level fields dropped,
duplicated, swapped or renumbered. `fuzz_pair` turns one property into a CI test with a bounded
number of examples and a `nightly` test with many more (SPEC §9: Hypothesis uses a CI profile).
`within_memory` bounds what one decode may allocate (traced by tracemalloc).
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CI_EXAMPLES = 150
NIGHTLY_EXAMPLES = 5_000

T = TypeVar("T")


# ----- protobuf wire-level fields, for field swaps -----

def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("bad varint")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        shift += 7
        if not byte & 0x80:
            return value, pos


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def proto_fields(data: bytes) -> list[tuple[int, bytes]]:
    """The top-level (tag, whole field bytes) of a protobuf message; [] if it does not split."""
    fields: list[tuple[int, bytes]] = []
    pos = 0
    try:
        while pos < len(data):
            start = pos
            tag, pos = _varint(data, pos)
            wire = tag & 7
            if wire == 0:
                _, pos = _varint(data, pos)
            elif wire == 1:
                pos += 8
            elif wire == 2:
                length, pos = _varint(data, pos)
                pos += length
            elif wire == 5:
                pos += 4
            else:
                return []
            if pos > len(data):
                return []
            fields.append((tag, data[start:pos]))
    except ValueError:
        return []
    return fields


@st.composite
def _field_mutation(draw: st.DrawFn, valid: bytes) -> bytes:
    fields = proto_fields(valid)
    if not fields:
        return valid
    chunks = [raw for _, raw in fields]
    i = draw(st.integers(0, len(chunks) - 1))
    op = draw(st.sampled_from(["drop", "duplicate", "swap", "renumber", "wiretype"]))
    if op == "drop":
        del chunks[i]
    elif op == "duplicate":
        chunks.insert(i, chunks[i])
    elif op == "swap":
        j = draw(st.integers(0, len(chunks) - 1))
        chunks[i], chunks[j] = chunks[j], chunks[i]
    else:
        tag, raw = fields[i]
        _, body_start = _varint(raw, 0)
        if op == "renumber":
            new_tag = (draw(st.integers(1, 40)) << 3) | (tag & 7)
        else:
            new_tag = (tag & ~7) | draw(st.sampled_from([0, 1, 2, 5]))
        chunks[i] = _encode_varint(new_tag) + raw[body_start:]
    return b"".join(chunks)


@st.composite
def _byte_mutation(draw: st.DrawFn, valid: bytes) -> bytes:
    data = bytearray(valid)
    op = draw(st.sampled_from(["flip", "truncate", "extend", "overwrite", "swap", "delete", "insert"]))
    if op == "extend" or not data:
        return bytes(data) + draw(st.binary(min_size=1, max_size=64))
    pos = draw(st.integers(0, len(data) - 1))
    if op == "flip":
        for _ in range(draw(st.integers(1, 4))):
            p = draw(st.integers(0, len(data) - 1))
            data[p] ^= 1 << draw(st.integers(0, 7))
    elif op == "truncate":
        del data[pos:]
    elif op == "overwrite":
        data[pos] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]))
    elif op == "swap":
        other = draw(st.integers(0, len(data) - 1))
        a, b = sorted((pos, other))
        size = draw(st.integers(1, 16))
        left, right = bytes(data[a:a + size]), bytes(data[b:b + size])
        if a + size <= b:
            data[b:b + size] = left
            data[a:a + size] = right
    elif op == "delete":
        del data[pos:pos + draw(st.integers(1, 16))]
    else:
        data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


def hostile(valid: Sequence[bytes], *, max_random: int = 512, protobuf: bool = True) -> st.SearchStrategy[bytes]:
    """Random bytes, or a valid input mutated once or a few times."""
    base = st.sampled_from(list(valid))

    def mutate(seed: bytes) -> st.SearchStrategy[bytes]:
        one = _byte_mutation(seed) | (_field_mutation(seed) if protobuf else _byte_mutation(seed))
        return one.flatmap(lambda once: st.one_of(st.just(once), _byte_mutation(once)))

    return st.one_of(st.binary(max_size=max_random), base.flatmap(mutate), base)


def hostile_text(valid: Sequence[str]) -> st.SearchStrategy[bytes]:
    """For text formats: byte mutations of valid documents, line shuffles, and random text."""
    lines = st.sampled_from(list(valid)).flatmap(
        lambda doc: st.permutations(doc.splitlines(keepends=True)).map(lambda ls: "".join(ls).encode()))
    dropped = st.sampled_from(list(valid)).flatmap(
        lambda doc: st.sets(st.integers(0, max(0, doc.count("\n") - 1)), max_size=3).map(
            lambda skip: "".join(ln for i, ln in enumerate(doc.splitlines(keepends=True)) if i not in skip).encode()))
    return st.one_of(hostile([v.encode() for v in valid], protobuf=False), lines, dropped,
                     st.text(max_size=300).map(str.encode))


def within_memory(limit_bytes: int, call: Callable[[], T]) -> T:
    """Run `call`, failing if its traced allocations peak above `limit_bytes`."""
    tracemalloc.start()
    try:
        return call()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak <= limit_bytes, f"a decode allocated {peak} bytes (bound {limit_bytes})"


def fuzz_pair(strategy: st.SearchStrategy[Any], check: Callable[..., None], *, ci: int = CI_EXAMPLES,
              nightly: int = NIGHTLY_EXAMPLES) -> tuple[Callable[..., None], Callable[..., None]]:
    """The same property as a CI test (`ci` examples) and a nightly one (`nightly` examples)."""

    def build(examples: int) -> Callable[..., None]:
        return settings(max_examples=examples, deadline=None, database=None, derandomize=examples == ci,
                        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                               HealthCheck.data_too_large, HealthCheck.filter_too_much],
                        )(given(strategy)(check))

    return build(ci), pytest.mark.nightly(build(nightly))
