"""Node config for the operator surface: http_listen (probes) and watch_history_entries; init writes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedraft.config import load_node_config
from fedraft.errors import ConfigError
from fedraft.federation_files import create_federation
from tests.cli.test_config_errors import NODE_TOML


def _config(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(extra + "\n" + NODE_TOML)
    return path


def test_probes_are_off_unless_configured(tmp_path: Path) -> None:
    cfg = load_node_config(_config(tmp_path, ""))
    assert cfg.http_listen is None and cfg.watch_history_entries == 200_000
    cfg = load_node_config(_config(tmp_path, 'http_listen = "127.0.0.1:7402"\nwatch_history_entries = 50'))
    assert cfg.http_listen == "127.0.0.1:7402" and cfg.watch_history_entries == 50


@pytest.mark.parametrize(("extra", "problem"), [
    ('http_listen = "7402"', "not a host:port"),
    ("http_listen = 7402", "must be a str"),
    ("watch_history_entries = 0", "at least 1"),
    ('watch_history_entries = "many"', "must be a int"),
])
def test_bad_settings_are_config_errors(tmp_path: Path, extra: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_node_config(_config(tmp_path, extra))


def test_init_gives_each_node_a_probe_port_after_its_api_and_peer_ports(tmp_path: Path) -> None:
    layout = create_federation(tmp_path / "fed", base_port=9100)
    ports = []
    for node in layout.nodes:
        cfg = load_node_config(node.config)
        assert cfg.http_listen == node.http_listen
        ports.append(tuple(int(a.rpartition(":")[2]) for a in (cfg.api_listen, cfg.peer_listen, cfg.http_listen)))
    assert ports == [(9100, 9101, 9102), (9110, 9111, 9112), (9120, 9121, 9122)]
    assert "never public" in layout.nodes[0].config.read_text()
