"""The catalog area's commands (SPEC §5): publish a model version, report a replica, promote a master.

A model version is a positive integer (1, 2, 3, ...), strictly increasing per model name; gaps are
allowed. A version is identified by its number and pinned by the sha256 of its bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fedraft.domain.commands import ADMIN_ONLY, NODE_ONLY, OPERATOR_UP, Command
from fedraft.domain.placement.commands import name_problem
from fedraft.domain.roles import Role

MAX_VERSION = 2**63 - 1
MAX_SIZE_BYTES = 2**63 - 1
MAX_GPU_MEMORY_MB = 2**40
DIGEST_BYTES = 32


@dataclass(frozen=True)
class PublishModel(Command):
    """A new version of a model, by an admin or operator of its master pool (the author's pool). The first
    publish of a name makes the author's pool its master."""

    NAME: ClassVar[str] = "publish_model"
    ROLES: ClassVar[frozenset[Role]] = OPERATOR_UP
    name: str
    version: int
    sha256: bytes
    size_bytes: int
    gpu_memory_mb: int = 0  # what one replica needs to serve it (informational for now)


@dataclass(frozen=True)
class ReportReplica(Command):
    """`pool` holds a verified copy of name@version: sent by that pool's node or agent (after checking the
    sha256), or by an operator or admin of that pool. An empty `pool` means the author's own."""

    NAME: ClassVar[str] = "report_replica"
    ROLES: ClassVar[frozenset[Role]] = NODE_ONLY | OPERATOR_UP
    name: str
    version: int
    pool: str = ""


@dataclass(frozen=True)
class PromoteMaster(Command):
    """Make `pool` the model's master (critical: every voter pool approves). Proposed by an admin of another
    pool: a satellite never promotes itself. The old master becomes a satellite."""

    NAME: ClassVar[str] = "promote_master"
    ROLES: ClassVar[frozenset[Role]] = ADMIN_ONLY
    CRITICAL: ClassVar[bool] = True
    name: str
    pool: str


CATALOG_COMMANDS = (PublishModel, ReportReplica, PromoteMaster)


def version_problem(version: int) -> str | None:
    if not 1 <= version <= MAX_VERSION:
        return f"a model version is a whole number from 1 to {MAX_VERSION}"
    return None


def static_problem(command: Command) -> str | None:
    """What is wrong with a catalog command regardless of state."""
    if not isinstance(command, PublishModel | ReportReplica | PromoteMaster):
        return None
    problem = name_problem("model", command.name)
    if problem is not None:
        return problem
    if isinstance(command, PromoteMaster) or (isinstance(command, ReportReplica) and command.pool):
        problem = name_problem("pool", command.pool)
    if problem is None and isinstance(command, PublishModel | ReportReplica):
        problem = version_problem(command.version)
    if problem is None and isinstance(command, PublishModel):
        if len(command.sha256) != DIGEST_BYTES:
            problem = f"the sha256 digest is {DIGEST_BYTES} bytes (64 hex digits), not {len(command.sha256)}"
        elif not 1 <= command.size_bytes <= MAX_SIZE_BYTES:
            problem = "size_bytes must be at least 1"
        elif not 0 <= command.gpu_memory_mb <= MAX_GPU_MEMORY_MB:
            problem = f"gpu_memory_mb must be 0..{MAX_GPU_MEMORY_MB}"
    return problem
