"""Static inventory files (TOML or JSON, chosen by extension) for machines without NVML.

    [[workers]]
    name = "gpu-a"
    cpu_millis = 32000
    ram_mb = 262144
    [[workers.gpus]]
    uuid = "GPU-..."
    model = "NVIDIA A100-SXM4-80GB"
    memory_mb = 81920
    healthy = true          # optional, default true
    fault = "xid 79"        # optional: why it is unhealthy (implies healthy = false)

A MIG instance is a unit of its own, with the UUID of the GPU it is carved from and its profile (the
card itself is then not listed: a whole GPU and its instances are never both schedulable):

    [[workers.gpus]]
    uuid = "MIG-..."
    model = "NVIDIA A100-SXM4-80GB MIG"
    memory_mb = 9856
    parent = "GPU-..."
    profile = "1g.10gb"

The JSON form is the same document: {"workers": [{"name": ..., "gpus": [{"uuid": ...}]}]}.
Validation is strict (unknown keys, wrong types, out-of-range numbers, duplicates, odd characters are
all refused) and every error names the file and the field. The result is sorted: workers by name,
GPUs by UUID. `StaticInventory.read()` re-reads the file on every call; noticing changes is the caller's.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import stat
import tomllib
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, NoReturn

from fedraft.domain.placement.model import Gpu, Inventory, Worker
from fedraft.inventory.base import (
    MAX_GPUS_PER_WORKER,
    MAX_INVENTORY_BYTES,
    MAX_NAME_LEN,
    MAX_QUANTITY,
    MAX_WORKERS,
    NAME_RE,
    PROFILE_RE,
    UUID_RE,
    InventoryFileError,
)

_TOP_KEYS = frozenset({"workers"})
_WORKER_KEYS = frozenset({"name", "cpu_millis", "ram_mb", "gpus"})
_GPU_KEYS = frozenset({"uuid", "model", "memory_mb", "healthy", "fault", "parent", "profile"})
_FORMATS = {".toml": "TOML", ".json": "JSON"}
_ALLOWED = {UUID_RE: ". _ : / -", PROFILE_RE: ". + _ -"}


class StaticInventory:
    """An inventory read from a file; each `read()` reads and validates the file again."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def read(self) -> Inventory:
        return load_inventory_file(self.path)

    def describe(self) -> str:
        return f"static inventory file {self.path}"


def load_inventory_file(path: Path) -> Inventory:
    path = Path(path)
    where = f"inventory {path}"
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InventoryFileError(f"{where}: unknown format {path.suffix or '(no extension)'!r}",
                                 hint="name the file *.toml or *.json")
    raw = _read_bounded(path, where)
    return parse_inventory(raw, fmt, where)


def parse_inventory(raw: bytes, fmt: str, where: str) -> Inventory:
    """Decode and validate one inventory document. `fmt` is "TOML" or "JSON"; `where` prefixes errors."""
    if len(raw) > MAX_INVENTORY_BYTES:
        raise InventoryFileError(f"{where} is larger than {MAX_INVENTORY_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InventoryFileError(f"{where} is not UTF-8 text (bad byte at offset {exc.start})") from None
    doc = _decode_toml(text, where) if fmt == "TOML" else _decode_json(text, where)
    return _parse_document(doc, where)


# --- reading and decoding -------------------------------------------------------------------------


def _read_bounded(path: Path, where: str) -> bytes:
    try:
        # O_NONBLOCK: opening a FIFO must not hang the node; it is refused below as not a regular file.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise InventoryFileError(f"{where} not found", hint="check the inventory path") from None
    except OSError as exc:
        raise InventoryFileError(f"{where}: {exc.strerror or exc}") from None
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError as exc:
        os.close(fd)
        raise InventoryFileError(f"{where}: {exc.strerror or exc}") from None
    if not regular:
        os.close(fd)
        raise InventoryFileError(f"{where} is not a regular file")
    try:
        with os.fdopen(fd, "rb") as f:
            raw = f.read(MAX_INVENTORY_BYTES + 1)  # bounded: never slurp a huge or endless file
    except OSError as exc:
        raise InventoryFileError(f"{where}: {exc.strerror or exc}") from None
    if len(raw) > MAX_INVENTORY_BYTES:
        raise InventoryFileError(f"{where} is larger than {MAX_INVENTORY_BYTES} bytes")
    return raw


def _decode_toml(text: str, where: str) -> Any:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InventoryFileError(f"{where} is not valid TOML: {exc}") from None
    except RecursionError:
        raise InventoryFileError(f"{where} is not valid TOML: nested too deeply") from None


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number fedraft accepts")


def _decode_json(text: str, where: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_refuse_constant)
    except _DuplicateKey as exc:
        raise InventoryFileError(f"{where} is not valid JSON: key {_show(exc.key)} appears twice in one object") \
            from None
    except json.JSONDecodeError as exc:
        raise InventoryFileError(f"{where} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") \
            from None
    except ValueError as exc:
        raise InventoryFileError(f"{where} is not valid JSON: {exc}") from None
    except RecursionError:
        raise InventoryFileError(f"{where} is not valid JSON: nested too deeply") from None


# --- validation -----------------------------------------------------------------------------------


def _parse_document(doc: Any, where: str) -> Inventory:
    if not isinstance(doc, dict):
        _fail(where, "", f"the top level must be a table with a 'workers' list, got {_kind(doc)}")
    _check_keys(doc, _TOP_KEYS, where, "")
    if "workers" not in doc:
        _fail(where, "", "missing 'workers' (a list of [[workers]] tables; `workers = []` for none)")
    workers_doc = doc["workers"]
    if not isinstance(workers_doc, list):
        _fail(where, "workers", f"must be a list of tables, got {_kind(workers_doc)}")
    if len(workers_doc) > MAX_WORKERS:
        _fail(where, "workers", f"has {len(workers_doc)} entries, at most {MAX_WORKERS} are allowed")
    workers: list[Worker] = []
    names: dict[str, str] = {}
    uuids: dict[str, str] = {}
    parents: dict[str, str] = {}
    for i, wdoc in enumerate(workers_doc):
        at = f"workers[{i}]"
        if not isinstance(wdoc, dict):
            _fail(where, at, f"must be a table, got {_kind(wdoc)}")
        _check_keys(wdoc, _WORKER_KEYS, where, at)
        name = _identifier(wdoc, "name", where, at, NAME_RE)
        if name in names:
            _fail(where, f"{at}.name", f"{_show(name)} is already the name of {names[name]}")
        names[name] = at
        ctx = f"{at} (worker {_show(name)})"
        cpu = _quantity(wdoc, "cpu_millis", where, ctx, minimum=0)
        ram = _quantity(wdoc, "ram_mb", where, ctx, minimum=0)
        gpus_doc = wdoc.get("gpus", [])
        if not isinstance(gpus_doc, list):
            _fail(where, f"{ctx}.gpus", f"must be a list of tables, got {_kind(gpus_doc)}")
        if len(gpus_doc) > MAX_GPUS_PER_WORKER:
            _fail(where, f"{ctx}.gpus", f"has {len(gpus_doc)} entries, at most {MAX_GPUS_PER_WORKER} per worker")
        gpus: list[Gpu] = []
        for j, gdoc in enumerate(gpus_doc):
            gat = f"{ctx}.gpus[{j}]"
            if not isinstance(gdoc, dict):
                _fail(where, gat, f"must be a table, got {_kind(gdoc)}")
            _check_keys(gdoc, _GPU_KEYS, where, gat)
            uuid = _identifier(gdoc, "uuid", where, gat, UUID_RE)
            if uuid in uuids:
                _fail(where, f"{gat}.uuid", f"{_show(uuid)} is already used by {uuids[uuid]}")
            uuids[uuid] = gat
            fault = _string(gdoc, "fault", where, gat) if "fault" in gdoc else ""
            healthy = _flag(gdoc, "healthy", where, gat, default=not fault)
            if healthy and fault:
                _fail(where, f"{gat}.fault", "is given for a GPU marked healthy = true")
            parent = _identifier(gdoc, "parent", where, gat, UUID_RE) if "parent" in gdoc else ""
            profile = _identifier(gdoc, "profile", where, gat, PROFILE_RE) if "profile" in gdoc else ""
            if bool(parent) != bool(profile):
                _fail(where, gat, "a MIG instance needs both 'parent' and 'profile'")
            if parent:
                parents[parent] = gat
            gpus.append(Gpu(
                uuid=uuid,
                model=_model(gdoc, where, gat),
                memory_mb=_quantity(gdoc, "memory_mb", where, gat, minimum=1),
                healthy=healthy,
                parent=parent,
                profile=profile,
                fault=fault if not healthy else "",
            ))
        workers.append(Worker(name=name, cpu_millis=cpu, ram_mb=ram,
                              gpus=tuple(sorted(gpus, key=lambda g: g.uuid))))
    for parent in sorted(set(parents) & set(uuids)):
        _fail(where, f"{parents[parent]}.parent", f"{_show(parent)} is also listed as a whole GPU "
              f"({uuids[parent]}); with MIG on, list its instances only")
    return Inventory(workers=tuple(sorted(workers, key=lambda w: w.name)))


def _fail(where: str, field: str, problem: str) -> NoReturn:
    raise InventoryFileError(f"{where}: {field} {problem}" if field else f"{where}: {problem}")


def _check_keys(doc: dict[str, Any], known: frozenset[str], where: str, at: str) -> None:
    unknown = sorted(str(k) for k in doc if k not in known)
    if not unknown:
        return
    parts = []
    for k in unknown:
        close = difflib.get_close_matches(k, sorted(known), n=1)
        parts.append(f"{_show(k)} (did you mean {close[0]!r}?)" if close else _show(k))
    allowed = ", ".join(sorted(known))
    _fail(where, at, f"has unknown key(s) {', '.join(parts)}; allowed: {allowed}")


def _required(doc: dict[str, Any], key: str, where: str, at: str) -> Any:
    if key not in doc:
        _fail(where, at, f"is missing required key {key!r}")
    return doc[key]


def _identifier(doc: dict[str, Any], key: str, where: str, at: str, pattern: re.Pattern[str]) -> str:
    value = _string(doc, key, where, at)
    if not pattern.fullmatch(value):
        _fail(where, f"{at}.{key}", f"{_show(value)} may contain only ASCII letters, digits and "
              f"{_ALLOWED.get(pattern, '. _ : -')}, starting with a letter or digit")
    return value


def _model(doc: dict[str, Any], where: str, at: str) -> str:
    value = _string(doc, "model", where, at)
    if value != value.strip():
        _fail(where, f"{at}.model", f"{_show(value)} must not start or end with spaces")
    return value


def _string(doc: dict[str, Any], key: str, where: str, at: str) -> str:
    value = _required(doc, key, where, at)
    field = f"{at}.{key}"
    if not isinstance(value, str):
        _fail(where, field, f"must be a string, got {_kind(value)}")
    if not value:
        _fail(where, field, "must not be empty")
    if len(value) > MAX_NAME_LEN:
        _fail(where, field, f"is {len(value)} characters long, at most {MAX_NAME_LEN} are allowed")
    if not value.isascii():
        _fail(where, field, f"{_show(value)} must be ASCII")
    if any(not c.isprintable() for c in value):
        _fail(where, field, f"{_show(value)} must not contain control characters")
    return value


def _quantity(doc: dict[str, Any], key: str, where: str, at: str, *, minimum: int) -> int:
    value = _required(doc, key, where, at)
    field = f"{at}.{key}"
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(where, field, f"must be an integer, got {_kind(value)}")
    if value < minimum:
        _fail(where, field, f"must be at least {minimum}, got {value}")
    if value > MAX_QUANTITY:
        _fail(where, field, f"must be at most {MAX_QUANTITY}, got {value}")
    return value


def _flag(doc: dict[str, Any], key: str, where: str, at: str, *, default: bool) -> bool:
    if key not in doc:
        return default
    value = doc[key]
    if not isinstance(value, bool):
        _fail(where, f"{at}.{key}", f"must be true or false, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime | date | time):
        return "a date/time"
    if value is None:
        return "null"
    return type(value).__name__


def _show(value: str, limit: int = 48) -> str:
    """repr() escapes control and non-ASCII characters, so a hostile value cannot forge log lines."""
    text = ascii(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"
