"""The catalog's values: a model name with its master pool, its published versions and the satellite
pools that hold a copy (SPEC §5). Frozen, with sorted tuples, so every node iterates them alike."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class ModelVersion:
    version: int                 # a positive integer, strictly increasing per model
    sha256: bytes                # of the model's bytes (32)
    size_bytes: int
    gpu_memory_mb: int = 0
    published_ms: int = 0        # effective time (SPEC D6)
    published_index: int = 0
    published_by: str = ""       # the pool that was master then


@dataclass(frozen=True, order=True)
class Replica:
    """A satellite's newest verified copy of the model."""

    pool: str
    version: int
    reported_ms: int = 0


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    master: str                           # the pool that publishes new versions
    versions: tuple[ModelVersion, ...]    # ascending, never empty
    replicas: tuple[Replica, ...] = ()    # sorted by pool, one per pool, never the master
    master_since_ms: int = 0

    @property
    def latest(self) -> ModelVersion:
        return self.versions[-1]

    def version(self, number: int) -> ModelVersion | None:
        return next((v for v in self.versions if v.version == number), None)

    def replica(self, pool: str) -> Replica | None:
        return next((r for r in self.replicas if r.pool == pool), None)

    def holders(self) -> tuple[str, ...]:
        """Pools holding the latest version: the master and every satellite that reported it (sorted)."""
        latest = self.latest.version
        return tuple(sorted({self.master, *(r.pool for r in self.replicas if r.version == latest)}))
