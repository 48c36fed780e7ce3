"""Key files: a private Ed25519 key (mode 0600) and its public half.

Format (JSON, one object): {"kind": "fedraft-ed25519-private", "seed": hex, "public_key": hex,
"key_id": hex, "label": str}. The public file has kind "fedraft-ed25519-public" and no seed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fedraft.crypto.signing import Identity, key_id_of
from fedraft.errors import ConfigError, SignatureError

PRIVATE_KIND = "fedraft-ed25519-private"
PUBLIC_KIND = "fedraft-ed25519-public"
MAX_KEY_FILE = 4096


def write_private_key(path: Path, identity: Identity, label: str = "") -> None:
    """Write the key with mode 0600 from the start (never world-readable, even briefly)."""
    doc = {
        "kind": PRIVATE_KIND,
        "seed": identity.seed.hex(),
        "public_key": identity.public_key.hex(),
        "key_id": identity.key_id.hex(),
        "label": label,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def write_public_key(path: Path, public_key: bytes, label: str = "") -> None:
    doc = {"kind": PUBLIC_KIND, "public_key": public_key.hex(), "key_id": key_id_of(public_key).hex(),
           "label": label}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def _load(path: Path, kind: str) -> dict[str, str]:
    path = Path(path)
    try:
        if path.stat().st_size > MAX_KEY_FILE:
            raise ConfigError(f"{path}: not a key file (larger than {MAX_KEY_FILE} bytes)")
        doc = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: key file not found", hint="check the path or run `fedraft keygen`") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a fedraft key file ({exc})") from exc
    except RecursionError:
        raise ConfigError(f"{path}: not a fedraft key file (nested too deeply)") from None
    if not isinstance(doc, dict) or doc.get("kind") != kind:
        raise ConfigError(f"{path}: expected a key file of kind {kind!r}")
    return {str(k): str(v) for k, v in doc.items()}


def load_private_key(path: Path) -> Identity:
    doc = _load(path, PRIVATE_KIND)
    try:
        identity = Identity(bytes.fromhex(doc["seed"]))
    except (KeyError, ValueError, SignatureError) as exc:
        raise ConfigError(f"{path}: malformed seed ({exc})") from exc
    if doc.get("public_key") and doc["public_key"] != identity.public_key.hex():
        raise ConfigError(f"{path}: public key does not match the seed (file corrupted?)")
    return identity


def load_public_key(path: Path) -> bytes:
    doc = _load(path, PUBLIC_KIND)
    try:
        key = bytes.fromhex(doc["public_key"])
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"{path}: malformed public key") from exc
    if len(key) != 32:
        raise ConfigError(f"{path}: an Ed25519 public key has 32 bytes")
    return key
