"""Seeds for the deterministic simulation: CI runs seeds 0..99, the nightly run 2,000 more;
`pytest tests/sim --sim-seed N` replays one; `--sim-seeds K` changes how many are run."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

CI_SEEDS = 100
NIGHTLY_SEEDS = 2000
NIGHTLY_FIRST_SEED = 100_000  # distinct from the CI seeds


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "sim_seed" not in metafunc.fixturenames:
        return
    replay = metafunc.config.getoption("--sim-seed")
    count = metafunc.config.getoption("--sim-seeds")
    if replay is not None:
        seeds = [replay]
    elif metafunc.definition.get_closest_marker("nightly") is not None:
        seeds = list(range(NIGHTLY_FIRST_SEED, NIGHTLY_FIRST_SEED + (count or NIGHTLY_SEEDS)))
    else:
        seeds = list(range(count or CI_SEEDS))
    metafunc.parametrize("sim_seed", seeds, ids=[f"seed={s}" for s in seeds])


@pytest.fixture()
def sim_root(tmp_path: Path) -> Iterator[Path]:
    """The nodes' LMDB state directories: in memory (/dev/shm) where there is one, as fsync there is
    free and the simulation's own journal models durability; the test's tmp_path otherwise."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        with tempfile.TemporaryDirectory(dir=shm, prefix="fedraft-sim-") as d:
            yield Path(d)
    else:
        yield tmp_path
