"""The `fedraft` command line end to end (subprocess): keygen, init, help texts, errors and exit codes."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fedraft.cli.main import build_parser
from fedraft.crypto.keyfile import load_private_key, load_public_key
from fedraft.federation_files import DEFAULT_NAMES, list_profiles, node_configs

REPO = Path(__file__).resolve().parents[2]


def fedraft(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "FEDRAFT_PROFILE"}
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "fedraft", *args], cwd=cwd, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def assert_one_error(result: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert fragment in errors[0], result.stderr
    assert all(line.startswith(("error:", "hint:")) for line in result.stderr.splitlines()), result.stderr


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- keygen ---------------------------------------------------------------------------------------

def test_keygen_writes_a_0600_key_and_prints_its_id(tmp_path: Path) -> None:
    result = fedraft("keygen", "--out", "keys/alice.key", "--label", "alice", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    key = tmp_path / "keys" / "alice.key"
    identity = load_private_key(key)
    assert _mode(key) == 0o600
    assert load_public_key(tmp_path / "keys" / "alice.key.pub") == identity.public_key
    assert identity.key_id.hex() in result.stdout
    assert identity.public_key.hex() in result.stdout
    assert "\x1b[" not in result.stdout  # piped: plain text
    assert json.loads(key.read_text())["label"] == "alice"


def test_keygen_json(tmp_path: Path) -> None:
    result = fedraft("keygen", "--out", "k.key", "-o", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    identity = load_private_key(tmp_path / "k.key")
    assert doc["key_id"] == identity.key_id.hex()
    assert doc["public_key"] == identity.public_key.hex()
    assert Path(doc["public_key_file"]) == Path("k.key.pub")


def test_keygen_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    assert fedraft("keygen", "--out", "k.key", cwd=tmp_path).returncode == 0
    before = (tmp_path / "k.key").read_bytes()
    assert_one_error(fedraft("keygen", "--out", "k.key", cwd=tmp_path), 2, "already exists")
    assert (tmp_path / "k.key").read_bytes() == before
    (tmp_path / "k.key").unlink()  # a leftover public half also blocks: it would no longer match
    assert_one_error(fedraft("keygen", "--out", "k.key", cwd=tmp_path), 2, "k.key.pub already exists")
    result = fedraft("keygen", "--out", "k.key", "--force", "-o", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert load_private_key(tmp_path / "k.key").key_id.hex() == json.loads(result.stdout)["key_id"]
    assert load_public_key(tmp_path / "k.key.pub") == load_private_key(tmp_path / "k.key").public_key


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    (tmp_path / "k.key").write_text("x")
    result = fedraft("--debug", "keygen", "--out", "k.key", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "error: " in result.stderr
    result = fedraft("keygen", "--out", "k.key", "--debug", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" in result.stderr


# --- init -----------------------------------------------------------------------------------------

def test_init_writes_a_federation_and_says_what_it_wrote(tmp_path: Path) -> None:
    result = fedraft("init", "--dir", "fed", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    fed = tmp_path / "fed"
    cluster_id = hashlib.sha256((fed / "genesis.json").read_bytes()).hexdigest()
    assert cluster_id in result.stdout
    assert list(node_configs(fed)) == list(DEFAULT_NAMES[3])
    for name, path in {**node_configs(fed), **list_profiles(fed)}.items():
        assert name in result.stdout
        assert str(path.relative_to(tmp_path)) in result.stdout
    assert "break-glass.key" in result.stdout
    assert "break-glass.key" in result.stderr and "offline" in result.stderr
    assert "\x1b[" not in result.stdout


def test_init_json_and_options(tmp_path: Path) -> None:
    result = fedraft("init", "--dir", "lab", "--names", "paris,berlin,rome,oslo,kyiv", "--base-port", "9000",
                     "--host", "localhost", "-o", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["cluster_id"] == hashlib.sha256((tmp_path / "lab" / "genesis.json").read_bytes()).hexdigest()
    assert [n["node_id"] for n in doc["nodes"]] == ["paris", "berlin", "rome", "oslo", "kyiv"]
    assert [n["api_listen"] for n in doc["nodes"]] == [f"localhost:{9000 + 10 * i}" for i in range(5)]
    assert [Path(p["profile"]) for p in doc["profiles"]] == list(list_profiles(tmp_path / "lab").values())
    assert Path(doc["break_glass_key"]).is_file()


def test_init_one_node(tmp_path: Path) -> None:
    result = fedraft("init", "--dir", "solo", "--nodes", "1", "-o", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [n["node_id"] for n in json.loads(result.stdout)["nodes"]] == ["hq"]


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    assert fedraft("init", "--dir", "fed", cwd=tmp_path).returncode == 0
    genesis = (tmp_path / "fed" / "genesis.json").read_bytes()
    assert_one_error(fedraft("init", "--dir", "fed", cwd=tmp_path), 2, "already holds a federation")
    assert (tmp_path / "fed" / "genesis.json").read_bytes() == genesis
    assert fedraft("init", "--dir", "fed", "--force", cwd=tmp_path).returncode == 0
    assert (tmp_path / "fed" / "genesis.json").read_bytes() != genesis


@pytest.mark.parametrize(("args", "code", "fragment"), [
    (["--names", "a,b"], 2, "1, 3 or 5"),
    (["--nodes", "5", "--names", "a,b,c"], 2, "5 nodes requested"),
    (["--host", "0.0.0.0"], 2, "connect"),
    (["--nodes", "4"], 2, "invalid choice"),
])
def test_init_bad_arguments(tmp_path: Path, args: list[str], code: int, fragment: str) -> None:
    result = fedraft("init", "--dir", "fed", *args, cwd=tmp_path)
    assert result.returncode == code
    assert fragment in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "fed" / "genesis.json").exists()


# --- help -----------------------------------------------------------------------------------------

def _commands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    assert isinstance(sub.choices, dict)
    return sorted(sub.choices)


def test_main_help_documents_exit_codes(tmp_path: Path) -> None:
    result = fedraft("--help", cwd=tmp_path)
    assert result.returncode == 0
    for line in ("exit codes:", "  0 ", "  1 ", "  2 ", "  70 "):
        assert line in result.stdout
    assert "fedraft init --dir" in result.stdout
    for command in ("keygen", "init"):
        assert command in result.stdout


@pytest.mark.parametrize("command", ["keygen", "init", "profile"])
def test_help_of_each_command_shows_an_example(tmp_path: Path, command: str) -> None:
    result = fedraft(command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "example" in result.stdout and f"fedraft {command} " in result.stdout


def test_every_registered_command_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    for command in _commands():
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([command, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert "example" in out, f"`fedraft {command} --help` shows no example"


def test_no_command_prints_help_and_exits_2(tmp_path: Path) -> None:
    result = fedraft(cwd=tmp_path)
    assert result.returncode == 2
    assert "usage: fedraft" in result.stderr


def test_usage_error_exits_2(tmp_path: Path) -> None:
    result = fedraft("keygen", cwd=tmp_path)
    assert result.returncode == 2 and "--out" in result.stderr


# --- targets --------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["profile", "status"])
def test_unknown_profile_is_one_error_line_and_exit_2(tmp_path: Path, command: str) -> None:
    assert_one_error(fedraft(command, "--profile", "nope.toml", cwd=tmp_path), 2, "nope.toml not found")


def test_unknown_profile_from_the_environment(tmp_path: Path) -> None:
    result = fedraft("profile", cwd=tmp_path, env={"FEDRAFT_PROFILE": str(tmp_path / "gone.toml")})
    assert_one_error(result, 2, "FEDRAFT_PROFILE")


def test_no_target(tmp_path: Path) -> None:
    assert_one_error(fedraft("profile", cwd=tmp_path), 2, "no target: pass --profile, set FEDRAFT_PROFILE")


def test_profile_shows_the_resolved_target(tmp_path: Path) -> None:
    assert fedraft("init", "--dir", "fed", cwd=tmp_path).returncode == 0
    profile = tmp_path / "fed" / "admins" / "gpu-dc.profile.toml"
    result = fedraft("profile", "-o", "json", cwd=tmp_path, env={"FEDRAFT_PROFILE": str(profile)})
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["name"] == "gpu-dc-admin"
    assert doc["key_id"] == load_private_key(tmp_path / "fed" / "admins" / "gpu-dc.key").key_id.hex()
    assert doc["cluster_id"] == hashlib.sha256((tmp_path / "fed" / "genesis.json").read_bytes()).hexdigest()
    result = fedraft("profile", "--config", "fed/hq/node.toml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # this node first, then the other voters' APIs, so writes from a follower's host find the leader
    assert "endpoints:      127.0.0.1:7400, 127.0.0.1:7420, 127.0.0.1:7410" in result.stdout
