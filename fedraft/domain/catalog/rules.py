"""The catalog's rules (SPEC §5), as pure transitions: each returns the new entry, `Unchanged` (accepted,
nothing to record) or a refusal `(Code, reason)`.

    PublishModel(name, version, ...) by an admin/operator of pool P (the author's pool)
      name not in the catalog ............ new entry; P becomes its master
      P is not the master ................ PERMISSION_DENIED  only the master pool publishes
      version already published .......... ALREADY_EXISTS
      version below the latest ........... FAILED_PRECONDITION  versions only increase
      otherwise .......................... the version is appended
    ReportReplica(name, version, pool) by the node/agent or an operator+ of P (pool "" means P)
      pool is not P ...................... PERMISSION_DENIED  a pool reports only its own copies
      name or version not published ...... NOT_FOUND
      pool is the master ................. Unchanged  the master holds what it published
      pool reported a newer version ...... Unchanged  the newer copy stays on record
      otherwise .......................... the pool's replica record is (version, now)
    PromoteMaster(name, pool) by an admin of P (critical: runs once every voter pool approved)
      name not in the catalog ............ NOT_FOUND
      pool is P .......................... PERMISSION_DENIED  a satellite never promotes itself
      pool is already the master ......... ALREADY_EXISTS
      pool lacks the latest version ...... FAILED_PRECONDITION
      otherwise .......................... pool becomes master; the old master a satellite with the latest
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from fedraft.domain.catalog.commands import PublishModel, ReportReplica
from fedraft.domain.catalog.model import CatalogEntry, ModelVersion, Replica
from fedraft.domain.outcome import Code

Refusal = tuple[Code, str]


@dataclass(frozen=True)
class Unchanged:
    reason: str


def publish(entry: CatalogEntry | None, by_pool: str, command: PublishModel, now_ms: int,
            index: int) -> CatalogEntry | Refusal:
    version = ModelVersion(command.version, command.sha256, command.size_bytes, command.gpu_memory_mb,
                           published_ms=now_ms, published_index=index, published_by=by_pool)
    if entry is None:
        return CatalogEntry(command.name, by_pool, (version,), master_since_ms=now_ms)
    if entry.master != by_pool:
        return (Code.PERMISSION_DENIED,
                f"only the master pool {entry.master} publishes {entry.name} (a satellite cannot; the master "
                "moves by the critical PromoteMaster)")
    if entry.version(command.version) is not None:
        return Code.ALREADY_EXISTS, f"{entry.name} version {command.version} is already published"
    if command.version < entry.latest.version:
        return (Code.FAILED_PRECONDITION,
                f"{entry.name} versions only increase: {command.version} is below the latest, "
                f"{entry.latest.version}")
    return replace(entry, versions=(*entry.versions, version))


def report_replica(entry: CatalogEntry | None, by_pool: str, command: ReportReplica,
                   now_ms: int) -> CatalogEntry | Unchanged | Refusal:
    pool = command.pool or by_pool
    if pool != by_pool:
        return Code.PERMISSION_DENIED, f"pool {by_pool} cannot report a replica held by {pool}"
    if entry is None:
        return Code.NOT_FOUND, f"model {command.name} is not in the catalog"
    if entry.version(command.version) is None:
        return Code.NOT_FOUND, f"{entry.name} version {command.version} is not published"
    if entry.master == pool:
        return Unchanged(f"{pool} is the master of {entry.name}: it holds what it published")
    held = entry.replica(pool)
    if held is not None and held.version > command.version:
        return Unchanged(f"{pool} already reported the newer {entry.name} version {held.version}")
    others = tuple(r for r in entry.replicas if r.pool != pool)
    return replace(entry, replicas=tuple(sorted((*others, Replica(pool, command.version, now_ms)))))


def promote(entry: CatalogEntry | None, by_pool: str, name: str, pool: str, now_ms: int) -> CatalogEntry | Refusal:
    if entry is None:
        return Code.NOT_FOUND, f"model {name} is not in the catalog"
    if pool == by_pool:
        return (Code.PERMISSION_DENIED,
                f"a satellite never promotes itself: an admin of another pool proposes making {pool} the master "
                f"of {name}")
    if entry.master == pool:
        return Code.ALREADY_EXISTS, f"{pool} is already the master of {name}"
    latest = entry.latest.version
    held = entry.replica(pool)
    if held is None or held.version != latest:
        has = f"holds version {held.version}" if held is not None else "holds no replica"
        return (Code.FAILED_PRECONDITION,
                f"{pool} {has} of {name}; a new master must hold the latest version, {latest} "
                f"(its node reports it with ReportReplica)")
    demoted = Replica(entry.master, latest, now_ms)
    others = tuple(r for r in entry.replicas if r.pool != pool)
    return replace(entry, master=pool, master_since_ms=now_ms, replicas=tuple(sorted((*others, demoted))))
