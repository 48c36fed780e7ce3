"""The packaged demo inventories load, and the fingerprint changes exactly when the inventory does."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fedraft.domain.placement.model import Gpu, Inventory, Worker
from fedraft.inventory import SAMPLES, fingerprint, load_inventory_file, sample_path


def test_hq_sample() -> None:
    inv = load_inventory_file(sample_path("hq"))
    assert [w.name for w in inv.workers] == ["hq-0", "hq-1"]
    for i, w in enumerate(inv.workers):
        assert w.cpu_millis > 0 and w.ram_mb > 0
        assert [g.uuid for g in w.gpus] == [f"GPU-hq-{i}-0", f"GPU-hq-{i}-1"]
        assert all(g.memory_mb == 24 * 1024 and g.healthy for g in w.gpus)
    assert inv.gpu_count == 4


def test_gpu_dc_sample() -> None:
    inv = load_inventory_file(sample_path("gpu-dc"))
    assert len(inv.workers) == 4
    assert all(len(w.gpus) == 8 for w in inv.workers)
    assert all(g.memory_mb == 80 * 1024 for w in inv.workers for g in w.gpus)
    models = {g.model for w in inv.workers for g in w.gpus}
    assert any("A100" in m for m in models) and any("H100" in m for m in models)
    assert inv.gpu_count == 32


def test_cpu_branch_sample() -> None:
    inv = load_inventory_file(sample_path("cpu-branch"))
    assert len(inv.workers) == 3
    assert all(w.gpus == () and w.cpu_millis > 0 and w.ram_mb > 0 for w in inv.workers)


def test_sample_uuids_are_unique_across_the_federation() -> None:
    uuids = [g.uuid for s in SAMPLES for w in load_inventory_file(sample_path(s)).workers for g in w.gpus]
    assert len(uuids) == len(set(uuids)) == 36


def test_unknown_sample() -> None:
    with pytest.raises(ValueError, match="unknown sample inventory"):
        sample_path("mars")


# --- fingerprint ----------------------------------------------------------------------------------

BASE = Inventory(workers=(
    Worker("a", 1000, 2048, (Gpu("GPU-1", "L4", 24576), Gpu("GPU-2", "L4", 24576))),
    Worker("b", 2000, 4096),
))


def test_fingerprint_is_stable() -> None:
    fp = fingerprint(BASE)
    assert len(fp) == 32
    assert fingerprint(load_inventory_file(sample_path("hq"))) == fingerprint(load_inventory_file(sample_path("hq")))
    assert fingerprint(BASE) == fp
    # Pinned: a change of encoding is a change of every node's reported fingerprint; do it on purpose.
    assert fp.hex() == "1e2003faa1ddf6040b2efbb08664d374c8af5f520dad5b3a19db0f9240ce9d2b"


def test_fingerprint_ignores_order() -> None:
    shuffled = Inventory(workers=(
        Worker("b", 2000, 4096),
        Worker("a", 1000, 2048, (Gpu("GPU-2", "L4", 24576), Gpu("GPU-1", "L4", 24576))),
    ))
    assert fingerprint(shuffled) == fingerprint(BASE)


def _with_gpu(gpu: Gpu) -> Inventory:
    a = BASE.workers[0]
    return replace(BASE, workers=(replace(a, gpus=(gpu, a.gpus[1])), BASE.workers[1]))


@pytest.mark.parametrize("changed", [
    _with_gpu(Gpu("GPU-1", "L4", 24576, healthy=False)),
    _with_gpu(Gpu("GPU-1", "L4", 24575)),
    _with_gpu(Gpu("GPU-1", "L40", 24576)),
    _with_gpu(Gpu("GPU-9", "L4", 24576)),
    replace(BASE, workers=(BASE.workers[0], replace(BASE.workers[1], cpu_millis=2001))),
    replace(BASE, workers=(BASE.workers[0], replace(BASE.workers[1], ram_mb=4097))),
    replace(BASE, workers=(BASE.workers[0], replace(BASE.workers[1], name="c"))),
    replace(BASE, workers=BASE.workers[:1]),
    Inventory(),
], ids=["health", "memory", "model", "uuid", "cpu", "ram", "worker-name", "worker-removed", "empty"])
def test_fingerprint_changes_with_capacity_or_health(changed: Inventory) -> None:
    assert fingerprint(changed) != fingerprint(BASE)


def test_fingerprint_has_no_field_boundary_ambiguity() -> None:
    one = Inventory(workers=(Worker("a,b", 1, 1),))
    two = Inventory(workers=(Worker("a", 1, 1), Worker("b", 1, 1)))
    assert fingerprint(one) != fingerprint(two)
