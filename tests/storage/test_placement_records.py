"""Placement values survive their stored protobuf form exactly (every field, incl. optional ones)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fedraft.domain.placement.model import (
    Gpu,
    Health,
    Inventory,
    Move,
    Phase,
    Placement,
    Pool,
    PoolHealth,
    Trust,
    Worker,
    Workload,
    WorkloadSpec,
)
from fedraft.wire.placement import pool_from_pb, pool_to_pb, workload_from_pb, workload_to_pb

names = st.text("abc-0123", min_size=1, max_size=8)
ms = st.integers(0, 2**48)
opt_ms = st.none() | ms
gpus = st.builds(Gpu, names, names, st.integers(1, 2**20), st.booleans())
workers = st.builds(Worker, names, st.integers(0, 2**30), st.integers(0, 2**30), st.lists(gpus, max_size=3).map(tuple))
pools = st.builds(
    Pool, names, names, names, st.lists(names, max_size=3).map(lambda x: tuple(sorted(set(x)))), st.booleans(),
    st.builds(PoolHealth, st.sampled_from(Health), ms, ms, st.lists(ms, max_size=3).map(tuple)),
    st.builds(Inventory, st.lists(workers, max_size=3).map(tuple)), st.booleans(), opt_ms)
specs = st.builds(WorkloadSpec, st.integers(0, 64), st.integers(0, 2**20), st.integers(0, 2**20),
                  st.integers(0, 2**20), st.integers(-1000, 1000), st.sampled_from(Trust),
                  st.lists(names, max_size=2).map(tuple), st.lists(names, max_size=2).map(tuple), names, names,
                  st.integers(0, 10_000))
workloads = st.builds(
    Workload, names, specs, names, st.sampled_from(Phase),
    st.none() | st.builds(Placement, names, names, st.lists(names, max_size=3).map(tuple)),
    names, ms, ms, opt_ms, st.lists(st.builds(Move, ms, ms, names, names, names), max_size=3).map(tuple),
    names, st.binary(max_size=40), opt_ms)


@given(pools)
def test_pool_round_trip(pool: Pool) -> None:
    assert pool_from_pb(pool_to_pb(pool)) == pool


@given(workloads)
def test_workload_round_trip(workload: Workload) -> None:
    assert workload_from_pb(workload_to_pb(workload)) == workload
