"""create_federation writes a federation every loader accepts: keys 0600, genesis pins, configs, profiles."""

from __future__ import annotations

import hashlib
import ipaddress
import shutil
import stat
import tomllib
from pathlib import Path

import pytest
from cryptography import x509

from fedraft.config import check_node_against_genesis, load_genesis, load_node_config, load_profile
from fedraft.crypto.keyfile import load_private_key, load_public_key
from fedraft.crypto.tls import cert_common_name, spki_sha256
from fedraft.domain.genesis import parse_genesis
from fedraft.errors import ConfigError
from fedraft.federation_files import (
    DEFAULT_NAMES,
    FederationLayout,
    create_federation,
    list_profiles,
    node_configs,
    toml_str,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def check_federation(layout: FederationLayout, names: tuple[str, ...], base_port: int = 7400,
                     host: str = "127.0.0.1") -> None:
    """Every promise of the layout, checked with the loaders the node and the client use."""
    for path in layout.files():
        assert path.is_file(), path
    for path in layout.private_keys():
        assert _mode(path) == 0o600, path

    raw = layout.genesis.read_bytes()
    genesis = parse_genesis(raw)
    assert genesis.cluster_id == hashlib.sha256(raw).digest() == layout.cluster_id
    assert load_genesis(layout.genesis).cluster_id == layout.cluster_id
    assert genesis.node_ids == names
    assert [v.pool for v in genesis.voters] == list(names)
    assert [(a.name, a.pool) for a in genesis.admins] == [(f"{n}-admin", n) for n in names]
    assert genesis.break_glass_public_key == load_private_key(layout.break_glass_key).public_key
    assert layout.break_glass_key.parent == layout.dir  # its own file, outside every node directory

    ca_cert = x509.load_pem_x509_certificate(layout.ca_cert.read_bytes())
    assert [n.node_id for n in layout.nodes] == list(names)
    for i, node in enumerate(layout.nodes):
        cfg = load_node_config(node.config)
        check_node_against_genesis(cfg, genesis)
        voter = genesis.voter(node.node_id)
        assert voter is not None
        assert cfg.node_id == node.node_id
        assert cfg.genesis_path.resolve() == layout.genesis
        assert cfg.ca_cert.resolve() == layout.ca_cert
        assert cfg.data_dir == node.data_dir
        assert load_private_key(cfg.key_path).public_key == voter.public_key
        assert load_public_key(cfg.key_path.with_name("node.key.pub")) == voter.public_key
        cert_pem = cfg.tls_cert.read_bytes()
        assert spki_sha256(cert_pem) == voter.tls_spki_sha256
        assert cert_common_name(cert_pem) == node.node_id
        cert = x509.load_pem_x509_certificate(cert_pem)
        cert.verify_directly_issued_by(ca_cert)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert node.node_id in sans.get_values_for_type(x509.DNSName)
        try:
            assert ipaddress.ip_address(host) in sans.get_values_for_type(x509.IPAddress)
        except ValueError:
            assert host in sans.get_values_for_type(x509.DNSName)
        assert cfg.api_listen == node.api_listen
        assert cfg.peer_listen == node.peer_listen
        assert node.api_listen.endswith(f":{base_port + 10 * i}")
        assert node.peer_listen.endswith(f":{base_port + 10 * i + 1}")
        assert {p.node_id: p.address for p in cfg.peers} == {
            o.node_id: o.peer_listen for o in layout.nodes if o.node_id != node.node_id}
        assert node.bootstrap_marker.is_file()
        assert sorted(p.name for p in node.data_dir.iterdir()) == ["BOOTSTRAP"]
        marker = tomllib.loads(node.bootstrap_marker.read_text())
        assert marker["node_id"] == node.node_id and marker["cluster_id"] == layout.cluster_id.hex()

    endpoints = tuple(n.api_listen for n in layout.nodes)
    for admin in layout.admins:
        profile = load_profile(admin.profile)
        assert profile.name == admin.name
        assert profile.endpoints == endpoints
        assert profile.cluster_id == layout.cluster_id
        assert profile.ca_cert.resolve() == layout.ca_cert
        assert profile.key_path == admin.key
        public = load_private_key(profile.key_path).public_key
        assert [a.public_key for a in genesis.admins if a.pool == admin.pool] == [public]

    assert node_configs(layout.dir) == layout.node_configs
    assert list(node_configs(layout.dir)) == list(names)
    assert list_profiles(layout.dir) == layout.profiles
    assert list(list_profiles(layout.dir)) == list(names)
    assert not list(layout.dir.glob(".fedraft-init-*"))  # no staging directory left behind


@pytest.mark.parametrize("nodes", [1, 3, 5])
def test_federation_of_each_size(tmp_path: Path, nodes: int) -> None:
    layout = create_federation(tmp_path / "fed", nodes=nodes)
    check_federation(layout, DEFAULT_NAMES[nodes])


def test_default_is_hq_gpu_dc_cpu_branch(tmp_path: Path) -> None:
    layout = create_federation(tmp_path / "fed")
    check_federation(layout, ("hq", "gpu-dc", "cpu-branch"))
    assert layout.federation == "fed"


def test_names_override_and_port_base(tmp_path: Path) -> None:
    layout = create_federation(tmp_path / "lab", names=["paris", "berlin", "rome", "oslo", "kyiv"], base_port=9100)
    check_federation(layout, ("paris", "berlin", "rome", "oslo", "kyiv"), base_port=9100)


def test_dns_host(tmp_path: Path) -> None:
    layout = create_federation(tmp_path / "fed", host="localhost")
    check_federation(layout, DEFAULT_NAMES[3], host="localhost")
    assert layout.nodes[0].api_listen == "localhost:7400"


def test_ipv6_host_is_bracketed_in_addresses(tmp_path: Path) -> None:
    layout = create_federation(tmp_path / "fed", nodes=1, host="::1")
    check_federation(layout, ("hq",), host="::1")
    assert layout.nodes[0].api_listen == "[::1]:7400"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"nodes": 2}, "1, 3 or 5"),
    ({"nodes": 4}, "1, 3 or 5"),
    ({"names": ["a", "b"]}, "1, 3 or 5"),
    ({"names": ["a", "b", "c"], "nodes": 5}, "5 nodes requested but 3 names"),
    ({"names": ["a", "b", "A"]}, "unique"),
    ({"names": ["a", "b", ".."]}, "not usable"),
    ({"names": ["a", "b", "c d"]}, "not usable"),
    ({"names": ["a", "b", "é"]}, "not usable"),
    ({"names": ["a", "b", "x" * 59]}, "not usable"),
    ({"names": ["a", "b", "ca"]}, "reserved"),
    ({"names": ["a", "b", "admins"]}, "reserved"),
    ({"base_port": 0}, "base port"),
    ({"base_port": 65520}, "base port"),
    ({"host": "0.0.0.0"}, "connect"),
    ({"host": "bad host"}, "neither an IP address nor a DNS name"),
    ({"raft": {"election_timeout": 5}}, "unknown raft setting"),
    ({"raft": {"election_min_ms": "3000"}}, "must be an integer"),
    ({"raft": {"election_min_ms": True}}, "must be an integer"),
    ({"raft": {"election_min_ms": 3000, "election_max_ms": 2000}}, "election_min_ms < election_max_ms"),
])
def test_bad_arguments_write_nothing(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    target = tmp_path / "fed"
    with pytest.raises(ConfigError, match=message) as info:
        create_federation(target, **kwargs)  # type: ignore[arg-type]
    assert ".fedraft-init-" not in str(info.value)
    assert not target.exists()


def test_raft_overrides_reach_every_node(tmp_path: Path) -> None:
    layout = create_federation(tmp_path / "fed", raft={"election_min_ms": 3000, "election_max_ms": 6000,
                                                       "heartbeat_ms": 200})
    for path in layout.node_configs.values():
        raft = load_node_config(path).raft
        assert (raft.election_min_ms, raft.election_max_ms, raft.heartbeat_ms, raft.tick_ms) == (3000, 6000, 200, 20)


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    first = create_federation(tmp_path / "fed")
    before = first.genesis.read_bytes()
    with pytest.raises(ConfigError, match="already holds a federation") as info:
        create_federation(tmp_path / "fed")
    assert "--force" in info.value.hint
    with pytest.raises(ConfigError, match="already holds a federation"):
        create_federation(tmp_path / "fed", names=["a", "b", "c"])
    assert first.genesis.read_bytes() == before


def test_refuses_when_only_a_node_directory_exists(tmp_path: Path) -> None:
    (tmp_path / "fed" / "hq").mkdir(parents=True)
    with pytest.raises(ConfigError, match="already holds"):
        create_federation(tmp_path / "fed")


def test_unrelated_files_in_the_directory_are_fine(tmp_path: Path) -> None:
    (tmp_path / "fed").mkdir()
    (tmp_path / "fed" / "notes.md").write_text("mine\n")
    create_federation(tmp_path / "fed")
    assert (tmp_path / "fed" / "notes.md").read_text() == "mine\n"


def test_force_replaces_the_federation_and_its_node_data(tmp_path: Path) -> None:
    old = create_federation(tmp_path / "fed", nodes=5)
    (old.node("hq").data_dir / "state.mdb").write_bytes(b"old state")
    (tmp_path / "fed" / "notes.md").write_text("mine\n")
    new = create_federation(tmp_path / "fed", nodes=3, force=True)
    assert new.cluster_id != old.cluster_id
    check_federation(new, DEFAULT_NAMES[3])
    assert not (tmp_path / "fed" / "edge-1").exists()  # nodes of the old genesis are gone
    assert not (new.node("hq").data_dir / "state.mdb").exists()
    assert (tmp_path / "fed" / "notes.md").exists()


def test_the_directory_can_be_moved(tmp_path: Path) -> None:
    layout = create_federation(tmp_path / "fed")
    shutil.move(tmp_path / "fed", tmp_path / "moved")
    moved = tmp_path / "moved"
    genesis = load_genesis(moved / "genesis.json")
    assert genesis.cluster_id == layout.cluster_id
    for node_id, path in node_configs(moved).items():
        cfg = load_node_config(path)
        assert cfg.genesis_path.resolve() == moved / "genesis.json"
        assert load_private_key(cfg.key_path).public_key == genesis.voter(node_id).public_key  # type: ignore[union-attr]
    for path in list_profiles(moved).values():
        assert load_profile(path).ca_cert.resolve() == moved / "ca" / "ca.pem"


@pytest.mark.parametrize(("dirname", "federation"), [
    ("fed", "fed"), ("my fed!", "my-fed"), ("!!!", "fedraft"), ("x" * 80, "x" * 48), ("prod.eu_1", "prod.eu_1"),
])
def test_federation_name_comes_from_the_directory(tmp_path: Path, dirname: str, federation: str) -> None:
    layout = create_federation(tmp_path / dirname, nodes=1)
    assert layout.federation == federation == load_genesis(layout.genesis).federation


def test_every_init_is_a_new_federation(tmp_path: Path) -> None:
    a = create_federation(tmp_path / "a" / "fed", nodes=1)
    b = create_federation(tmp_path / "b" / "fed", nodes=1)
    assert a.cluster_id != b.cluster_id


@pytest.mark.parametrize("text", ["plain", 'say "hi"', "back\\slash", "tab\there", "new\nline", "\x7f\x00", "ünï"])
def test_toml_strings_round_trip(text: str) -> None:
    assert tomllib.loads(f"v = {toml_str(text)}")["v"] == text


def test_helpers_on_a_directory_without_a_federation(tmp_path: Path) -> None:
    assert node_configs(tmp_path) == {}
    assert list_profiles(tmp_path) == {}
