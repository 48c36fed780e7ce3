"""`fedraft catalog` without a federation: help, argument checks, and output from canned answers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from fedraft._proto.fedraft.v1 import catalog_pb2 as cpb
from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.cli import catalog_cmd
from fedraft.cli.main import COMMAND_MODULES, main
from fedraft.domain.outcome import Code

HEX = "ab" * 32
ACTIONS = ["catalog list", "catalog show", "catalog publish", "catalog replica", "catalog promote"]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: --help, or a missing argument
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def one_error(code: int, err: str, expected: int, fragment: str) -> None:
    assert code == expected, err
    lines = err.splitlines()
    assert "Traceback" not in err
    assert len([line for line in lines if line.startswith("error:")]) == 1, err
    assert all(line.startswith(("error:", "hint:")) for line in lines), err
    assert fragment in lines[0], err


@pytest.fixture(autouse=True)
def _no_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDRAFT_PROFILE", raising=False)


def test_the_module_is_registered() -> None:
    assert "fedraft.cli.catalog_cmd" in COMMAND_MODULES


@pytest.mark.parametrize("command", ["catalog", *ACTIONS])
def test_help_exits_0_and_shows_an_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run([*command.split(), "--help"], capsys)
    assert code == 0
    assert "example:" in out and f"fedraft {command} " in out


@pytest.mark.parametrize("command", ACTIONS)
def test_every_action_offers_json_and_a_target(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run([*command.split(), "--help"], capsys)
    assert "-o {table,json}" in out and "--profile FILE" in out


BAD = [
    (["catalog"], "say list, show, publish, replica or promote"),
    (["catalog", "show", "Llama"], "model 'Llama'"),
    (["catalog", "publish", "m", "--version", "0", "--sha256", HEX, "--size", "1"], "--version 0 is out of range"),
    (["catalog", "publish", "m", "--version", "1.2", "--sha256", HEX, "--size", "1"], "--version: '1.2'"),
    (["catalog", "publish", "m", "--version", "1", "--sha256", "abc", "--size", "1"], "--sha256: 'abc'"),
    (["catalog", "publish", "m", "--version", "1", "--sha256", "zz" * 32, "--size", "1"], "is not 64 hex digits"),
    (["catalog", "publish", "m", "--version", "1", "--sha256", HEX, "--size", "0"], "--size 0 is out of range"),
    (["catalog", "publish", "m", "--version", "1", "--sha256", HEX, "--size", "1", "--gpu-mem", "-1"],
     "--gpu-mem -1"),
    (["catalog", "publish", "M", "--version", "1", "--sha256", HEX, "--size", "1"], "model 'M'"),
    (["catalog", "replica", "m", "--version", "x"], "--version: 'x'"),
    (["catalog", "replica", "m", "--version", "1", "--pool", "GPU"], "--pool: pool 'GPU'"),
    (["catalog", "promote", "m", "Not_A_Pool"], "pool 'Not_A_Pool'"),
]


@pytest.mark.parametrize(("argv", "fragment"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_arguments_are_one_line_and_exit_2(argv: list[str], fragment: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(argv, capsys)
    one_error(code, err, 2, fragment)
    assert out == ""


@pytest.mark.parametrize("argv", [["catalog", "publish", "m", "--sha256", HEX, "--size", "1"],
                                  ["catalog", "replica", "m"], ["catalog", "promote", "m"], ["catalog", "show"]])
def test_missing_required_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(argv, capsys)
    assert code == 2 and "required" in err


@pytest.mark.parametrize("argv", [
    ["catalog", "list"],
    ["catalog", "publish", "m", "--version", "3", "--sha256", HEX.upper(), "--size", "10"],
    ["catalog", "replica", "m", "--version", "3"],
    ["catalog", "promote", "m", "gpu-dc"],
])
def test_good_arguments_get_as_far_as_the_target(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    one_error(*run(argv, capsys)[::2], 2, "no target")


# --- output from canned answers --------------------------------------------------------------------

class FakeClient:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.results: dict[str, pb.Result] = {}
        self.catalog: list[cpb.CatalogRecord] = []

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def _answer(self, name: str, *args: Any) -> pb.Result:
        self.calls.append((name, args))
        return self.results.get(name, pb.Result(code=Code.OK, index=42, message=f"{name} done"))

    def publish_model(self, *args: Any, check: bool = True) -> pb.Result:
        return self._answer("publish_model", *args)

    def report_replica(self, *args: Any, check: bool = True) -> pb.Result:
        return self._answer("report_replica", *args)

    def promote_master(self, *args: Any, check: bool = True) -> pb.Result:
        return self._answer("promote_master", *args)

    def list(self, collection: str, *, prefix: str = "", stale: bool = False) -> list[Any]:
        assert collection == "catalog"
        return [m for m in self.catalog if m.name.startswith(prefix)]


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClient]:
    client = FakeClient()
    monkeypatch.setattr(catalog_cmd, "connect", lambda _args: client)
    yield client


def _record() -> cpb.CatalogRecord:
    return cpb.CatalogRecord(
        name="llama-7b", master="hq", master_since_ms=1_800_000_000_000,
        versions=[cpb.ModelVersionRecord(version=1, sha256=b"\x01" * 32, size_bytes=13_476_839_424,
                                         published_by="hq", published_index=7),
                  cpb.ModelVersionRecord(version=2, sha256=b"\x02" * 32, size_bytes=13_500_000_000,
                                         gpu_memory_mb=16_000, published_by="hq", published_index=9)],
        replicas=[cpb.ReplicaRecord(pool="cpu-branch", version=1, reported_ms=1_800_000_000_000),
                  cpb.ReplicaRecord(pool="gpu-dc", version=2, reported_ms=1_800_000_000_000)])


def test_publish_sends_the_values(fake: FakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["catalog", "publish", "llama-7b", "--version", "3", "--sha256", HEX.upper(),
                          "--size", "1000", "--gpu-mem", "16000"], capsys)
    assert code == 0, err
    assert fake.calls == [("publish_model", ("llama-7b", 3, bytes.fromhex(HEX), 1000, 16000))]
    assert out.strip() == "publish_model done (index 42)"


def test_replica_defaults_to_the_keys_pool(fake: FakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["catalog", "replica", "llama-7b", "--version", "2"], capsys)[0] == 0
    assert run(["catalog", "replica", "llama-7b", "--version", "2", "--pool", "gpu-dc", "-o", "json"], capsys)[0] == 0
    assert fake.calls == [("report_replica", ("llama-7b", 2, "")), ("report_replica", ("llama-7b", 2, "gpu-dc"))]


def test_promote_refused_is_one_line_with_a_hint(fake: FakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    fake.results["promote_master"] = pb.Result(code=Code.PERMISSION_DENIED,
                                               message="a satellite never promotes itself: ...")
    code, out, err = run(["catalog", "promote", "llama-7b", "gpu-dc"], capsys)
    one_error(code, err, 1, "PERMISSION_DENIED: a satellite never promotes itself")
    assert "hint: an admin of a pool other than gpu-dc proposes it" in err and out == ""
    fake.results["promote_master"] = pb.Result(code=Code.FAILED_PRECONDITION, message="gpu-dc holds no replica")
    code, _, err = run(["catalog", "promote", "llama-7b", "gpu-dc"], capsys)
    assert code == 1 and "fedraft catalog show llama-7b" in err


def test_list_and_show(fake: FakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    fake.catalog = [_record()]
    code, out, _ = run(["catalog", "list"], capsys)
    assert code == 0
    header, row = out.splitlines()[1:3]
    assert header.split() == ["NAME", "MASTER", "LATEST", "VERSIONS", "SIZE", "GPU_MEM_MB", "HOLDERS"]
    assert row.split() == ["llama-7b", "hq", "2", "2", "13.5", "GB", "16000", "gpu-dc,", "hq"]
    code, out, _ = run(["catalog", "list", "-o", "json"], capsys)
    doc, = json.loads(out)
    assert (doc["latest"], doc["holders"], doc["versions"][0]["sha256"]) == (2, ["gpu-dc", "hq"], "01" * 32)
    code, out, _ = run(["catalog", "show", "llama-7b"], capsys)
    assert code == 0
    assert "holders of the latest: gpu-dc, hq" in out
    assert "satellite (behind)" in out and "02" * 32 in out
    code, _, err = run(["catalog", "show", "llama"], capsys)  # a prefix is not a name
    one_error(code, err, 4, "model llama is not in the catalog")


@pytest.mark.parametrize(("n", "text"), [(0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (13_476_839_424, "13.5 GB"),
                                         (2 * 10**15, "2000.0 TB")])
def test_size_text(n: int, text: str) -> None:
    assert catalog_cmd.size_text(n) == text
