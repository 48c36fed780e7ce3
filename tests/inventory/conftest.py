from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

from tests.inventory.fake_pynvml import FakeGpu, FakeNvml


@pytest.fixture
def install_nvml(monkeypatch: pytest.MonkeyPatch) -> Callable[[FakeNvml], FakeNvml]:
    """Put a fake `pynvml` module in sys.modules for the test (the real one is never touched)."""

    def install(fake: FakeNvml) -> FakeNvml:
        monkeypatch.setitem(sys.modules, "pynvml", fake.module())
        return fake

    return install


@pytest.fixture
def no_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    """`import pynvml` raises ImportError, whether or not nvidia-ml-py is installed here."""
    monkeypatch.setitem(sys.modules, "pynvml", None)


@pytest.fixture
def two_gpus() -> FakeNvml:
    return FakeNvml([FakeGpu("GPU-bbbb"), FakeGpu("GPU-aaaa", name="NVIDIA H100 80GB HBM3")])
