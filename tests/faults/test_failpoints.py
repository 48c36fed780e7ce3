"""fedraft.failpoints: a no-op without FEDRAFT_FAILPOINTS; armed, it kills the process at the Nth hit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from fedraft import failpoints


def test_parse() -> None:
    assert failpoints._parse("") == {}
    assert failpoints._parse("journal.after_fsync=kill@37, apply.entry=kill") == {
        "journal.after_fsync": 37, "apply.entry": 1}
    for bad in ("nope=kill", "apply.entry=crash", "apply.entry=kill@x"):
        with pytest.raises(ValueError):
            failpoints._parse(bad)


def test_unarmed_in_this_process() -> None:
    assert os.environ.get(failpoints.ENV) is None
    failpoints.hit("apply.entry")  # nothing happens
    assert failpoints.armed() == {}


def test_armed_process_dies_at_the_nth_hit() -> None:
    code = ("from fedraft import failpoints\n"
            "for i in range(5):\n"
            "    print(i, flush=True)\n"
            "    failpoints.hit('apply.entry')\n")
    env = {**os.environ, failpoints.ENV: "apply.entry=kill@3"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdout.split() == ["0", "1", "2"]
    assert "failpoint apply.entry hit 3: kill -9" in proc.stderr
