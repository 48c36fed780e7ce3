"""`fedraft memory put|get|reseal|delete|list|recipients` and `fedraft fanout` without a federation: help,
argument checks, which key opens a box, and output from canned answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft._proto.fedraft.v1 import memory_pb2 as mpb
from fedraft.cli import fanout_cmd, memory_cmd
from fedraft.cli.main import build_parser
from fedraft.client import FanoutResult, PoolAnswer, RequestFailed
from fedraft.crypto.keyfile import write_private_key
from fedraft.crypto.signing import Identity
from fedraft.domain.outcome import Code
from tests.cli.test_placement_cli import assert_one_error, run

COMMANDS = ["memory", "memory put", "memory get", "memory reseal", "memory delete", "memory list",
            "memory recipients", "fanout"]


@pytest.fixture(autouse=True)
def _no_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDRAFT_PROFILE", raising=False)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_exits_0_and_shows_an_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run([*command.split(), "--help"], capsys)
    assert code == 0 and "example:" in out and f"fedraft {command} " in out


def test_the_parsers_take_what_the_brief_names() -> None:
    parser = build_parser()
    a = parser.parse_args(["memory", "put", "notes/plan", "hello", "--class", "internal", "--expect-version", "0"])
    assert (a.memory_key, a.value, a.data_class, a.expect_version, a.func) == \
        ("notes/plan", "hello", "internal", 0, memory_cmd.put)
    a = parser.parse_args(["memory", "get", "notes/plan", "--config", "n.toml", "--out", "x", "-o", "json"])
    assert (a.memory_key, a.config, a.out, a.output, a.open_key, a.func) == \
        ("notes/plan", Path("n.toml"), Path("x"), "json", None, memory_cmd.get)
    a = parser.parse_args(["memory", "reseal", "notes/plan", "--open-key", "agent.key", "--profile", "p.toml"])
    assert (a.memory_key, a.open_key, a.profile, a.func) == ("notes/plan", Path("agent.key"), Path("p.toml"),
                                                      memory_cmd.reseal)
    a = parser.parse_args(["fanout", "gpu quota", "--level", "high", "-o", "json", "--max-results", "5"])
    assert (a.query, a.level, a.output, a.max_results, a.func) == ("gpu quota", "high", "json", "5",
                                                                   fanout_cmd.fanout)
    assert parser.parse_args(["fanout", "q"]).level == "standard"


BAD = [
    (["memory", "put", "/abs", "v", "--class", "internal"], "memory key"),
    (["memory", "put", "k", "v", "--class", "Internal"], "--class: data class 'Internal'"),
    (["memory", "put", "k", "--class", "internal"], "give the value once"),
    (["memory", "put", "k", "v", "--stdin", "--class", "internal"], "give the value once"),
    (["memory", "put", "k", "--file", "/nonexistent/x", "--class", "internal"], "--file /nonexistent/x"),
    (["memory", "get", "a//b"], "memory key"),
    (["memory", "recipients", "BAD!"], "data class"),
    (["fanout", "   "], "QUERY must be"),
    (["fanout", "q", "--max-results", "99"], "--max-results 99 is out of range"),
    (["fanout", "q", "--timeout", "0"], "--timeout 0 is out of range"),
]


@pytest.mark.parametrize(("argv", "fragment"), BAD, ids=[" ".join(a)[:40] for a, _ in BAD])
def test_bad_arguments_are_one_error_line_and_exit_2(argv: list[str], fragment: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run([*argv, "--endpoints", "127.0.0.1:1", "--key", "k", "--ca", "c", "--cluster-id", "00" * 32],
                       capsys)
    assert_one_error(code, err, 2, fragment)


def test_invalid_level_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["fanout", "q", "--level", "none"], capsys)
    assert code == 2 and "invalid choice" in err


def test_an_oversized_value_is_refused_before_any_call(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * (64 * 1024 + 1))
    code, _, err = run(["memory", "put", "k", "--file", str(big), "--class", "internal", "--endpoints",
                        "127.0.0.1:1", "--key", "k", "--ca", "c", "--cluster-id", "00" * 32], capsys)
    assert_one_error(code, err, 2, "at most 65536 bytes")


RECORD = mpb.MemoryRecord(key="notes/plan", data_class="internal", level="high", pool="hq", author="hq-admin",
                          version=2, pools=["gpu-dc", "hq"], modified_index=9, modified_ms=1_800_000_000_000,
                          box_bytes=100)


class FakeClient:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.value = b"the plan"
        self.missing = False

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def put_memory(self, *args: Any, **kw: Any) -> pb.Result:
        self.calls.append(("put", args, kw))
        result = pb.Result(code=0, index=9)
        result.governance.memory.CopyFrom(RECORD)
        return result

    def open_memory(self, key: str, identity: Identity | None, *, min_index: int = 0) -> bytes:
        self.calls.append(("open", key, identity, min_index))
        if self.missing:
            raise RequestFailed(Code.NOT_FOUND, f"NOT_FOUND: no memory {key}")
        return self.value

    def reseal_memory(self, key: str, identity: Identity | None, *, check: bool = True) -> pb.Result:
        self.calls.append(("reseal", key, identity))
        return self.put_memory(key)

    def delete_memory(self, key: str, expected: int | None, *, check: bool = True) -> pb.Result:
        return pb.Result(code=int(Code.NOT_FOUND), message=f"no memory {key}")

    def list(self, collection: str, *, prefix: str = "") -> list[Any]:
        return [RECORD]

    def fanout(self, text: str, level: str, **kw: Any) -> FanoutResult:
        self.calls.append(("fanout", text, level, kw))
        ok = PoolAnswer("gpu-dc", "gpu-dc", "high", Code.OK, verified=True, signer="gpu-dc",
                        hits=(("quota.md", "GPU quota is 16", 2),), handler="folder-search")
        bad = PoolAnswer("evil", "evil", "high", Code.UNAUTHENTICATED, "answer does not verify: x", verify_error="x")
        return FanoutResult("hq", ("cpu-branch: trusted at standard, below high",),
                            (ok, bad) if text == "forged" else (ok,))


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    client = FakeClient()
    for module in (memory_cmd, fanout_cmd):
        monkeypatch.setattr(module, "connect", lambda _args: client)
    return client


def test_put_reports_the_pools_it_was_sealed_to(fake: FakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["memory", "put", "notes/plan", "the plan", "--class", "internal"], capsys)
    assert code == 0 and "sealed to gpu-dc, hq" in out
    assert fake.calls[0] == ("put", ("notes/plan", b"the plan", "internal"), {"expected_version": None,
                                                                             "check": False})


def test_get_opens_with_the_open_key_or_through_the_api(tmp_path: Path, fake: FakeClient,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["memory", "get", "notes/plan"], capsys)
    assert (code, out) == (0, "the plan") and fake.calls[-1][2] is None  # a node of the pool opens it
    agent = Identity.generate()
    write_private_key(tmp_path / "agent.key", agent)
    code, out, _ = run(["memory", "get", "notes/plan", "--open-key", str(tmp_path / "agent.key"), "-o", "json"],
                       capsys)
    assert code == 0 and json.loads(out) == {"key": "notes/plan", "value": "the plan"}
    assert fake.calls[-1][2] == agent
    fake.value = b"\xff\x00"
    code, out, _ = run(["memory", "get", "notes/plan", "-o", "json"], capsys)
    assert json.loads(out) == {"key": "notes/plan", "value_base64": "/wA="}
    fake.missing = True
    code, _, err = run(["memory", "get", "notes/plan"], capsys)
    assert_one_error(code, err, 4, "no memory notes/plan")


def test_reseal_delete_and_list(fake: FakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["memory", "reseal", "notes/plan"], capsys)
    assert code == 0 and "resealed notes/plan: version 2, sealed to gpu-dc, hq" in out
    code, _, err = run(["memory", "delete", "nope"], capsys)
    assert code == 4 and "NOT_FOUND: no memory nope" in err
    code, out, _ = run(["memory", "list", "-o", "json"], capsys)
    assert code == 0 and json.loads(out)[0]["pools"] == ["gpu-dc", "hq"]
    code, out, _ = run(["memory", "list"], capsys)
    assert "internal (high)" in out and "gpu-dc, hq" in out


def test_fanout_prints_verified_answers_and_fails_on_a_forged_one(fake: FakeClient,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["fanout", "gpu quota", "--level", "high", "--timeout", "3"], capsys)
    assert code == 0 and "answer signed by gpu-dc, verified" in out and "quota.md" in out
    assert "not asked: cpu-branch: trusted at standard, below high" in out
    assert fake.calls[-1] == ("fanout", "gpu quota", "high", {"max_results": 0, "timeout_ms": 3000})
    code, out, _ = run(["fanout", "forged", "-o", "json"], capsys)
    doc = json.loads(out)
    assert code == 1 and [a["verified"] for a in doc["answers"]] == [True, False]
    assert doc["answers"][0]["hits"] == [{"name": "quota.md", "snippet": "GPU quota is 16", "line": 2}]
