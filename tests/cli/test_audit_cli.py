"""`fedraft audit|incidents|local` on a node's pool-local store, and the [alerts] config table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedraft.cli.main import main
from fedraft.config import load_node_config
from fedraft.errors import ConfigError
from fedraft.federation_files import FederationLayout, create_federation
from fedraft.storage.local import AUDIT, INCIDENTS, LocalStore, Pending, applied_key, local_path, snapshot_key

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> FederationLayout:
    return create_federation(tmp_path_factory.mktemp("audit-cli") / "fed")


@pytest.fixture()
def node(tmp_path: Path, layout: FederationLayout) -> Path:
    """A copy of hq's config pointing at a fresh data dir with some records."""
    src = layout.node_configs["hq"]
    text = src.read_text().replace('data_dir = "data"', f'data_dir = "{tmp_path / "data"}"')
    cfg = src.parent / f"node-{tmp_path.name}.toml"
    cfg.write_text(text)
    with LocalStore(local_path(tmp_path / "data"), map_size=16 << 20) as store:
        store.append(AUDIT, [
            Pending({"kind": "applied", "index": 2, "ordinal": 0, "command": "put", "code": 0, "code_name": "OK",
                     "message": "", "author": {"name": "hq-admin", "pool": "hq", "role": "admin"},
                     "key_id": "ab" * 16, "at_ms": 1_700_000_000_000}, applied_key(2, 0)),
            Pending({"kind": "applied", "index": 2, "ordinal": 1, "command": "put", "code": 3,
                     "code_name": "INVALID_ARGUMENT", "message": "keys live under /routes/", "author": None,
                     "key_id": "cd" * 16, "at_ms": 1_700_000_000_000}, applied_key(2, 1)),
        ], audited_index=2)
        store.append(AUDIT, [Pending({"kind": "refused", "method": "Get", "code_name": "UNAUTHENTICATED",
                                      "reason": "missing fedraft-auth-bin", "key_id": "", "author": None,
                                      "peer": "ipv4:127.0.0.1:1", "at_ms": 1_700_000_000_001})])
        store.append(AUDIT, [Pending({"kind": "snapshot", "first": 3, "last": 9, "message": "entries 3..9 arrived by "
                                      "snapshot"}, snapshot_key(3, 9))], audited_index=9)
        store.append(AUDIT, [Pending({"kind": "applied", "index": 10, "ordinal": 0, "command": "delete", "code": 0,
                                      "code_name": "OK", "message": "", "author": None, "key_id": ""},
                                     applied_key(10, 0))], audited_index=10)
        store.append(INCIDENTS, [Pending({"kind": "pool_down", "level": "critical", "detail": {"pool": "gpu-dc"},
                                          "applied_index": 10, "at_ms": 1_700_000_000_002})])
    return cfg


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_audit_lists_the_journal(capsys: pytest.CaptureFixture[str], node: Path) -> None:
    code, out, _ = _run(capsys, "audit", "--config", str(node))
    assert code == 0
    assert "audit journal: 5 of 5 records" in out
    assert "hq-admin@hq (admin)" in out and "INVALID_ARGUMENT" in out and "3..9" in out and "2.1" in out
    code, out, _ = _run(capsys, "audit", "--config", str(node), "-o", "json")
    assert code == 0
    records = json.loads(out)
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5]
    assert all("hash" in r and "prev_hash" in r for r in records)


def test_audit_since_limit_and_kind(capsys: pytest.CaptureFixture[str], node: Path) -> None:
    def seqs(*args: str) -> list[int]:
        code, out, _ = _run(capsys, "audit", "--config", str(node), "-o", "json", *args)
        assert code == 0
        return [r["seq"] for r in json.loads(out)]

    assert seqs("--limit", "2") == [4, 5]           # the latest
    assert seqs("--since", "5") == [4, 5]           # 5 is inside the snapshot range 3..9
    assert seqs("--since", "2", "--limit", "2") == [1, 2]
    assert seqs("--since", "11") == []
    assert seqs("--kind", "refused") == [3]
    assert seqs("--kind", "applied", "--limit", "1") == [5]


def test_audit_verify_exit_codes(capsys: pytest.CaptureFixture[str], node: Path, tmp_path: Path) -> None:
    code, out, _ = _run(capsys, "audit", "--config", str(node), "--verify")
    assert code == 0
    assert "audit: 5 records, chain intact" in out and "incidents: 1 records, chain intact" in out
    code, out, _ = _run(capsys, "audit", "--config", str(node), "--verify", "-o", "json")
    assert code == 0 and all(r["ok"] for r in json.loads(out))
    # flip one byte of record 2
    with LocalStore(local_path(tmp_path / "data")) as store, store.env.begin(write=True) as txn:
        db = store._dbs[b"audit"]
        raw = bytearray(txn.get((2).to_bytes(8, "big"), db=db))
        raw[raw.index(b"routes")] ^= 0x01
        txn.put((2).to_bytes(8, "big"), bytes(raw), db=db)
    code, out, err = _run(capsys, "audit", "--config", str(node), "--verify")
    assert code == 1
    assert "error: audit: record 2 is bad: hash does not match" in err
    assert "incidents: 1 records, chain intact" in out
    code, out, _ = _run(capsys, "audit", "--config", str(node), "--verify", "-o", "json")
    assert code == 1
    assert json.loads(out)[0] == {"chain": "audit", "ok": False, "records": 1, "bad_record": 2,
                                  "reason": "hash does not match its contents (altered)"}
    code, _, _ = _run(capsys, "incidents", "--config", str(node), "--verify")
    assert code == 0  # only the incident chain


def test_verify_exit_code_through_the_real_entry_point(node: Path, tmp_path: Path) -> None:
    with LocalStore(local_path(tmp_path / "data")) as store, store.env.begin(write=True) as txn:
        txn.delete((3).to_bytes(8, "big"), db=store._dbs[b"audit"])
    done = subprocess.run([sys.executable, "-m", "fedraft", "audit", "--data-dir", str(tmp_path / "data"),
                           "--verify"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 1, done.stderr
    assert "record 3 is bad: missing" in done.stderr and "Traceback" not in done.stderr


def test_incidents(capsys: pytest.CaptureFixture[str], node: Path) -> None:
    code, out, _ = _run(capsys, "incidents", "--config", str(node))
    assert code == 0 and "pool_down" in out and "pool=gpu-dc" in out and "critical" in out
    code, out, _ = _run(capsys, "incidents", "--config", str(node), "-o", "json")
    [incident] = json.loads(out)
    assert incident["kind"] == "pool_down" and incident["detail"] == {"pool": "gpu-dc"} and incident["seq"] == 1


def test_local_tables(capsys: pytest.CaptureFixture[str], node: Path) -> None:
    cfg = str(node)
    assert _run(capsys, "local", "set", "--config", cfg, "--kind", "toggle", "new-scheduler", "on")[0] == 0
    code, out, _ = _run(capsys, "local", "get", "--config", cfg, "--kind", "toggle", "new-scheduler")
    assert (code, out.strip()) == (0, "on")
    code, out, err = _run(capsys, "local", "get", "--config", cfg, "--kind", "flag", "new-scheduler")
    assert code == 4 and "is not set" in err
    code, out, _ = _run(capsys, "local", "list", "--config", cfg, "--kind", "toggle", "-o", "json")
    [entry] = json.loads(out)
    assert entry["key"] == "new-scheduler" and entry["value"] == "on" and "@" in entry["set_by"]
    assert _run(capsys, "local", "unset", "--config", cfg, "--kind", "toggle", "new-scheduler")[0] == 0
    code, out, _ = _run(capsys, "audit", "--config", cfg, "--kind", "local_set", "-o", "json")
    assert [r["key"] for r in json.loads(out)] == ["new-scheduler"]
    code, out, _ = _run(capsys, "audit", "--config", cfg, "--verify")
    assert code == 0 and "audit: 7 records, chain intact" in out
    code, _, err = _run(capsys, "local")
    assert code == 2 and "needs an action" in err
    with pytest.raises(SystemExit):
        main(["local", "set", "--config", cfg, "--kind", "toggle", "x"])  # no VALUE: argparse's usage error


def test_errors_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = _run(capsys, "audit", "--data-dir", str(tmp_path / "nothing"))
    assert code == 1 and "no pool-local records at" in err and "Traceback" not in err
    code, _, err = _run(capsys, "audit")
    assert code == 2 and "pass --config" in err
    code, _, err = _run(capsys, "local", "set", "--data-dir", str(tmp_path / "nothing"), "--kind", "flag", "a", "b")
    assert code == 2 and "start the node once first" in err


# --- [alerts] in the node config -------------------------------------------------------------------

def _with_alerts(layout: FederationLayout, tmp_path: Path, table: str) -> Path:
    src = layout.node_configs["hq"]
    cfg = src.parent / f"alerts-{tmp_path.name}.toml"
    cfg.write_text(src.read_text() + "\n[alerts]\n" + table + "\n")
    return cfg


def test_alerts_config(layout: FederationLayout, tmp_path: Path) -> None:
    script = tmp_path / "page.sh"
    script.write_text("#!/bin/sh\ncat >/dev/null\n")
    script.chmod(0o755)
    cfg = load_node_config(_with_alerts(layout, tmp_path, f'webhook = "https://alerts.example/hook"\n'
                                                          f'exec = "{script}"'))
    assert cfg.alerts.webhook == "https://alerts.example/hook" and cfg.alerts.exec_path == script
    assert load_node_config(layout.node_configs["hq"]).alerts.webhook is None


@pytest.mark.parametrize(("table", "fragment"), [
    ('webhook = "ftp://x/y"', "is not an http:// or https:// URL"),
    ('webhook = "http://"', "is not an http:// or https:// URL"),
    ("webhook = 3", "'webhook' must be a str"),
    ('exec = "/no/such/program"', "is not an executable file"),
    ('pager = "x"', "unknown setting(s) pager"),
])
def test_alerts_config_errors(layout: FederationLayout, tmp_path: Path, table: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match="alerts") as info:
        load_node_config(_with_alerts(layout, tmp_path, table))
    assert fragment in info.value.message
