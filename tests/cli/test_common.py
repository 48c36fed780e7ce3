"""Shared CLI conventions in-process: target resolution, output helpers, errors → exit codes."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from fedraft.cli import common, main
from fedraft.config import load_profile
from fedraft.errors import CallerError, ConfigError, FedraftError, InvariantBroken, Unavailable
from fedraft.federation_files import FederationLayout, create_federation


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> FederationLayout:
    return create_federation(tmp_path_factory.mktemp("cli") / "fed")


def _target_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    common.add_target_args(parser)
    return parser.parse_args(list(argv))


@pytest.fixture(autouse=True)
def no_profile_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(common.PROFILE_ENV, raising=False)


# --- resolve_target -------------------------------------------------------------------------------

def test_profile_flag(fed: FederationLayout) -> None:
    target = common.resolve_target(_target_args("--profile", str(fed.profiles["hq"])))
    assert target == load_profile(fed.profiles["hq"])


def test_profile_from_environment(fed: FederationLayout, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(common.PROFILE_ENV, str(fed.profiles["gpu-dc"]))
    assert common.resolve_target(_target_args()).name == "gpu-dc-admin"
    # the flag wins over the environment
    assert common.resolve_target(_target_args("--profile", str(fed.profiles["hq"]))).name == "hq-admin"


def test_flags_override_the_profile(fed: FederationLayout, tmp_path: Path) -> None:
    target = common.resolve_target(_target_args("--profile", str(fed.profiles["hq"]), "--endpoints",
                                                "10.0.0.1:7400, 10.0.0.2:7400", "--key", str(tmp_path / "k.key"),
                                                "--ca", "ca.pem", "--cluster-id", "cd" * 32))
    assert target.endpoints == ("10.0.0.1:7400", "10.0.0.2:7400")
    assert target.key_path == tmp_path / "k.key"
    assert target.ca_cert == Path("ca.pem")
    assert target.cluster_id == bytes.fromhex("cd" * 32)
    assert target.name == "hq-admin"


def test_explicit_target_without_profile(tmp_path: Path) -> None:
    target = common.resolve_target(_target_args("--endpoints", "a:1,b:2", "--key", "k.key", "--ca", "ca.pem",
                                                "--cluster-id", "ab" * 32))
    assert target.endpoints == ("a:1", "b:2")
    assert target.cluster_id == bytes.fromhex("ab" * 32)


def test_node_config_shortcut(fed: FederationLayout) -> None:
    node = fed.node("gpu-dc")
    target = common.resolve_target(_target_args("--config", str(node.config)))
    others = sorted((n for n in fed.nodes if n.node_id != "gpu-dc"), key=lambda n: n.node_id)
    assert target.endpoints == (node.api_listen, *(n.api_listen for n in others))
    assert target.key_path == node.key
    assert target.ca_cert.resolve() == fed.ca_cert
    assert target.cluster_id == fed.cluster_id


@pytest.mark.parametrize(("address", "expected"), [("0.0.0.0:7400", "127.0.0.1:7400"), ("[::]:7400", "[::1]:7400"),
                                                   ("10.1.2.3:7400", "10.1.2.3:7400")])
def test_node_listening_everywhere_is_reached_on_loopback(address: str, expected: str) -> None:
    assert common._connectable(address) == expected


@pytest.mark.parametrize(("argv", "error", "fragment"), [
    ((), CallerError, "no target: pass --profile, set FEDRAFT_PROFILE, or pass --endpoints/--key/--ca"),
    (("--endpoints", "a:1"), CallerError, "missing --key, --ca, --cluster-id"),
    (("--endpoints", "a:1", "--key", "k", "--ca", "c"), CallerError, "missing --cluster-id"),
    (("--endpoints", "a", "--key", "k", "--ca", "c", "--cluster-id", "ab" * 32), CallerError, "not a host:port"),
    (("--endpoints", ",", "--key", "k", "--ca", "c", "--cluster-id", "ab" * 32), CallerError, "empty"),
    (("--endpoints", "a:1", "--key", "k", "--ca", "c", "--cluster-id", "abc"), CallerError, "64 hex digits"),
    (("--profile", "missing.toml"), ConfigError, "missing.toml not found"),
    (("--config", "missing.toml"), ConfigError, "missing.toml not found"),
    (("--config", "a.toml", "--profile", "b.toml"), CallerError, "not both"),
])
def test_target_errors(argv: tuple[str, ...], error: type[Exception], fragment: str) -> None:
    with pytest.raises(error, match=None) as info:
        common.resolve_target(_target_args(*argv))
    assert fragment in str(info.value)


# --- output helpers --------------------------------------------------------------------------------

def test_plain_table_when_piped(capsys: pytest.CaptureFixture[str]) -> None:
    common.print_table(["node", "role"], [("hq", "leader"), ("gpu-dc", None)], title="Nodes")
    assert capsys.readouterr().out.splitlines() == ["Nodes", "NODE    ROLE", "hq      leader", "gpu-dc"]


def test_emit_table(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"node": "hq", "quorum": True}, {"node": "cpu", "quorum": False, "error": "down"}]
    common.emit_table(argparse.Namespace(output="table"), rows)
    assert capsys.readouterr().out.splitlines() == ["NODE  QUORUM  ERROR", "hq    yes", "cpu   no      down"]
    common.emit_table(argparse.Namespace(output="json"), rows)
    assert json.loads(capsys.readouterr().out) == rows


def test_emit(capsys: pytest.CaptureFixture[str]) -> None:
    common.emit(argparse.Namespace(output="json"), {"key": "/a", "raw": b"\x01"}, "text")
    assert json.loads(capsys.readouterr().out) == {"key": "/a", "raw": "01"}
    common.emit(argparse.Namespace(output="table"), {"key": "/a"}, "text")
    assert capsys.readouterr().out == "text\n"


def test_fail_result(capsys: pytest.CaptureFixture[str]) -> None:
    from fedraft._proto.fedraft.v1 import entries_pb2 as pb

    assert common.fail_result(pb.Result(code=9, message="version is 3, not 2")) == common.EXIT_FAILURE
    assert capsys.readouterr().err == "error: FAILED_PRECONDITION: version is 3, not 2\n"


# --- errors → exit codes ----------------------------------------------------------------------------

class _RpcError(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "no leader"


def _raiser(exc: BaseException) -> Callable[[argparse.Namespace], int]:
    def func(_args: argparse.Namespace) -> int:
        raise exc
    return func


@pytest.mark.parametrize(("exc", "code", "stderr"), [
    (ConfigError("bad file", hint="fix it"), 2, "error: bad file\nhint: fix it\n"),
    (CallerError("bad\nrequest"), 2, "error: bad request\n"),
    (Unavailable("no quorum"), 1, "error: no quorum\n"),
    (InvariantBroken("applied index went back"), 1, "error: applied index went back\n"),
    (FedraftError("plain"), 1, "error: plain\n"),
    (_RpcError(), 1, "error: UNAVAILABLE: no leader\n"),
])
def test_errors_map_to_exit_codes(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                  exc: Exception, code: int, stderr: str) -> None:
    monkeypatch.setattr("fedraft.cli.keys.run_keygen", _raiser(exc))
    monkeypatch.setattr(main, "COMMAND_MODULES", ["fedraft.cli.keys"])
    assert main.main(["keygen", "--out", "unused.key"]) == code
    assert capsys.readouterr().err == stderr


def test_unexpected_exception_is_a_traceback_and_exit_70(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("fedraft.cli.keys.run_keygen", _raiser(ZeroDivisionError("oops")))
    monkeypatch.setattr(main, "COMMAND_MODULES", ["fedraft.cli.keys"])
    assert main.main(["keygen", "--out", "unused.key"]) == common.EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError: oops" in err and "internal error" in err


def test_main_returns_the_command_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fedraft.cli.keys.run_keygen", lambda _args: 4)
    monkeypatch.setattr(main, "COMMAND_MODULES", ["fedraft.cli.keys"])
    assert main.main(["keygen", "--out", "unused.key"]) == 4
