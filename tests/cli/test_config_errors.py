"""Config, genesis and profile loaders: every bad file is a ConfigError naming the file and the problem."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fedraft.config import (
    MAX_CONFIG_BYTES,
    check_node_against_genesis,
    load_genesis,
    load_node_config,
    load_profile,
)
from fedraft.domain.genesis import FORMAT, MAX_GENESIS_BYTES, encode_genesis, parse_genesis
from fedraft.errors import ConfigError

NODE_TOML = """\
node_id = "hq"
genesis = "genesis.json"
data_dir = "data"
key = "node.key"
tls_cert = "tls.pem"
tls_key = "tls.key"
ca_cert = "ca.pem"
peer_listen = "127.0.0.1:7401"
api_listen = "127.0.0.1:7400"

[peers]
gpu-dc = "127.0.0.1:7411"
cpu-branch = "127.0.0.1:7421"
"""

PROFILE_TOML = """\
name = "hq-admin"
endpoints = ["127.0.0.1:7400", "127.0.0.1:7410"]
ca_cert = "ca.pem"
key = "hq.key"
cluster_id = "{cid}"
""".format(cid="ab" * 32)


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def _fails(load: Callable[[Path], Any], path: Path, *fragments: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    return info.value


def _replace(text: str, line_start: str, new_line: str) -> str:
    lines = text.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith(line_start))
    lines[index] = new_line
    return "\n".join(lines) + "\n"


# --- node config ---------------------------------------------------------------------------------

def test_valid_node_config_loads(tmp_path: Path) -> None:
    cfg = load_node_config(_write(tmp_path, "node.toml", NODE_TOML))
    assert cfg.node_id == "hq"
    assert cfg.genesis_path == tmp_path / "genesis.json"
    assert [p.node_id for p in cfg.peers] == ["cpu-branch", "gpu-dc"]
    assert cfg.log_level == "info"


def test_missing_node_config(tmp_path: Path) -> None:
    error = _fails(load_node_config, tmp_path / "absent.toml", "not found")
    assert "fedraft init" in error.hint


def test_node_config_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "dir.toml").mkdir()
    _fails(load_node_config, tmp_path / "dir.toml")


@pytest.mark.parametrize("content", [
    "node_id = ",
    "node_id = 'hq\n",
    "[peers\n",
    b"node_id = \"\xff\xfe\"\n",
    "x = " + "[" * 5000,
], ids=["no-value", "open-string", "open-table", "not-utf8", "nested"])
def test_not_toml(tmp_path: Path, content: str | bytes) -> None:
    _fails(load_node_config, _write(tmp_path, "node.toml", content), "not valid TOML")


def test_oversized_node_config(tmp_path: Path) -> None:
    path = _write(tmp_path, "node.toml", NODE_TOML + "#" + "x" * MAX_CONFIG_BYTES + "\n")
    _fails(load_node_config, path, "larger than")


@pytest.mark.parametrize(("change", "fragments"), [
    (lambda t: t.replace("[peers]", "colour = 'blue'\n[peers]"), ["unknown setting(s) colour"]),
    (lambda t: t + "[raft]\nelection_timeout = 5\n", ["[raft]", "unknown setting(s) election_timeout"]),
    (lambda t: _replace(t, "api_listen", ""), ["missing required setting 'api_listen'"]),
    (lambda t: _replace(t, "node_id", ""), ["missing required setting 'node_id'"]),
    (lambda t: t.replace("[peers]\n", "").replace('gpu-dc = "127.0.0.1:7411"\n', "")
     .replace('cpu-branch = "127.0.0.1:7421"\n', ""), ["missing required setting 'peers'"]),
    (lambda t: _replace(t, "peer_listen", "peer_listen = 7401"), ["'peer_listen' must be a str, got int"]),
    (lambda t: _replace(t, "node_id", "node_id = true"), ["'node_id' must be a str, got bool"]),
    (lambda t: _replace(t, "data_dir", "data_dir = ['a']"), ["'data_dir' must be a str, got list"]),
    (lambda t: t + "[raft]\nelection_min_ms = '3000'\n", ["[raft]", "'election_min_ms' must be a int, got str"]),
    (lambda t: t + "[raft]\nelection_min_ms = true\n", ["[raft]", "'election_min_ms' must be a int, got bool"]),
    (lambda t: t + "[raft]\nheartbeat_ms = 1.5\n", ["[raft]", "'heartbeat_ms' must be a int, got float"]),
    (lambda t: t.replace("[peers]", "raft = 5\n[peers]"), ["[raft] must be a table"]),
    (lambda t: t.replace("[peers]", "log_level = 3\n[peers]"), ["'log_level' must be a str, got int"]),
    (lambda t: t + "hq2 = 7\n", ["[peers]", "'hq2' must be a str, got int"]),
], ids=["unknown", "unknown-raft", "missing-api", "missing-id", "missing-peers", "str-for-int", "bool-for-str",
        "list-for-str", "str-for-int-raft", "bool-for-int-raft", "float-for-int-raft", "raft-not-table",
        "log-level-int", "peer-address-int"])
def test_bad_settings(tmp_path: Path, change: Callable[[str], str], fragments: list[str]) -> None:
    _fails(load_node_config, _write(tmp_path, "node.toml", change(NODE_TOML)), *fragments)


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.0.0.1:", ":7400", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:http", "127.0.0.1:-1",
    "127.0.0.1: 7400", "127.0.0.1:\u0667\u0664\u0660\u0660",
])
@pytest.mark.parametrize("setting", ["api_listen", "peer_listen", "gpu-dc"])
def test_bad_address(tmp_path: Path, setting: str, address: str) -> None:
    text = _replace(NODE_TOML, f"{setting} =", f"{setting} = {json.dumps(address)}")
    _fails(load_node_config, _write(tmp_path, "node.toml", text), "is not a host:port address")


@pytest.mark.parametrize("address", ["127.0.0.1:1", "node-a.example:65535", "[::1]:7400", "localhost:7400"])
def test_good_addresses(tmp_path: Path, address: str) -> None:
    text = _replace(NODE_TOML, "api_listen", f"api_listen = {json.dumps(address)}")
    assert load_node_config(_write(tmp_path, "node.toml", text)).api_listen == address


@pytest.mark.parametrize("raft", [
    "election_min_ms = 2000\nelection_max_ms = 1000",
    "election_min_ms = 2000\nelection_max_ms = 2000",
    "heartbeat_ms = 400",  # 3 * 400 >= election_min_ms 1000
    "heartbeat_ms = 0",
    "heartbeat_ms = -100",
    "tick_ms = 0",
    "compaction_min_entries = 1",
    "compaction_min_time_s = 0",
])
def test_inconsistent_raft_timing(tmp_path: Path, raft: str) -> None:
    _fails(load_node_config, _write(tmp_path, "node.toml", f"{NODE_TOML}\n[raft]\n{raft}\n"), "[raft]")


def test_raft_overrides_and_defaults(tmp_path: Path) -> None:
    cfg = load_node_config(_write(tmp_path, "node.toml",
                                  f"{NODE_TOML}\n[raft]\nelection_min_ms = 3000\nelection_max_ms = 6000\n"))
    assert (cfg.raft.election_min_ms, cfg.raft.election_max_ms, cfg.raft.heartbeat_ms) == (3000, 6000, 100)


def test_peers_listing_itself(tmp_path: Path) -> None:
    path = _write(tmp_path, "node.toml", NODE_TOML + 'hq = "127.0.0.1:7401"\n')
    _fails(load_node_config, path, "must not list this node (hq) itself")


# --- node config against genesis ----------------------------------------------------------------

def _genesis_doc(node_ids: tuple[str, ...] = ("hq", "gpu-dc", "cpu-branch")) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "federation": "test",
        "nonce": os.urandom(16).hex(),
        "created_at_ms": 1,
        "voters": [{"node_id": n, "pool": n, "public_key": os.urandom(32).hex(),
                    "tls_spki_sha256": os.urandom(32).hex()} for n in node_ids],
        "admins": [{"name": f"{n}-admin", "pool": n, "public_key": os.urandom(32).hex()} for n in node_ids],
        "break_glass": {"public_key": os.urandom(32).hex()},
    }


def test_node_not_in_genesis(tmp_path: Path) -> None:
    genesis = parse_genesis(encode_genesis(_genesis_doc(("a", "b", "c"))))
    cfg = load_node_config(_write(tmp_path, "node.toml", NODE_TOML))
    with pytest.raises(ConfigError, match="node hq is not a voter in genesis") as info:
        check_node_against_genesis(cfg, genesis)
    assert str(cfg.path) in str(info.value) and "a, b, c" in info.value.hint


def test_peers_must_be_exactly_the_other_voters(tmp_path: Path) -> None:
    genesis = parse_genesis(encode_genesis(_genesis_doc(("hq", "gpu-dc", "edge"))))
    cfg = load_node_config(_write(tmp_path, "node.toml", NODE_TOML))
    with pytest.raises(ConfigError, match="must list exactly the other voters"):
        check_node_against_genesis(cfg, genesis)
    check_node_against_genesis(cfg, parse_genesis(encode_genesis(_genesis_doc())))


# --- genesis -------------------------------------------------------------------------------------

def test_valid_genesis_loads(tmp_path: Path) -> None:
    path = _write(tmp_path, "genesis.json", encode_genesis(_genesis_doc()))
    assert load_genesis(path).node_ids == ("hq", "gpu-dc", "cpu-branch")


def test_missing_genesis(tmp_path: Path) -> None:
    _fails(load_genesis, tmp_path / "genesis.json", "No such file")


def _mutate(change: Callable[[dict[str, Any]], None]) -> bytes:
    doc = copy.deepcopy(_genesis_doc())
    change(doc)
    return encode_genesis(doc)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change setting doc[a][b]... = value, for a dotted path with list indexes."""
    def change(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value
    return change


def _dup_admin_key(doc: dict[str, Any]) -> None:
    doc["admins"][0]["public_key"] = doc["voters"][1]["public_key"]


def _bg_is_admin(doc: dict[str, Any]) -> None:
    doc["break_glass"]["public_key"] = doc["admins"][0]["public_key"]


def _dup_node_id(doc: dict[str, Any]) -> None:
    doc["voters"][1]["node_id"] = "hq"


def _drop_voter(doc: dict[str, Any]) -> None:
    del doc["voters"][2]
    del doc["admins"][2]


def _drop_admin(doc: dict[str, Any]) -> None:
    del doc["admins"][1]


def _delete(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc.pop(key)


@pytest.mark.parametrize(("raw", "fragment"), [
    (b"{not json", "not JSON"),
    (b"\xff\xfe\x00", "not JSON"),
    (b"[" * 100_000, "not JSON"),
    (b"[]", "JSON object with format"),
    (_mutate(_set("format", "fedraft-genesis/2")), "format"),
    (_mutate(_delete("format")), "format"),
    (_mutate(_drop_voter), "1, 3 or 5 voters"),
    (_mutate(_set("voters", [])), "1, 3 or 5 voters"),
    (_mutate(_set("voters.0", "hq")), "voters[0] must be an object"),
    (_mutate(_dup_node_id), "voter node ids must be unique"),
    (_mutate(_set("voters.1.pool", "hq")), "each voter pool runs exactly one node"),
    (_mutate(_set("voters.0.public_key", "ab" * 31)), "voters[0]: public_key must be 32 bytes, got 31"),
    (_mutate(_set("voters.0.public_key", "zz" * 32)), "voters[0]: public_key is not hex"),
    (_mutate(_set("voters.0.public_key", 7)), "voters[0]: public_key must be a hex string"),
    (_mutate(_set("voters.2.tls_spki_sha256", "ab" * 33)), "voters[2]: tls_spki_sha256 must be 32 bytes"),
    (_mutate(_set("voters.0.node_id", "h q")), "voters[0]: node_id may use"),
    (_mutate(_set("voters.0.node_id", "hé")), "ASCII"),
    (_mutate(_set("voters.0.node_id", "x" * 65)), "at most 64 characters"),
    (_mutate(_set("voters.0.node_id", "")), "non-empty"),
    (_mutate(_set("admins.1.pool", "elsewhere")), "admin gpu-dc-admin belongs to unknown pool elsewhere"),
    (_mutate(_drop_admin), "every voter pool needs at least one admin"),
    (_mutate(_set("admins", {})), "must list admins"),
    (_mutate(_set("admins.0.public_key", "ab" * 16)), "admins[0]: public_key must be 32 bytes"),
    (_mutate(_dup_admin_key), "a key may appear only once"),
    (_mutate(_delete("break_glass")), "break-glass"),
    (_mutate(_set("break_glass.public_key", "00")), "break_glass: public_key must be 32 bytes"),
    (_mutate(_bg_is_admin), "break-glass key must differ"),
    (_mutate(_set("federation", "a/b")), "federation may use"),
    (b" " * (MAX_GENESIS_BYTES + 1), "larger than"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_malformed_genesis(tmp_path: Path, raw: bytes, fragment: str) -> None:
    _fails(load_genesis, _write(tmp_path, "genesis.json", raw), "genesis", fragment)


# --- client profile ------------------------------------------------------------------------------

def test_valid_profile_loads(tmp_path: Path) -> None:
    profile = load_profile(_write(tmp_path, "p.toml", PROFILE_TOML))
    assert profile.name == "hq-admin"
    assert profile.endpoints == ("127.0.0.1:7400", "127.0.0.1:7410")
    assert profile.key_path == tmp_path / "hq.key"
    assert profile.cluster_id == bytes.fromhex("ab" * 32)


def test_profile_name_defaults_to_the_file_stem(tmp_path: Path) -> None:
    assert load_profile(_write(tmp_path, "ops.toml", _replace(PROFILE_TOML, "name", ""))).name == "ops"


def test_missing_profile(tmp_path: Path) -> None:
    _fails(load_profile, tmp_path / "absent.toml", "client profile", "not found")


@pytest.mark.parametrize(("change", "fragment"), [
    (lambda t: t + "colour = 'blue'\n", "unknown setting(s) colour"),
    (lambda t: _replace(t, "endpoints", "endpoints = []"), "endpoints must be a non-empty list"),
    (lambda t: _replace(t, "endpoints", "endpoints = [7400]"), "endpoints must be a non-empty list"),
    (lambda t: _replace(t, "endpoints", "endpoints = '127.0.0.1:7400'"), "'endpoints' must be a list"),
    (lambda t: _replace(t, "endpoints", "endpoints = ['127.0.0.1']"), "is not a host:port address"),
    (lambda t: _replace(t, "cluster_id", "cluster_id = 'xyz'"), "cluster_id must be hex"),
    (lambda t: _replace(t, "cluster_id", "cluster_id = 'abcd'"), "cluster_id must be 32 bytes"),
    (lambda t: _replace(t, "key =", ""), "missing required setting 'key'"),
    (lambda t: _replace(t, "ca_cert", "ca_cert = 1"), "'ca_cert' must be a str"),
    (lambda t: _replace(t, "name", "name = 1"), "'name' must be a str"),
    (lambda t: "endpoints = [", "not valid TOML"),
    (lambda t: t + "#" + "x" * MAX_CONFIG_BYTES, "larger than"),
], ids=["unknown", "empty-endpoints", "int-endpoint", "endpoints-str", "bad-endpoint", "cid-not-hex",
        "cid-short", "no-key", "ca-int", "name-int", "not-toml", "oversized"])
def test_bad_profile(tmp_path: Path, change: Callable[[str], str], fragment: str) -> None:
    _fails(load_profile, _write(tmp_path, "p.toml", change(PROFILE_TOML)), fragment)
