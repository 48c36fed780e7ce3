"""The registry's rules (SPEC D8) as pure transitions."""

from __future__ import annotations

import pytest

from fedraft.domain import registry as r
from fedraft.domain.commands import CompareAndSet, Delete, Put
from fedraft.domain.outcome import Code
from fedraft.domain.validity import Window, effective_time, window_problem


class View:
    def __init__(self) -> None:
        self.records: dict[str, r.Record] = {}

    def registry_get(self, key: str) -> r.Record | None:
        return self.records.get(key)

    def run(self, command: Put | Delete | CompareAndSet, index: int, ordinal: int = 0):  # type: ignore[no-untyped-def]
        outcome, writes = r.apply(self, command, r.Revision(index, ordinal))
        for w in writes:
            if isinstance(w, r.SetRecord):
                self.records[w.record.key] = w.record
            else:
                del self.records[w.key]
        return outcome


def test_versions_count_from_one_and_reset_on_delete() -> None:
    v = View()
    assert v.run(Put("/routes/a", b"1"), 5).record.version == 1
    second = v.run(Put("/routes/a", b"2"), 6, 3).record
    assert (second.version, second.create_revision, second.mod_revision) == (2, r.Revision(5, 0), r.Revision(6, 3))
    assert v.run(Delete("/routes/a"), 7).deleted.version == 2
    assert v.run(Put("/routes/a", b"3"), 8).record.version == 1


def test_compare_and_set_zero_means_absent() -> None:
    v = View()
    assert v.run(CompareAndSet("/settings/x", b"a", 0), 1).ok
    refused = v.run(CompareAndSet("/settings/x", b"b", 0), 2)
    assert refused.code == Code.FAILED_PRECONDITION and "version of /settings/x is 1" in refused.message
    assert v.run(CompareAndSet("/settings/x", b"b", 1), 3).record.value == b"b"
    assert v.run(CompareAndSet("/settings/x", b"c", 1), 4).code == Code.FAILED_PRECONDITION


def test_delete_conditions() -> None:
    v = View()
    assert v.run(Delete("/routes/none"), 1).code == Code.NOT_FOUND
    v.run(Put("/routes/k", b"v"), 2)
    assert v.run(Delete("/routes/k", expected_version=2), 3).code == Code.FAILED_PRECONDITION
    assert v.run(Delete("/routes/k", expected_version=1), 4).ok


@pytest.mark.parametrize("key", ["/other/x", "routes/x", "/routes/", "/settings/", "/routes/a\x00b",
                                 "/routes/" + "x" * 600])
def test_bad_keys_are_refused(key: str) -> None:
    assert View().run(Put(key, b"v"), 1).code == Code.INVALID_ARGUMENT


def test_value_limit() -> None:
    v = View()
    assert v.run(Put("/routes/k", b"x" * r.MAX_VALUE_BYTES), 1).ok
    assert v.run(Put("/routes/k", b"x" * (r.MAX_VALUE_BYTES + 1)), 2).code == Code.INVALID_ARGUMENT


def test_windows() -> None:
    assert window_problem(Window(1000, 2000), 1500) is None
    assert window_problem(Window(1000, 2000), 2000) == "expired"
    assert window_problem(Window(2000, 1000), 1500) is not None
    assert window_problem(Window(0, 10 * 60 * 1000), 1) is not None  # longer than 5 min
    assert window_problem(Window(100_000, 150_000), 1_000) is not None  # issued in the future


def test_effective_time_is_clamped() -> None:
    assert effective_time(5000, 0) == 5000
    assert effective_time(4000, 5000) == 5000  # never goes back
    assert effective_time(10**9, 5000, max_step_ms=60_000) == 65_000  # never jumps far ahead
