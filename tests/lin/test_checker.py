"""The linearizability checker on hand-written histories: it accepts the good ones and rejects the bad."""

from __future__ import annotations

import random
import time

import pytest

from tests.lin.checker import Op, check, check_key, step


def op(kind: str, key: str, start: float, end: float | None, output: tuple | None = None, *,  # type: ignore[type-arg]
       value: bytes | None = None, expected: int | None = None, process: int = 0, outcome: str | None = None) -> Op:
    if outcome is None:
        outcome = "info" if end is None else "ok"
    return Op(process, kind, key, start, end, outcome, value, expected, output)


K = "/routes/k"


def put(start: float, end: float | None, version: int | None, value: bytes, p: int = 0) -> Op:
    return op("put", K, start, end, ("ok", version) if version is not None else None, value=value, process=p)


def get(start: float, end: float, value: bytes | None, version: int = 0, p: int = 0) -> Op:
    return op("get", K, start, end, ("found", value, version) if value is not None else ("absent",), process=p)


def cas(start: float, end: float | None, expected: int, value: bytes, output: tuple | None, p: int = 0) -> Op:  # type: ignore[type-arg]
    return op("cas", K, start, end, output, value=value, expected=expected, process=p)


def delete(start: float, end: float | None, output: tuple | None, expected: int | None = None, p: int = 0) -> Op:  # type: ignore[type-arg]
    return op("delete", K, start, end, output, expected=expected, process=p)


# ---- linearizable ----

def test_sequential_history() -> None:
    h = [put(0, 1, 1, b"a"), get(2, 3, b"a", 1), put(4, 5, 2, b"b"), get(6, 7, b"b", 2),
         delete(8, 9, ("ok", (b"b", 2))), get(10, 11, None), put(12, 13, 1, b"c")]
    assert check(h).ok


def test_a_read_concurrent_with_a_write_may_see_either() -> None:
    base = [put(0, 1, 1, b"a")]
    assert check([*base, put(2, 6, 2, b"b", p=1), get(3, 4, b"a", 1, p=2)]).ok
    assert check([*base, put(2, 6, 2, b"b", p=1), get(3, 4, b"b", 2, p=2)]).ok


def test_reads_may_order_concurrent_writes_either_way() -> None:
    h = [put(0, 10, None, b"a", p=0), put(0, 10, None, b"b", p=1)]
    # both unknown-version puts overlap; readers after them see one order consistently
    h[0].output, h[1].output = ("ok", 2), ("ok", 1)
    assert check([*h, get(11, 12, b"a", 2, p=2)]).ok


def test_unknown_write_may_take_effect_late() -> None:
    h = [put(0, None, None, b"x", p=0), get(5, 6, None, p=1), get(7, 8, b"x", 1, p=1)]
    assert check(h).ok


def test_unknown_write_may_never_take_effect() -> None:
    h = [put(0, None, None, b"x", p=0), get(5, 6, None, p=1), put(7, 8, 1, b"y", p=1), get(9, 10, b"y", 1, p=1)]
    assert check(h).ok


def test_failed_operations_are_left_out() -> None:
    failed = put(0, 1, None, b"never", p=0)
    failed.outcome = "fail"
    assert check([failed, get(2, 3, None, p=1)]).ok


def test_cas_mismatch_observes_the_state() -> None:
    h = [cas(0, 1, 0, b"a", ("ok", 1)), cas(2, 3, 0, b"b", ("mismatch", (b"a", 1))),
         cas(4, 5, 1, b"c", ("ok", 2)), get(6, 7, b"c", 2)]
    assert check(h).ok


def test_delete_with_expected_version_and_not_found() -> None:
    h = [delete(0, 1, ("absent",)), delete(2, 3, ("mismatch", None), expected=1), put(4, 5, 1, b"a"),
         delete(6, 7, ("mismatch", (b"a", 1)), expected=2), delete(8, 9, ("ok", (b"a", 1)), expected=1),
         put(10, 11, 1, b"b")]
    assert check(h).ok


def test_keys_are_checked_independently() -> None:
    h = [op("put", "/routes/a", 0, 1, ("ok", 1), value=b"1"), op("put", "/routes/b", 0, 1, ("ok", 1), value=b"2"),
         op("get", "/routes/a", 2, 3, ("found", b"1", 1)), op("get", "/routes/b", 2, 3, ("found", b"2", 1))]
    result = check(h)
    assert result.ok and len(result.keys) == 2


def test_initial_state_is_given_per_key() -> None:
    assert check([get(0, 1, b"seed", 3)], initial={K: (b"seed", 3)}).ok
    assert not check([get(0, 1, b"seed", 3)]).ok


# ---- not linearizable ----

def test_stale_read_is_rejected() -> None:
    h = [put(0, 1, 1, b"a"), put(2, 3, 2, b"b"), get(4, 5, b"a", 1, p=1)]
    result = check(h)
    assert not result.ok
    assert "NOT linearizable" in result.explain()


def test_read_of_a_missing_acknowledged_write_is_rejected() -> None:
    h = [put(0, 1, 1, b"a"), get(2, 3, None, p=1)]
    assert not check(h).ok


def test_lost_write_is_rejected() -> None:
    # b was acknowledged at version 2; later readers see only a, then c at version 2 (b vanished)
    h = [put(0, 1, 1, b"a"), put(2, 3, 2, b"b", p=1), get(4, 5, b"a", 1, p=2), put(6, 7, 2, b"c", p=2)]
    assert not check(h).ok


def test_read_from_the_future_is_rejected() -> None:
    h = [get(0, 1, b"x", 1, p=1), put(2, 3, 1, b"x")]
    assert not check(h).ok


def test_unknown_write_cannot_be_seen_before_it_was_invoked() -> None:
    h = [get(0, 1, b"x", 1, p=1), put(2, None, None, b"x")]
    assert not check(h).ok


def test_two_creates_cannot_both_succeed() -> None:
    h = [cas(0, 2, 0, b"a", ("ok", 1), p=0), cas(1, 3, 0, b"b", ("ok", 1), p=1)]
    assert not check(h).ok


def test_cas_success_on_a_stale_version_is_rejected() -> None:
    h = [put(0, 1, 1, b"a"), put(2, 3, 2, b"b"), cas(4, 5, 1, b"c", ("ok", 2), p=1)]
    assert not check(h).ok


def test_cas_mismatch_against_a_state_that_never_was_is_rejected() -> None:
    h = [put(0, 1, 1, b"a"), cas(2, 3, 1, b"c", ("mismatch", (b"z", 7)), p=1)]
    assert not check(h).ok


def test_wrong_version_is_rejected() -> None:
    assert not check([put(0, 1, 1, b"a"), put(2, 3, 3, b"b")]).ok
    assert not check([put(0, 1, 1, b"a"), delete(2, 3, ("ok", (b"a", 1))), put(4, 5, 2, b"b")]).ok


def test_a_deleted_key_does_not_come_back() -> None:
    h = [put(0, 1, 1, b"a"), delete(2, 3, ("ok", (b"a", 1))), get(4, 5, b"a", 1, p=1)]
    assert not check(h).ok


def test_explanation_names_the_operations_that_could_not_be_placed() -> None:
    h = [put(0, 1, 1, b"a"), put(2, 3, 2, b"b"), get(4, 5, b"a", 1, p=1)]
    text = check(h).explain()
    assert "get(" in text and "b'a'" in text


def test_the_cap_is_enforced() -> None:
    many = [put(i, i + 0.5, i + 1, str(i).encode()) for i in range(20)]
    with pytest.raises(ValueError, match="capped"):
        check_key(K, many, cap=10)


def test_model_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError):
        step(None, op("merge", K, 0, 1, ("ok",)))


# ---- generated histories ----

def _simulate(seed: int, n_ops: int, processes: int, info_rate: float = 0.05) -> list[Op]:
    """A linearizable history by construction: each op takes effect at a random point of its interval."""
    rng = random.Random(seed)
    clock = [0.0] * processes
    ops: list[tuple[float, Op]] = []
    for counter in range(1, n_ops + 1):
        p = rng.randrange(processes)
        start = clock[p] + rng.uniform(0, 1)
        end = start + rng.uniform(0.1, 3)
        clock[p] = end
        kind = rng.choices(("get", "put", "cas", "delete"), (4, 3, 3, 1))[0]
        o = Op(p, kind, K, start, end, "ok", f"v{counter}".encode() if kind in ("put", "cas") else None,
               rng.randint(0, 3) if kind == "cas" else (rng.choice([None, 1, 2]) if kind == "delete" else None))
        ops.append((rng.uniform(start, end), o))
    state = None
    for _, o in sorted(ops, key=lambda t: t[0]):
        version = state[1] if state is not None else 0
        if o.kind == "get":
            o.output = ("found", *state) if state is not None else ("absent",)
        elif o.kind == "put":
            state = (o.value, version + 1)
            o.output = ("ok", version + 1)
        elif o.kind == "cas":
            if o.expected == version:
                state = (o.value, version + 1)
                o.output = ("ok", version + 1)
            else:
                o.output = ("mismatch", state)
        elif o.expected is not None and o.expected != version:
            o.output = ("mismatch", state)
        elif state is None:
            o.output = ("absent",)
        else:
            o.output = ("ok", state)
            state = None
    history = [o for _, o in ops]
    # some writes lose their outcome (a timeout): still linearizable
    for o in history:
        if o.kind != "get" and rng.random() < info_rate:
            o.outcome, o.output, o.complete = "info", None, None
    history.append(Op(processes, "get", K, max(clock) + 1, max(clock) + 2, "ok", None, None,
                      ("found", *state) if state is not None else ("absent",)))
    return history


@pytest.mark.parametrize("seed", range(8))
def test_generated_linearizable_histories_pass_and_a_stale_final_read_fails(seed: int) -> None:
    history = _simulate(seed, 300, 5)
    started = time.monotonic()
    result = check(history)
    assert result.ok, result.explain()
    assert time.monotonic() - started < 10
    final = history[-1]
    # A final read that observes anything but the last state is not linearizable.
    final.output = ("found", b"stale", 99) if final.output != ("found", b"stale", 99) else ("absent",)
    for o in history:
        o.id = -1
    assert not check(history).ok
