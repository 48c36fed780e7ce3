"""Wire forms of the catalog area (proto/fedraft/v1/catalog.proto): commands and stored records.

The commands travel in `PlacementCommand`'s oneof, so wire/placement.py merges FROM_PB and TO_PB.
"""

from __future__ import annotations

from collections.abc import Callable

from fedraft._proto.fedraft.v1 import catalog_pb2 as cpb
from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft.domain.catalog import commands as cc
from fedraft.domain.catalog.model import CatalogEntry, ModelVersion, Replica
from fedraft.domain.commands import Command
from fedraft.errors import DecodeError


def _publish(env: pb.Envelope) -> Command:
    m = env.placement.publish_model
    return cc.PublishModel(m.name, m.version, m.sha256, m.size_bytes, m.gpu_memory_mb)


def _replica(env: pb.Envelope) -> Command:
    r = env.placement.report_replica
    return cc.ReportReplica(r.name, r.version, r.pool)


def _promote(env: pb.Envelope) -> Command:
    p = env.placement.promote_master
    return cc.PromoteMaster(p.name, p.pool)


FROM_PB: dict[str, Callable[[pb.Envelope], Command]] = {
    "publish_model": _publish,
    "report_replica": _replica,
    "promote_master": _promote,
}


def _publish_to(cmd: Command, env: pb.Envelope) -> None:
    assert isinstance(cmd, cc.PublishModel)
    env.placement.publish_model.CopyFrom(cpb.PublishModel(
        name=cmd.name, version=cmd.version, sha256=cmd.sha256, size_bytes=cmd.size_bytes,
        gpu_memory_mb=cmd.gpu_memory_mb))


def _replica_to(cmd: Command, env: pb.Envelope) -> None:
    assert isinstance(cmd, cc.ReportReplica)
    env.placement.report_replica.CopyFrom(cpb.ReportReplica(name=cmd.name, version=cmd.version, pool=cmd.pool))


def _promote_to(cmd: Command, env: pb.Envelope) -> None:
    assert isinstance(cmd, cc.PromoteMaster)
    env.placement.promote_master.CopyFrom(cpb.PromoteMaster(name=cmd.name, pool=cmd.pool))


TO_PB: dict[type[Command], Callable[[Command, pb.Envelope], None]] = {
    cc.PublishModel: _publish_to,
    cc.ReportReplica: _replica_to,
    cc.PromoteMaster: _promote_to,
}


# ---- stored records ----

def entry_to_pb(e: CatalogEntry) -> cpb.CatalogRecord:
    return cpb.CatalogRecord(
        name=e.name, master=e.master, master_since_ms=e.master_since_ms,
        versions=[cpb.ModelVersionRecord(version=v.version, sha256=v.sha256, size_bytes=v.size_bytes,
                                         gpu_memory_mb=v.gpu_memory_mb, published_ms=v.published_ms,
                                         published_index=v.published_index, published_by=v.published_by)
                  for v in e.versions],
        replicas=[cpb.ReplicaRecord(pool=r.pool, version=r.version, reported_ms=r.reported_ms) for r in e.replicas])


def entry_from_pb(r: cpb.CatalogRecord) -> CatalogEntry:
    if not r.versions:
        raise DecodeError(f"catalog record {r.name!r} has no version")
    return CatalogEntry(
        name=r.name, master=r.master, master_since_ms=r.master_since_ms,
        versions=tuple(ModelVersion(v.version, v.sha256, v.size_bytes, v.gpu_memory_mb, v.published_ms,
                                    v.published_index, v.published_by) for v in r.versions),
        replicas=tuple(Replica(x.pool, x.version, x.reported_ms) for x in r.replicas))
