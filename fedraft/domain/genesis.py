"""The genesis document: voters, admins and the break-glass key pinned at founding (SPEC §3, D1).

The cluster id is sha256 of the file's bytes as written; this module only parses and checks the
document, it never re-serializes it for hashing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

FORMAT = "fedraft-genesis/1"
MAX_GENESIS_BYTES = 256 * 1024


class GenesisError(ValueError):
    pass


@dataclass(frozen=True)
class Voter:
    node_id: str
    pool: str
    public_key: bytes
    tls_spki_sha256: bytes


@dataclass(frozen=True)
class Admin:
    name: str
    pool: str
    public_key: bytes


@dataclass(frozen=True)
class Genesis:
    federation: str
    voters: tuple[Voter, ...]
    admins: tuple[Admin, ...]
    break_glass_public_key: bytes
    cluster_id: bytes
    raw: bytes

    def voter(self, node_id: str) -> Voter | None:
        return next((v for v in self.voters if v.node_id == node_id), None)

    @property
    def node_ids(self) -> tuple[str, ...]:
        return tuple(v.node_id for v in self.voters)


def _hex(doc: dict[str, Any], field: str, size: int, where: str) -> bytes:
    value = doc.get(field)
    if not isinstance(value, str):
        raise GenesisError(f"{where}: {field} must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise GenesisError(f"{where}: {field} is not hex") from None
    if len(raw) != size:
        raise GenesisError(f"{where}: {field} must be {size} bytes, got {len(raw)}")
    return raw


def _text(doc: dict[str, Any], field: str, where: str) -> str:
    value = doc.get(field)
    if not isinstance(value, str) or not value or len(value) > 64:
        raise GenesisError(f"{where}: {field} must be a non-empty string of at most 64 characters")
    # ASCII only: node ids become DNS names in TLS certificates, which take no unicode.
    if not all((c.isascii() and c.isalnum()) or c in "-_." for c in value):
        raise GenesisError(f"{where}: {field} may use ASCII letters, digits, '-', '_' and '.' only")
    return value


def encode_genesis(doc: dict[str, Any]) -> bytes:
    """The canonical file bytes init writes: sorted keys, two-space indent, trailing newline."""
    return (json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=True) + "\n").encode()


def parse_genesis(raw: bytes) -> Genesis:
    if len(raw) > MAX_GENESIS_BYTES:
        raise GenesisError(f"genesis larger than {MAX_GENESIS_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GenesisError(f"genesis is not JSON: {exc}") from None
    except RecursionError:
        raise GenesisError("genesis is not JSON: nested too deeply") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise GenesisError(f"genesis must be a JSON object with format {FORMAT!r}")
    voters_doc = doc.get("voters")
    if not isinstance(voters_doc, list) or len(voters_doc) not in (1, 3, 5):
        raise GenesisError("genesis must list 1, 3 or 5 voters")
    voters = []
    for i, v in enumerate(voters_doc):
        where = f"voters[{i}]"
        if not isinstance(v, dict):
            raise GenesisError(f"{where} must be an object")
        voters.append(Voter(_text(v, "node_id", where), _text(v, "pool", where),
                            _hex(v, "public_key", 32, where), _hex(v, "tls_spki_sha256", 32, where)))
    if len({v.node_id for v in voters}) != len(voters):
        raise GenesisError("voter node ids must be unique")
    if len({v.pool for v in voters}) != len(voters):
        raise GenesisError("each voter pool runs exactly one node")
    admins_doc = doc.get("admins")
    if not isinstance(admins_doc, list):
        raise GenesisError("genesis must list admins")
    admins = []
    for i, a in enumerate(admins_doc):
        where = f"admins[{i}]"
        if not isinstance(a, dict):
            raise GenesisError(f"{where} must be an object")
        admins.append(Admin(_text(a, "name", where), _text(a, "pool", where), _hex(a, "public_key", 32, where)))
    pools = {v.pool for v in voters}
    for a in admins:
        if a.pool not in pools:
            raise GenesisError(f"admin {a.name} belongs to unknown pool {a.pool}")
    if {a.pool for a in admins} != pools:
        raise GenesisError("every voter pool needs at least one admin")
    keys = [v.public_key for v in voters] + [a.public_key for a in admins]
    if len(set(keys)) != len(keys):
        raise GenesisError("a key may appear only once in genesis")
    bg = doc.get("break_glass")
    if not isinstance(bg, dict):
        raise GenesisError("genesis must name the break-glass public key")
    break_glass_key = _hex(bg, "public_key", 32, "break_glass")
    if break_glass_key in keys:
        raise GenesisError("the break-glass key must differ from every voter and admin key")
    return Genesis(
        federation=_text(doc, "federation", "genesis"),
        voters=tuple(voters),
        admins=tuple(admins),
        break_glass_public_key=break_glass_key,
        cluster_id=hashlib.sha256(raw).digest(),
        raw=raw,
    )
