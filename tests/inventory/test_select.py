"""Choosing the inventory source: auto falls back NVML -> static file -> empty, logging one line why."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from fedraft.domain.placement.model import Inventory
from fedraft.errors import ConfigError, OperatorError
from fedraft.inventory import NullInventory, NvmlInventory, StaticInventory, open_inventory, sample_path
from fedraft.inventory.base import InventoryFileError
from tests.inventory.fake_pynvml import FakeNvml, LibraryNotFound, NoPermission

Install = Callable[[FakeNvml], FakeNvml]
LOGGER = "fedraft.inventory"


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name.startswith(LOGGER)]


@pytest.mark.usefixtures("no_pynvml")
def test_auto_without_pynvml_uses_the_static_file(caplog: pytest.LogCaptureFixture) -> None:
    path = sample_path("hq")
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        source = open_inventory("auto", path, "hq-node")
    assert isinstance(source, StaticInventory)
    assert source.read().gpu_count == 4
    assert _lines(caplog) == [(logging.INFO, "inventory: nvidia-ml-py is not installed (no pynvml module): "
                                             f"using static inventory file {path}")]


def test_auto_without_driver_uses_the_static_file(
        install_nvml: Install, caplog: pytest.LogCaptureFixture) -> None:
    install_nvml(FakeNvml([], init_error=LibraryNotFound))
    path = Path("fed/hq/inventory.toml")
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        source = open_inventory("auto", path, "hq-node")
    assert isinstance(source, StaticInventory)
    # The file does not exist (yet): still the operator's intended source, with a warning saying so.
    assert _lines(caplog) == [(logging.WARNING, "inventory: no NVIDIA driver (libnvidia-ml.so not found): using "
                                                "static inventory file fed/hq/inventory.toml, which does not read "
                                                "yet: inventory fed/hq/inventory.toml not found (check the "
                                                "inventory path)")]
    with pytest.raises(InventoryFileError):
        source.read()


def test_auto_with_a_good_file_and_no_driver_logs_info(
        install_nvml: Install, caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    install_nvml(FakeNvml([], init_error=LibraryNotFound))
    path = tmp_path / "inventory.toml"
    path.write_bytes(sample_path("cpu-branch").read_bytes())
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        open_inventory("auto", path, "n")
    assert _lines(caplog) == [(logging.INFO, "inventory: no NVIDIA driver (libnvidia-ml.so not found): "
                                             f"using static inventory file {path}")]


def test_auto_with_broken_nvml_warns(install_nvml: Install, caplog: pytest.LogCaptureFixture) -> None:
    install_nvml(FakeNvml([], init_error=NoPermission))
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        source = open_inventory("auto", sample_path("gpu-dc"), "n")
    assert isinstance(source, StaticInventory)
    assert [level for level, _ in _lines(caplog)] == [logging.WARNING]
    assert "NVML refused access" in caplog.text


@pytest.mark.usefixtures("no_pynvml")
def test_auto_with_nothing_is_empty_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        source = open_inventory("auto", None, "n")
    assert isinstance(source, NullInventory)
    assert source.read() == Inventory()
    assert _lines(caplog) == [(logging.WARNING, "inventory: nvidia-ml-py is not installed (no pynvml module): "
                                                "no static inventory file given: reporting an empty inventory")]


def test_auto_prefers_nvml_when_it_initialises(
        install_nvml: Install, two_gpus: FakeNvml, caplog: pytest.LogCaptureFixture) -> None:
    install_nvml(two_gpus)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        source = open_inventory("auto", sample_path("hq"), "gpu-host")
    assert isinstance(source, NvmlInventory)
    assert source.read().workers[0].name == "gpu-host"
    assert _lines(caplog)[0] == (logging.INFO, "inventory: NVML initialised (driver 550.54.15): "
                                               "using NVML inventory for worker gpu-host")


def test_auto_never_raises_on_a_surprising_import(monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    import builtins

    real_import = builtins.__import__

    def broken(name: str, *args: object, **kwargs: object) -> object:
        if name == "pynvml":
            raise OSError("libc exploded")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", broken)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        source = open_inventory("auto", None, "n")
    assert isinstance(source, NullInventory)
    assert "pynvml failed to import: libc exploded" in caplog.text


# --- explicit kinds -------------------------------------------------------------------------------


@pytest.mark.usefixtures("no_pynvml")
def test_explicit_nvml_without_pynvml_is_an_operator_error() -> None:
    with pytest.raises(OperatorError) as info:
        open_inventory("nvml", None, "n")
    assert "inventory kind 'nvml': nvidia-ml-py is not installed" in str(info.value)
    assert info.value.hint


def test_explicit_nvml_works(install_nvml: Install, two_gpus: FakeNvml) -> None:
    install_nvml(two_gpus)
    assert open_inventory("nvml", None, "n").read().gpu_count == 2


def test_explicit_static_needs_a_path() -> None:
    with pytest.raises(ConfigError, match="needs an inventory file"):
        open_inventory("static", None, "n")


def test_explicit_static_with_a_bad_file_fails_at_open(tmp_path: Path) -> None:
    path = tmp_path / "inv.toml"
    path.write_text("workers = 3\n")
    with pytest.raises(OperatorError, match=r"inv\.toml: workers must be a list"):
        open_inventory("static", path, "n")


def test_explicit_static_never_tries_nvml(install_nvml: Install, two_gpus: FakeNvml) -> None:
    fake = install_nvml(two_gpus)
    source = open_inventory("static", sample_path("cpu-branch"), "n")
    assert isinstance(source, StaticInventory)
    assert fake.init_calls == 0


def test_none_is_empty() -> None:
    assert open_inventory("none", sample_path("hq"), "n").read() == Inventory()


def test_unknown_kind() -> None:
    with pytest.raises(ConfigError, match="unknown inventory kind 'gpu'") as info:
        open_inventory("gpu", None, "n")
    assert "auto, static, nvml, none" in info.value.hint
