"""The replicated policy (SPEC §5 SetPolicy): placement numbers, pending expiry, envelope validity.

SetPolicy names settings as `key=value` text; SETTINGS below says, key by key, what a value may be
and which field it sets. Keys are the Policy field names (`heartbeat_ms`), `weights.<name>` for
the score weights and `latency/<region>/<region>` for the latency table (value `none` removes an
entry). Values are integers (milliseconds, counts, percents) or `true`/`false`.

Data classes of memories (SPEC §5, D12) are `class/<name>` keys whose value is the trust level a pool
needs to receive that class (`standard`, `high`, `max`; `none` removes the class). Until a SetPolicy
names one, DEFAULT_DATA_CLASSES hold; the first change starts from them. At least one class remains.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from fedraft.domain.placement.commands import name_problem
from fedraft.domain.placement.model import Latency, Policy, Trust, Weights
from fedraft.domain.validity import DEFAULT_MAX_VALIDITY_MS

DEFAULT_PENDING_EXPIRY_MS = 60 * 60 * 1000
DEFAULT_CHECKPOINT_INTERVAL = 1000  # entries between signed checkpoints (SPEC §4)
MAX_SETTINGS = 64
LATENCY_PREFIX = "latency/"
MAX_LATENCIES = 256
CLASS_PREFIX = "class/"
MAX_DATA_CLASSES = 64
_HOUR = 3_600_000
_DAY = 24 * _HOUR


@dataclass(frozen=True, order=True)
class DataClass:
    """A class of memories and the trust a pool needs (from the memory's pool) to receive its values."""

    name: str
    level: Trust


DEFAULT_DATA_CLASSES: tuple[DataClass, ...] = (
    DataClass("internal", Trust.HIGH), DataClass("public", Trust.STANDARD), DataClass("secret", Trust.MAX))


@dataclass(frozen=True)
class GovernancePolicy:
    placement: Policy = field(default_factory=Policy)
    pending_expiry_ms: int = DEFAULT_PENDING_EXPIRY_MS  # a critical operation not approved by then expires
    max_validity_ms: int = DEFAULT_MAX_VALIDITY_MS      # longest envelope window (SPEC D3)
    data_classes: tuple[DataClass, ...] = DEFAULT_DATA_CLASSES  # sorted by name
    checkpoint_interval: int = DEFAULT_CHECKPOINT_INTERVAL  # a signed checkpoint every this many log indexes

    def data_class(self, name: str) -> DataClass | None:
        return next((dc for dc in self.data_classes if dc.name == name), None)


@dataclass(frozen=True)
class Setting:
    low: int
    high: int
    boolean: bool = False  # true/false instead of a number


# key -> the range of its value. Placement keys set the Policy field of that name; weights.* set Weights.
SETTINGS: dict[str, Setting] = {
    "heartbeat_ms": Setting(1_000, _HOUR),
    "missed_heartbeats": Setting(1, 100),
    "hysteresis_ms": Setting(0, _DAY),
    "return_window_ms": Setting(0, _DAY),
    "drain_ms": Setting(0, _DAY),
    "rebalance_threshold_pct": Setting(0, 1_000),
    "max_moves_per_tick": Setting(1, 10_000),
    "tick_interval_ms": Setting(100, _HOUR),
    "preemption": Setting(0, 1, boolean=True),
    **{f"weights.{f.name}": Setting(0, 1_000) for f in fields(Weights)},
    "pending_expiry_ms": Setting(60_000, 7 * _DAY),
    "max_validity_ms": Setting(10_000, _HOUR),
    # Each checkpoint costs a full scan of the state (its digest) and one Cosign per node: at least 16.
    "checkpoint_interval": Setting(16, 10_000_000),
}
LATENCY = Setting(0, 600_000)


def _class_level(key: str, text: str) -> Trust | str | None:
    """A data class's level, None to remove it, or a problem (str)."""
    problem = name_problem("data class", key[len(CLASS_PREFIX):])
    if problem is not None:
        return problem
    if text == "none":
        return None
    if text not in ("standard", "high", "max"):
        return f"{key} is standard, high, max (or none to remove the class), not {text!r}"
    return Trust.parse(text)


def _value(key: str, text: str) -> int | bool | str | None:
    """The parsed value, or a problem (str) — for latency keys `none` gives None."""
    if key.startswith(CLASS_PREFIX):
        level = _class_level(key, text)
        return level if isinstance(level, str) else None  # checked, parsed again by apply_settings
    spec = LATENCY if key.startswith(LATENCY_PREFIX) else SETTINGS.get(key)
    if spec is None:
        return (f"unknown policy key {key!r} (known: {', '.join(sorted(SETTINGS))}, latency/REGION/REGION, "
                "class/NAME)")
    if spec.boolean:
        if text not in ("true", "false"):
            return f"{key} is true or false, not {text!r}"
        return text == "true"
    if key.startswith(LATENCY_PREFIX) and text == "none":
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        return f"{key} takes a whole number, not {text!r}"
    number = int(text)
    if not spec.low <= number <= spec.high:
        return f"{key} must be {spec.low}..{spec.high}, not {number}"
    return number


def _regions(key: str) -> tuple[str, str] | str:
    parts = key[len(LATENCY_PREFIX):].split("/")
    if len(parts) != 2 or parts[0] == parts[1]:
        return f"{key!r}: a latency key is latency/REGION_A/REGION_B with two different regions"
    for region in parts:
        problem = name_problem("region", region)
        if problem is not None:
            return problem
    a, b = sorted(parts)
    return a, b


def settings_problem(settings: tuple[tuple[str, str], ...]) -> str | None:
    if not settings:
        return "name at least one setting"
    if len(settings) > MAX_SETTINGS:
        return f"at most {MAX_SETTINGS} settings at once"
    keys = [k for k, _ in settings]
    if keys != sorted(set(keys)):
        return "settings must be sorted by key, each key once"
    for key, text in settings:
        if key.startswith(LATENCY_PREFIX):
            regions = _regions(key)
            if isinstance(regions, str):
                return regions
        value = _value(key, text)
        if isinstance(value, str):
            return value
    return None


def apply_settings(policy: GovernancePolicy, settings: tuple[tuple[str, str], ...]) -> GovernancePolicy | str:
    """The policy with `settings` applied, or what is wrong with them."""
    problem = settings_problem(settings)
    if problem is not None:
        return problem
    placement = policy.placement
    top: dict[str, Any] = {}
    weights: dict[str, Any] = {}
    latencies = {(lat.region_a, lat.region_b): lat.ms for lat in placement.latencies}
    classes = {dc.name: dc.level for dc in policy.data_classes}
    for key, text in settings:
        value = _value(key, text)
        if key.startswith(CLASS_PREFIX):
            level = _class_level(key, text)
            assert not isinstance(level, str)
            if level is None:
                classes.pop(key[len(CLASS_PREFIX):], None)
            else:
                classes[key[len(CLASS_PREFIX):]] = level
        elif key.startswith(LATENCY_PREFIX):
            regions = _regions(key)
            assert not isinstance(regions, str)
            if value is None:
                latencies.pop(regions, None)
            else:
                latencies[regions] = int(value)
        elif key.startswith("weights."):
            weights[key.removeprefix("weights.")] = value
        else:
            top[key] = value
    if len(latencies) > MAX_LATENCIES:
        return f"at most {MAX_LATENCIES} latency entries"
    if not classes:
        return "at least one data class must remain (memories name one)"
    if len(classes) > MAX_DATA_CLASSES:
        return f"at most {MAX_DATA_CLASSES} data classes"
    updated = replace(placement, **{k: v for k, v in top.items() if k in _PLACEMENT_FIELDS},
                      weights=replace(placement.weights, **weights),
                      latencies=tuple(Latency(a, b, ms) for (a, b), ms in sorted(latencies.items())))
    return replace(policy, placement=updated,
                   data_classes=tuple(DataClass(name, level) for name, level in sorted(classes.items())),
                   **{k: v for k, v in top.items() if k not in _PLACEMENT_FIELDS})


def describe(policy: GovernancePolicy) -> tuple[tuple[str, str], ...]:
    """Every setting as (key, value text), sorted: what `fedraft policy show` prints."""
    p = policy.placement
    items = [(k, _text(getattr(p, k))) for k in SETTINGS if k in _PLACEMENT_FIELDS]
    items += [(f"weights.{f.name}", _text(getattr(p.weights, f.name))) for f in fields(Weights)]
    items += [("pending_expiry_ms", str(policy.pending_expiry_ms)), ("max_validity_ms", str(policy.max_validity_ms))]
    items += [("checkpoint_interval", str(policy.checkpoint_interval))]
    items += [(f"{LATENCY_PREFIX}{lat.region_a}/{lat.region_b}", str(lat.ms)) for lat in p.latencies]
    items += [(f"{CLASS_PREFIX}{dc.name}", dc.level.label) for dc in policy.data_classes]
    return tuple(sorted(items))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_PLACEMENT_FIELDS = frozenset(f.name for f in fields(Policy)) - {"weights", "latencies"}
