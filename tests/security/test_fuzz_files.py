"""Fuzz the file decoders: configs, genesis, key files, inventories, a recovered genesis, log exports.

- `config.load_node_config` (node.toml): `NodeConfig` or `ConfigError`.
- `config.load_profile` (a client profile): `Profile` or `ConfigError`.
- `domain.genesis.parse_genesis` / `config.load_genesis` (genesis.json): `Genesis` or `GenesisError` /
  `ConfigError`.
- `keyfile.load_private_key` / `load_public_key` (key files): the key or `ConfigError`.
- `federation_public._read_public` (a node's public file, `fedraft init --from-public`): the node or
  `ConfigError`.
- `inventory.static.parse_inventory` (a static inventory (TOML or JSON)): `Inventory` or
  `InventoryFileError`.
- `recovery.verify_recovery` (a recovered genesis (`fedraft recover --verify`)): the checkpoint,
  `ConfigError` or `SignatureError`.
- `logfile.read_records` / `logfile.verify_log` (an exported log (`fedraft verify`)): records or
  `DecodeError` / a `Report`, never raises.

The seeds are real files written by `create_federation` and a real log export.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fedraft.config import load_genesis, load_node_config, load_profile
from fedraft.consensus.applier import Applier
from fedraft.crypto.envelopes import build_envelope
from fedraft.crypto.keyfile import PUBLIC_KIND, load_private_key, load_public_key
from fedraft.crypto.logfile import ENTRY, read_records, verify_log
from fedraft.crypto.signing import Signer
from fedraft.domain import commands as c
from fedraft.domain.genesis import GenesisError, parse_genesis
from fedraft.errors import ConfigError, DecodeError, SignatureError
from fedraft.federation_files import create_federation
from fedraft.federation_public import _read_public, make_node_keys
from fedraft.inventory.base import InventoryFileError
from fedraft.inventory.static import parse_inventory
from fedraft.recovery import Checkpoint, NewVoter, recovery_genesis, verify_recovery
from fedraft.storage.log_export import chunked, export_records
from fedraft.storage.state import StateStore
from tests.helpers import make_federation, sign_entry
from tests.security.fuzzing import fuzz_pair, hostile, hostile_text

_ROOT = Path(tempfile.mkdtemp(prefix="fedraft-fuzz-files-"))
atexit.register(shutil.rmtree, _ROOT, True)
LAYOUT = create_federation(_ROOT / "fed", nodes=3, base_port=17400)
NODE = LAYOUT.nodes[0]
NODE_TOMLS = [p.read_text() for p in LAYOUT.node_configs.values()]
PROFILE_TOMLS = [p.read_text() for p in LAYOUT.profiles.values()]
GENESIS = LAYOUT.genesis.read_bytes()
PRIVATE_KEY = NODE.key.read_text()
PUBLIC_KEY = json.dumps({"kind": PUBLIC_KIND, "public_key": "ab" * 32, "key_id": "cd" * 16, "label": "x"})
SAMPLES = Path(__file__).parents[2] / "fedraft" / "inventory" / "samples"
INVENTORY_TOMLS = [p.read_text() for p in sorted(SAMPLES.glob("*.toml"))]


def _loads_as(name: str, load: Callable[[Path], Any], raw: bytes, *errors: type[BaseException]) -> Any:
    """Write `raw` where the real file lives (its relative paths resolve) and load it."""
    with tempfile.TemporaryDirectory(dir=NODE.dir) as tmp:
        path = Path(tmp) / name
        path.write_bytes(raw)
        try:
            return load(path)
        except errors as exc:
            assert str(exc), "an error names what is wrong"
            return None


def check_node_config(raw: bytes) -> None:
    _loads_as("node.toml", load_node_config, raw, ConfigError)


test_fuzz_node_config, test_fuzz_node_config_nightly = fuzz_pair(hostile_text(NODE_TOMLS), check_node_config)


def check_profile(raw: bytes) -> None:
    _loads_as("profile.toml", load_profile, raw, ConfigError)


test_fuzz_profile, test_fuzz_profile_nightly = fuzz_pair(hostile_text(PROFILE_TOMLS), check_profile)


def check_genesis(raw: bytes) -> None:
    try:
        genesis = parse_genesis(raw)
    except GenesisError:
        pass
    else:
        assert genesis.cluster_id == hashlib.sha256(raw).digest()
    _loads_as("genesis.json", load_genesis, raw, ConfigError)


test_fuzz_genesis, test_fuzz_genesis_nightly = fuzz_pair(hostile_text([GENESIS.decode()]), check_genesis)


def check_key_files(raw: bytes) -> None:
    _loads_as("node.key", load_private_key, raw, ConfigError)
    _loads_as("node.pub", load_public_key, raw, ConfigError)


test_fuzz_key_files, test_fuzz_key_files_nightly = fuzz_pair(hostile_text([PRIVATE_KEY, PUBLIC_KEY]),
                                                             check_key_files)


make_node_keys("edge", _ROOT / "edge")
NODE_PUBLIC = next((_ROOT / "edge").glob("*.public.json")).read_text()


def check_public_file(raw: bytes) -> None:
    _loads_as("edge.public.json", _read_public, raw, ConfigError)


test_fuzz_public_file, test_fuzz_public_file_nightly = fuzz_pair(hostile_text([NODE_PUBLIC]), check_public_file)


@pytest.mark.parametrize("load", [load_node_config, load_profile, load_genesis, load_private_key, load_public_key,
                                  _read_public], ids=lambda f: f.__name__)
@pytest.mark.parametrize("nesting", ["[" * 5000, '{"a":' * 5000, "a = " + "[" * 5000])
def test_deep_nesting_is_a_config_error(load: Callable[[Path], Any], nesting: str) -> None:
    # json and tomllib recurse per level: a small file could crash a loader with RecursionError.
    assert _loads_as("deep", load, nesting.encode(), ConfigError) is None


@pytest.mark.parametrize("seed", ["00" * 31, "00" * 33, "", "zz" * 32])
def test_a_private_key_file_with_a_bad_seed_is_a_config_error(seed: str) -> None:
    # Found by the nightly fuzz: a 31-byte seed raised SignatureError without naming the file.
    raw = json.dumps({**json.loads(PRIVATE_KEY), "seed": seed, "public_key": ""}).encode()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "node.key"
        path.write_bytes(raw)
        with pytest.raises(ConfigError, match="malformed seed") as info:
            load_private_key(path)
        assert str(path) in str(info.value)


def check_inventory(raw: bytes) -> None:
    for fmt in ("toml", "json"):
        try:
            parse_inventory(raw, fmt, "inventory")
        except InventoryFileError as exc:
            assert str(exc)


def _as_json(toml_text: str) -> str:
    import tomllib
    return json.dumps(tomllib.loads(toml_text))


test_fuzz_inventory, test_fuzz_inventory_nightly = fuzz_pair(
    hostile_text(INVENTORY_TOMLS + [_as_json(t) for t in INVENTORY_TOMLS]), check_inventory)


# ----- a recovered genesis -----

OLD = make_federation()
CHECKPOINT = Checkpoint(OLD.cluster_id, 42, b"\x01" * 32, b"\x02" * 32)
RECOVERED = recovery_genesis(OLD.genesis, CHECKPOINT, [
    NewVoter(v.node_id, v.pool, v.public_key, v.tls_spki_sha256) for v in OLD.genesis.voters],
    list(OLD.genesis.admins), OLD.break_glass)


def check_recovery(raw: bytes) -> None:
    try:
        checkpoint = verify_recovery(raw, OLD.genesis)
    except (ConfigError, SignatureError):
        return
    assert checkpoint == CHECKPOINT


test_fuzz_recovered_genesis, test_fuzz_recovered_genesis_nightly = fuzz_pair(
    hostile_text([RECOVERED.decode()]), check_recovery)


@pytest.mark.parametrize("index", ["1e400", "-1e400", "1.5", "[]", "null"])
def test_a_recovered_genesis_with_an_odd_index_is_refused(index: str) -> None:
    doc = json.loads(RECOVERED)
    raw = json.dumps(doc, sort_keys=True, indent=2).replace('"index": 42', f'"index": {index}').encode() + b"\n"
    assert f'"index": {index}'.encode() in raw
    with pytest.raises(SignatureError, match="malformed recovered_from record"):
        verify_recovery(raw, OLD.genesis)


def test_a_recovered_genesis_that_is_no_genesis_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not a valid genesis"):
        verify_recovery(RECOVERED.replace(b'"voters"', b'"voterz"'), OLD.genesis)


# ----- an exported log -----

def _export() -> bytes:
    fed = make_federation()
    store = StateStore(_ROOT / "log-state", fed.genesis, map_size=64 << 20)
    applier = Applier(store)
    admin = Signer(fed.admins["hq"])
    for index in range(2, 7):
        env = build_envelope(admin, fed.cluster_id, c.Put(f"/routes/k{index}", b"v"), now_ms=1_800_000_000_000)
        assert applier.apply(index, 1, sign_entry(fed, "hq", 1, [env], 1_800_000_000_000 + index)) is not None
        store.commit()
    with store.read() as st:
        data = b"".join(chunked(export_records(st, fed.genesis.raw), 4096))
    store.close()
    assert verify_log(data).ok
    return data


EXPORT = _export()
GENUINE_ENTRIES = [r.payload for r in read_records(EXPORT) if r.kind == ENTRY]


def check_export(raw: bytes) -> None:
    try:
        records = list(read_records(raw))
    except DecodeError:
        records = None
    report = verify_log(raw)
    if report.ok:
        assert records is not None
        entries = [r.payload for r in records if r.kind == ENTRY]
        assert entries == GENUINE_ENTRIES[:len(entries)], "a verified log carries only genuine entries"


test_fuzz_log_export, test_fuzz_log_export_nightly = fuzz_pair(hostile([EXPORT], protobuf=False, max_random=4096),
                                                               check_export, ci=200, nightly=3000)
