"""Static inventory files: valid TOML and JSON load sorted; every malformed file is a clear error."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fedraft.domain.placement.model import Gpu, Inventory, Worker
from fedraft.errors import ConfigError, OperatorError
from fedraft.inventory.base import MAX_GPUS_PER_WORKER, MAX_INVENTORY_BYTES, MAX_WORKERS, InventoryFileError
from fedraft.inventory.static import StaticInventory, load_inventory_file, parse_inventory

VALID_TOML = """\
[[workers]]
name = "gpu-b"
cpu_millis = 16000
ram_mb = 65536

[[workers]]
name = "gpu-a"
cpu_millis = 32000
ram_mb = 262144
[[workers.gpus]]
uuid = "GPU-2"
model = "NVIDIA A100-SXM4-80GB"
memory_mb = 81920
[[workers.gpus]]
uuid = "GPU-1"
model = "NVIDIA A100-SXM4-80GB"
memory_mb = 81920
healthy = false
"""

EXPECTED = Inventory(workers=(
    Worker("gpu-a", 32000, 262144, (
        Gpu("GPU-1", "NVIDIA A100-SXM4-80GB", 81920, healthy=False),
        Gpu("GPU-2", "NVIDIA A100-SXM4-80GB", 81920, healthy=True),
    )),
    Worker("gpu-b", 16000, 65536, ()),
))


def _doc() -> dict[str, Any]:
    return {"workers": [
        {"name": "gpu-a", "cpu_millis": 32000, "ram_mb": 262144,
         "gpus": [{"uuid": "GPU-1", "model": "NVIDIA A100-SXM4-80GB", "memory_mb": 81920}]},
        {"name": "gpu-b", "cpu_millis": 16000, "ram_mb": 65536},
    ]}


def _write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    return p


def _json_error(tmp_path: Path, doc: object) -> str:
    path = _write(tmp_path, "inv.json", json.dumps(doc))
    with pytest.raises(InventoryFileError) as info:
        load_inventory_file(path)
    assert str(path) in str(info.value)
    return str(info.value)


# --- valid files ----------------------------------------------------------------------------------


def test_toml_loads_sorted_with_defaults(tmp_path: Path) -> None:
    assert load_inventory_file(_write(tmp_path, "inv.toml", VALID_TOML)) == EXPECTED


def test_json_loads_the_same_document(tmp_path: Path) -> None:
    doc = {"workers": [
        {"name": "gpu-b", "cpu_millis": 16000, "ram_mb": 65536, "gpus": []},
        {"name": "gpu-a", "cpu_millis": 32000, "ram_mb": 262144, "gpus": [
            {"uuid": "GPU-2", "model": "NVIDIA A100-SXM4-80GB", "memory_mb": 81920},
            {"uuid": "GPU-1", "model": "NVIDIA A100-SXM4-80GB", "memory_mb": 81920, "healthy": False},
        ]},
    ]}
    assert load_inventory_file(_write(tmp_path, "inv.JSON", json.dumps(doc))) == EXPECTED


def test_empty_worker_list_is_an_empty_inventory(tmp_path: Path) -> None:
    assert load_inventory_file(_write(tmp_path, "inv.toml", "workers = []\n")) == Inventory()


def test_zero_cpu_and_ram_are_allowed(tmp_path: Path) -> None:
    doc = _doc()
    doc["workers"][1].update(cpu_millis=0, ram_mb=0)
    inv = load_inventory_file(_write(tmp_path, "inv.json", json.dumps(doc)))
    assert inv.workers[1] == Worker("gpu-b", 0, 0)


def test_read_rereads_the_file_each_call(tmp_path: Path) -> None:
    path = _write(tmp_path, "inv.toml", VALID_TOML)
    source = StaticInventory(path)
    assert source.read() == EXPECTED
    path.write_text(VALID_TOML.replace("healthy = false", "healthy = true"))
    assert source.read().gpu_count == 2
    assert str(path) in source.describe()


def test_limits_exactly_at_the_cap_are_fine(tmp_path: Path) -> None:
    gpus = [{"uuid": f"GPU-{j}", "model": "m", "memory_mb": 1} for j in range(MAX_GPUS_PER_WORKER)]
    doc = {"workers": [{"name": "w", "cpu_millis": 1, "ram_mb": 1, "gpus": gpus}]}
    assert len(load_inventory_file(_write(tmp_path, "inv.json", json.dumps(doc))).workers[0].gpus) == 64


# --- file-level problems --------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InventoryFileError, match="not found"):
        load_inventory_file(tmp_path / "nope.toml")


def test_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(InventoryFileError, match=r"unknown format '\.yaml'") as info:
        load_inventory_file(_write(tmp_path, "inv.yaml", "workers: []"))
    assert "*.toml or *.json" in str(info.value)


def test_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dir.toml").mkdir()
    with pytest.raises(InventoryFileError, match="not a regular file"):
        load_inventory_file(tmp_path / "dir.toml")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.toml")
    with pytest.raises(InventoryFileError, match="not a regular file"):
        load_inventory_file(tmp_path / "fifo.toml")


def test_oversized_file(tmp_path: Path) -> None:
    body = VALID_TOML + "#" * MAX_INVENTORY_BYTES
    with pytest.raises(InventoryFileError, match=f"larger than {MAX_INVENTORY_BYTES} bytes"):
        load_inventory_file(_write(tmp_path, "big.toml", body))


def test_oversized_bytes_to_parse() -> None:
    with pytest.raises(InventoryFileError, match="larger than"):
        parse_inventory(b" " * (MAX_INVENTORY_BYTES + 1), "JSON", "inventory x")


def test_not_utf8(tmp_path: Path) -> None:
    with pytest.raises(InventoryFileError, match="not UTF-8"):
        load_inventory_file(_write(tmp_path, "inv.toml", b'workers = []\n# \xff\xfe\n'))


def test_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(InventoryFileError, match=r"inv\.toml is not valid TOML: .*line 2"):
        load_inventory_file(_write(tmp_path, "inv.toml", "[[workers]]\nname = \n"))


def test_bad_json(tmp_path: Path) -> None:
    with pytest.raises(InventoryFileError, match=r"inv\.json is not valid JSON: .*line 1"):
        load_inventory_file(_write(tmp_path, "inv.json", '{"workers": [}'))


def test_json_duplicate_key_is_refused(tmp_path: Path) -> None:
    text = '{"workers": [{"name": "a", "name": "b", "cpu_millis": 1, "ram_mb": 1}]}'
    with pytest.raises(InventoryFileError, match="key 'name' appears twice"):
        load_inventory_file(_write(tmp_path, "inv.json", text))


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_json_nan_and_infinity_are_refused(tmp_path: Path, constant: str) -> None:
    text = '{"workers": [{"name": "a", "cpu_millis": ' + constant + ', "ram_mb": 1}]}'
    with pytest.raises(InventoryFileError, match="not valid JSON"):
        load_inventory_file(_write(tmp_path, "inv.json", text))


def test_deep_nesting_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InventoryFileError, match="not valid JSON"):
        load_inventory_file(_write(tmp_path, "inv.json", "[" * 100_000 + "]" * 100_000))


def test_errors_are_operator_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_inventory_file(tmp_path / "nope.json")
    assert isinstance(info.value, OperatorError)


Edit = Callable[[dict[str, Any]], object]


# --- document problems: each names the file and the field ------------------------------------------


def _drop(key: str, worker: int = 0) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        del doc["workers"][worker][key]
    return edit


def _set(value: object, key: str, worker: int = 0) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        doc["workers"][worker][key] = value
    return edit


def _set_gpu(value: object, key: str) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        doc["workers"][0]["gpus"][0][key] = value
    return edit


def _drop_gpu(key: str) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        del doc["workers"][0]["gpus"][0][key]
    return edit


CASES: dict[str, tuple[Edit | None, str]] = {
    "unknown top-level key": (lambda d: d.update(pools=[]), "has unknown key(s) 'pools'"),
    "workers missing": (lambda d: d.pop("workers"), "missing 'workers'"),
    "workers not a list": (lambda d: d.update(workers={"a": 1}), "workers must be a list of tables, got a table"),
    "worker not a table": (lambda d: d["workers"].append("gpu-c"), "workers[2] must be a table, got a string"),
    "unknown worker key": (_set(1, "cpus"), "workers[0] has unknown key(s) 'cpus'"),
    "typo suggests the key": (_set(1, "ram_mib"), "'ram_mib' (did you mean 'ram_mb'?)"),
    "name missing": (_drop("name"), "workers[0] is missing required key 'name'"),
    "name not a string": (_set(7, "name"), "workers[0].name must be a string, got an integer"),
    "name empty": (_set("", "name"), "workers[0].name must not be empty"),
    "name non-ASCII": (_set("gpu-\u00e9", "name"), "workers[0].name 'gpu-\\xe9' must be ASCII"),
    "name control char": (_set("gpu\x1b[31m", "name"), "workers[0].name 'gpu\\x1b[31m' must not contain control"),
    "name with space": (_set("gpu a", "name"), "workers[0].name 'gpu a' may contain only ASCII letters"),
    "name too long": (_set("a" * 129, "name"), "is 129 characters long, at most 128"),
    "duplicate worker": (_set("gpu-b", "name"), "workers[1].name 'gpu-b' is already the name of workers[0]"),
    "cpu missing": (_drop("cpu_millis"), "(worker 'gpu-a') is missing required key 'cpu_millis'"),
    "cpu negative": (_set(-1, "cpu_millis"), "(worker 'gpu-a').cpu_millis must be at least 0, got -1"),
    "cpu float": (_set(1.5, "cpu_millis"), ".cpu_millis must be an integer, got a float"),
    "cpu bool": (_set(True, "cpu_millis"), ".cpu_millis must be an integer, got a boolean"),
    "cpu string": (_set("32000", "cpu_millis"), ".cpu_millis must be an integer, got a string"),
    "ram huge": (_set(2**63, "ram_mb"), ".ram_mb must be at most"),
    "ram null": (_set(None, "ram_mb"), ".ram_mb must be an integer, got null"),
    "gpus not a list": (_set({"uuid": "x"}, "gpus"), ".gpus must be a list of tables, got a table"),
    "gpu not a table": (_set([1], "gpus"), ".gpus[0] must be a table, got an integer"),
    "unknown gpu key": (_set_gpu(1, "mig"), ".gpus[0] has unknown key(s) 'mig'"),
    "uuid missing": (_drop_gpu("uuid"), ".gpus[0] is missing required key 'uuid'"),
    "uuid bad chars": (_set_gpu("GPU 1", "uuid"), ".gpus[0].uuid 'GPU 1' may contain only"),
    "uuid non-ASCII": (_set_gpu("GPU-\u0661", "uuid"), ".gpus[0].uuid 'GPU-\\u0661' must be ASCII"),
    "model missing": (_drop_gpu("model"), ".gpus[0] is missing required key 'model'"),
    "model control": (_set_gpu("A100\n", "model"), ".gpus[0].model 'A100\\n' must not contain control"),
    "model padded": (_set_gpu(" A100", "model"), "must not start or end with spaces"),
    "memory missing": (_drop_gpu("memory_mb"), "is missing required key 'memory_mb'"),
    "memory negative": (_set_gpu(-5, "memory_mb"), ".gpus[0].memory_mb must be at least 1, got -5"),
    "memory zero": (_set_gpu(0, "memory_mb"), ".gpus[0].memory_mb must be at least 1, got 0"),
    "healthy not bool": (_set_gpu("yes", "healthy"), ".gpus[0].healthy must be true or false, got a string"),
    "healthy int": (_set_gpu(1, "healthy"), ".gpus[0].healthy must be true or false, got an integer"),
    "top level a list": (None, "the top level must be a table"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_document_names_file_and_field(tmp_path: Path, case: str) -> None:
    edit, expected = CASES[case]
    if edit is None:
        message = _json_error(tmp_path, [_doc()])
    else:
        doc = _doc()
        edit(doc)
        message = _json_error(tmp_path, doc)
    assert expected in message, message


def test_duplicate_gpu_uuid_across_workers(tmp_path: Path) -> None:
    doc = _doc()
    doc["workers"][1]["gpus"] = [{"uuid": "GPU-1", "model": "L4", "memory_mb": 24576}]
    message = _json_error(tmp_path, doc)
    assert "workers[1] (worker 'gpu-b').gpus[0].uuid 'GPU-1' is already used by workers[0]" in message


def test_too_many_workers(tmp_path: Path) -> None:
    doc = {"workers": [{"name": f"w{i}", "cpu_millis": 1, "ram_mb": 1} for i in range(MAX_WORKERS + 1)]}
    assert f"workers has {MAX_WORKERS + 1} entries, at most {MAX_WORKERS}" in _json_error(tmp_path, doc)


def test_too_many_gpus_on_a_worker(tmp_path: Path) -> None:
    gpus = [{"uuid": f"GPU-{j}", "model": "m", "memory_mb": 1} for j in range(MAX_GPUS_PER_WORKER + 1)]
    doc = {"workers": [{"name": "w", "cpu_millis": 1, "ram_mb": 1, "gpus": gpus}]}
    assert f"has {MAX_GPUS_PER_WORKER + 1} entries, at most {MAX_GPUS_PER_WORKER} per worker" in \
        _json_error(tmp_path, doc)


def test_toml_datetime_is_a_wrong_type(tmp_path: Path) -> None:
    text = '[[workers]]\nname = "w"\ncpu_millis = 2024-01-01\nram_mb = 1\n'
    with pytest.raises(InventoryFileError, match=r"cpu_millis must be an integer, got a date/time"):
        load_inventory_file(_write(tmp_path, "inv.toml", text))


def test_toml_singular_table_name_is_an_unknown_key(tmp_path: Path) -> None:
    text = '[[worker]]\nname = "w"\ncpu_millis = 1\nram_mb = 1\n'
    with pytest.raises(InventoryFileError, match=r"unknown key\(s\) 'worker' \(did you mean 'workers'\?\)"):
        load_inventory_file(_write(tmp_path, "inv.toml", text))


# -- GPU faults and MIG instances (issue 9) ---------------------------------------------------------

MIG_DOC = """
[[workers]]
name = "gpu-a"
cpu_millis = 32000
ram_mb = 262144
[[workers.gpus]]
uuid = "MIG-b"
model = "NVIDIA A100-SXM4-80GB MIG"
memory_mb = 19968
parent = "GPU-card"
profile = "2g.20gb"
[[workers.gpus]]
uuid = "MIG-a"
model = "NVIDIA A100-SXM4-80GB MIG"
memory_mb = 9856
parent = "GPU-card"
profile = "1g.10gb"
[[workers.gpus]]
uuid = "GPU-hot"
model = "NVIDIA H100"
memory_mb = 81920
fault = "thermal alarm: hardware thermal slowdown"
"""


def test_mig_instances_and_a_fault_are_described() -> None:
    inv = parse_inventory(MIG_DOC.encode(), "TOML", "inventory t")
    assert inv.workers[0].gpus == (
        Gpu("GPU-hot", "NVIDIA H100", 81920, healthy=False, fault="thermal alarm: hardware thermal slowdown"),
        Gpu("MIG-a", "NVIDIA A100-SXM4-80GB MIG", 9856, parent="GPU-card", profile="1g.10gb"),
        Gpu("MIG-b", "NVIDIA A100-SXM4-80GB MIG", 19968, parent="GPU-card", profile="2g.20gb"),
    )
    assert inv.gpu_count == 2


@pytest.mark.parametrize(("extra", "message"), [
    ('healthy = true\nfault = "xid 79"', "fault is given for a GPU marked healthy = true"),
    ('parent = "GPU-x"', "needs both 'parent' and 'profile'"),
    ('profile = "1g.10gb"', "needs both 'parent' and 'profile'"),
    ('parent = "GPU-x"\nprofile = "1g 10gb"', "profile '1g 10gb' may contain only"),
])
def test_bad_fault_or_mig_keys_are_refused(extra: str, message: str) -> None:
    doc = ('[[workers]]\nname = "w"\ncpu_millis = 1\nram_mb = 1\n[[workers.gpus]]\nuuid = "MIG-1"\n'
           f'model = "m"\nmemory_mb = 10\n{extra}\n')
    with pytest.raises(InventoryFileError, match=message):
        parse_inventory(doc.encode(), "TOML", "inventory t")


def test_a_card_listed_whole_and_as_a_mig_parent_is_refused() -> None:
    doc = MIG_DOC + '[[workers.gpus]]\nuuid = "GPU-card"\nmodel = "A100"\nmemory_mb = 81920\n'
    with pytest.raises(InventoryFileError, match="'GPU-card' is also listed as a whole GPU"):
        parse_inventory(doc.encode(), "TOML", "inventory t")
