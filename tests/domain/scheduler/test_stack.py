"""The assembled stack: selection and tie-break, preemption stories, and the explanation's bytes."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from fedraft.domain.placement.model import Placement, Policy, Trust
from fedraft.domain.scheduler import decode_explanation, encode_explanation, place, render
from fedraft.domain.scheduler.explain import Explanation
from fedraft.domain.scheduler.select import tie_key

from .builders import pool, view, worker, workload

POLICY = Policy()


def test_best_total_wins() -> None:
    v = view(pool("home", worker("w0", 1, prefix="home")), pool("big", worker("w0", 1, 1, 1, 1, prefix="big")))
    d = place(v, workload("x", gpus=1), index=1, request_id=b"r", policy=POLICY)
    assert d.placement == Placement("big", "w0", ("big-g0",))     # 3 of 4 free beats 0 of 1
    assert [s.pool for s in d.explanation.scored] == ["big", "home"]


def test_ties_are_broken_by_the_replicated_hash_then_id() -> None:
    ids = [f"p{i}" for i in range(8)]
    v = view(*(pool(i) for i in ids), submitter="nobody", trust=dict.fromkeys(ids, Trust.STANDARD))
    for index in range(1, 6):
        d = place(v, workload("x", "nobody", gpus=1), index=index, request_id=b"req", policy=POLICY)
        assert d.placement is not None
        assert d.placement.pool == min(ids, key=lambda p: (tie_key(index, b"req", p), p))


def test_avoid_and_exclude_leave_pools_out() -> None:
    v = view(pool("home"), pool("a"), pool("b"))
    d = place(v, workload("x", gpus=1, exclude_pools=("a",)), index=1, request_id=b"r", policy=POLICY,
              avoid=frozenset({"home"}))
    assert d.placement is not None and d.placement.pool == "b"
    assert {r.filter: r.count for r in d.explanation.refused} == {"excluded": 2}


def test_nothing_fits_says_why_per_filter() -> None:
    v = view(pool("home", worker("w0", 16_000, prefix="home")), pool("down", down=True), pool("stranger"),
             trust={"stranger": Trust.NONE})
    d = place(v, workload("x", gpus=2), index=1, request_id=b"r", policy=POLICY)
    assert d.placement is None and d.preempted == ()
    lines = render(d.explanation)
    assert lines[0] == "no pool fits (3 pools)"
    assert "refused by health: 1 — down: pool is down" in lines
    assert "refused by trust: 1 — stranger: not paired with home" in lines
    assert "refused by gpus: 1 — home: no worker has 2 free GPUs (most 1)" in lines


def running(wid: str, units: tuple[str, ...], priority: int, index: int, pool_id: str = "p", **spec: object):  # type: ignore[no-untyped-def]
    return workload(wid, "other", placement=Placement(pool_id, "w0", units), index=index, priority=priority, **spec)


def test_preemption_evicts_lowest_priority_then_newest() -> None:
    p = pool("p", worker("w0", 1, 1, 1, prefix="p"))
    booked = (running("old-low", ("p-g0",), 0, 1), running("new-low", ("p-g1",), 0, 5),
              running("mid", ("p-g2",), 1, 2))
    v = view(p, workloads=booked, submitter="p")
    d = place(v, workload("x", "p", gpus=1, priority=2), index=9, request_id=b"r", policy=POLICY)
    assert d.preempted == ("new-low",) and d.placement == Placement("p", "w0", ("p-g1",))
    assert d.explanation.preempted == ("new-low",) and d.explanation.scored[0].pool == "p"
    d2 = place(v, workload("x", "p", gpus=2, priority=2), index=9, request_id=b"r", policy=POLICY)
    assert d2.preempted == ("new-low", "old-low")


def test_preemption_never_touches_equal_or_higher_priority() -> None:
    p = pool("p", worker("w0", 1, prefix="p"))
    v = view(p, workloads=(running("same", ("p-g0",), 2, 1),), submitter="p")
    d = place(v, workload("x", "p", gpus=1, priority=2), index=1, request_id=b"r", policy=POLICY)
    assert d.placement is None and d.preempted == ()


def test_preemption_off_by_policy() -> None:
    v = view(pool("p", worker("w0", 1, prefix="p")), workloads=(running("low", ("p-g0",), 0, 1),), submitter="p")
    d = place(v, workload("x", "p", gpus=1, priority=5), index=1, request_id=b"r",
              policy=replace(POLICY, preemption=False))
    assert d.placement is None


def test_preemption_skips_victims_that_free_nothing_needed() -> None:
    p = pool("p", worker("w0", 1, prefix="p", cpu=10_000))
    booked = (running("cpu-only", (), 0, 9, cpu_millis=1_000), running("gpu", ("p-g0",), 0, 1, cpu_millis=1_000))
    v = view(p, workloads=booked, submitter="p")
    d = place(v, workload("x", "p", gpus=1, priority=1), index=1, request_id=b"r", policy=POLICY)
    assert d.preempted == ("gpu",)


def test_preemption_prefers_the_lowest_priority_plan_across_pools() -> None:
    a, b = pool("a", worker("w0", 1, prefix="a")), pool("b", worker("w0", 1, prefix="b"))
    v = view(a, b, workloads=(running("a1", ("a-g0",), 1, 1, pool_id="a"), running("b0", ("b-g0",), 0, 2, pool_id="b")),
             submitter="a")
    d = place(v, workload("x", "a", gpus=1, priority=3), index=1, request_id=b"r", policy=POLICY)
    assert d.preempted == ("b0",) and d.placement is not None and d.placement.pool == "b"


def test_explanation_round_trip_and_bound() -> None:
    ids = [f"pool-{i:03d}-" + "x" * 200 for i in range(60)]
    pools = [pool(i, down=n % 3 == 0) for n, i in enumerate(ids)]
    v = view(*pools, submitter=ids[1])
    d = place(v, workload("x", ids[1], gpus=1), index=1, request_id=b"r", policy=POLICY)
    data = encode_explanation(d.explanation)
    assert len(data) < 8_000 and len(d.explanation.scored) == 16 and d.explanation.unranked == 40 - 16
    again = decode_explanation(data)
    assert encode_explanation(again) == data
    assert any("more pools passed every pool filter" in line for line in render(again))


@pytest.mark.parametrize("data", [b"x", b"{}", b'{"v":2}', b'{"v":1}', b"\xff", b'{"v":1,"s":5}'])
def test_malformed_explanations_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="explanation"):
        decode_explanation(data)


def test_no_explanation_decodes_empty() -> None:
    assert decode_explanation(b"") == Explanation()
    assert render(Explanation()) == ["no explanation recorded"]


SCRIPT = """
import hashlib
from tests.domain.scheduler.builders import pool, view, worker, workload
from fedraft.domain.placement.model import Policy, Phase
from fedraft.domain.scheduler import place, encode_explanation
from dataclasses import replace
ids = [f"p{i}" for i in range(40)]
v = view(*(pool(i, worker("w0", 1, 1, prefix=i), worker("w1", 1, prefix=i+"b"), region="eu us".split()[n % 2])
           for n, i in enumerate(ids)), submitter="p0")
h = hashlib.sha256()
for n in range(60):
    w = workload(f"w{n}", "p0", gpus=1 + n % 2, priority=n % 3, preferred_region="us", index=n)
    d = place(v, w, index=n, request_id=b"q", policy=Policy())
    h.update(repr((d.placement, d.preempted)).encode() + encode_explanation(d.explanation))
    if d.placement:
        for victim in d.preempted:
            v.release(victim)
        v.book(replace(w, phase=Phase.PLACED, placement=d.placement))
print(h.hexdigest())
"""


def test_decisions_do_not_depend_on_string_hash_seeds() -> None:
    """Sets are iterated inside the view: two processes with different hash seeds must still agree."""
    digests = {
        subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True,
                       env={"PYTHONHASHSEED": seed, "PATH": ""}, cwd=Path(__file__).resolve().parents[3]).stdout
        for seed in ("1", "2", "3")
    }
    assert len(digests) == 1


def test_a_malformed_spec_does_not_raise() -> None:
    v = view(pool("home"))
    d = place(v, workload("x", gpus=-1, cpu_millis=-5, gpu_memory_mb=-1), index=1, request_id=b"r", policy=POLICY)
    assert d.placement is not None and d.placement.gpus == ()
