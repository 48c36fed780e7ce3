"""`fedraft principal|pool|trust|unpair|policy`: the critical governance operations (SPEC §5, §6).

Each of these proposes a critical command: it waits as a pending operation until an admin of every
voter pool approved it (`fedraft pending`, `fedraft approve ID`, `fedraft veto ID`). The command prints
the pending id the other admins need. `fedraft policy show` and `fedraft principal list` only read.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedraft.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    add_command,
    add_output_arg,
    add_target_args,
    emit,
    emit_table,
    wants_json,
)
from fedraft.cli.placement_common import TRUST_CHOICES, connect, name, refused, timestamp, trust
from fedraft.domain.outcome import Code
from fedraft.errors import CallerError, ConfigError

ROLE_CHOICES = ("admin", "operator", "submitter", "node")
PENDING_HINT = "`fedraft pending` shows it; admins of the other voter pools run `fedraft approve ID`"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    principal = add_command(
        subparsers, "principal", func=_missing("principal", "add, revoke, rotate or list"),
        help="add, revoke or rotate the keys of people and agents (critical)",
        description="Principals are keys bound to one pool with one role (admin, operator, submitter, node).\n"
                    "Adding, revoking and rotating are critical: every voter pool approves first. A revoked or\n"
                    "rotated-out key is refused from the envelope after the change on.",
        example="fedraft principal add --pool hq --role operator --name alice --key-file alice.key.pub\n"
                "fedraft principal revoke 3f9a1c\nfedraft principal list")
    actions = principal.add_subparsers(title="actions", metavar="ACTION")
    p = _cmd(actions, "add", principal_add, "propose a new principal (critical)",
             "fedraft principal add --pool hq --role operator --name alice --key-file alice.key.pub\n"
             "fedraft principal add --pool gpu-dc --role admin --name bob --public-key 5d1e...")
    p.add_argument("--pool", required=True, metavar="POOL", help="the pool the key belongs to")
    p.add_argument("--role", required=True, metavar="ROLE", help=f"one of: {', '.join(ROLE_CHOICES)}")
    p.add_argument("--name", required=True, metavar="NAME", help="who holds the key (letters, digits, - _ .)")
    _key_args(p, "")
    p = _cmd(actions, "revoke", principal_revoke, "propose revoking a key (critical)",
             "fedraft principal revoke 3f9a1c\nfedraft principal revoke alice")
    p.add_argument("principal", metavar="KEY", help="key id (or a unique hex prefix of it), or the principal's name")
    p = _cmd(actions, "rotate", principal_rotate, "propose replacing a principal's key (critical)",
             "fedraft principal rotate alice --key-file alice-2026.key.pub")
    p.add_argument("principal", metavar="KEY", help="key id (or a unique hex prefix of it), or the principal's name")
    _key_args(p, "new ")
    _cmd(actions, "list", principal_list, "list the principals (revoked ones with --all)",
         "fedraft principal list\nfedraft principal list --all -o json").add_argument(
        "--all", action="store_true", help="include revoked and rotated-out keys")

    pool = add_command(subparsers, "pool", func=_missing("pool", "register or retire"),
                       help="register or retire a member pool (critical)",
                       description="Member pools run no voter node: an agent reports for them (`fedraft agent`).\n"
                                   "Registering and retiring are critical: every voter pool approves first.",
                       example="fedraft pool register edge-1 --region eu-west --tier gpu --agent-key edge-1.key.pub\n"
                               "fedraft pool retire edge-1")
    actions = pool.add_subparsers(title="actions", metavar="ACTION")
    p = _cmd(actions, "register", pool_register, "propose a member pool and its agent's key (critical)",
             "fedraft pool register edge-1 --region eu-west --tier gpu --agent-key edge-1.key.pub")
    p.add_argument("pool", metavar="POOL")
    p.add_argument("--region", default="", metavar="R", help="the pool's region")
    p.add_argument("--tier", default="", metavar="T", help="the pool's tier: gpu, cpu, ...")
    p.add_argument("--agent-key", type=Path, metavar="FILE.pub", help="the agent's public key file")
    p.add_argument("--agent-public-key", metavar="HEX", help="the agent's public key as hex")
    p = _cmd(actions, "retire", pool_retire, "propose retiring a member pool: its keys and pairings go (critical)",
             "fedraft pool retire edge-1")
    p.add_argument("pool", metavar="POOL")

    trust_cmd = add_command(subparsers, "trust", func=_missing("trust", "set"),
                            help="change the trust level of a pairing (critical)",
                            example="fedraft trust set hq gpu-dc max")
    actions = trust_cmd.add_subparsers(title="actions", metavar="ACTION")
    p = _cmd(actions, "set", trust_set, "propose a new trust level for two paired pools, both ways (critical)",
             "fedraft trust set hq gpu-dc max\nfedraft trust set hq cpu-branch standard -o json")
    p.add_argument("pool_a", metavar="A")
    p.add_argument("pool_b", metavar="B")
    p.add_argument("level", metavar="LEVEL", help=f"one of: {', '.join(TRUST_CHOICES)}")

    p = _cmd(subparsers, "unpair", unpair, "propose ending the pairing of two pools: zero trust again (critical)",
             "fedraft unpair hq cpu-branch")
    p.add_argument("pool_a", metavar="A")
    p.add_argument("pool_b", metavar="B")

    policy = add_command(subparsers, "policy", func=_missing("policy", "set or show"),
                         help="show or change the replicated policy (changing it is critical)",
                         example="fedraft policy show\nfedraft policy set missed_heartbeats=2 drain_ms=30000")
    actions = policy.add_subparsers(title="actions", metavar="ACTION")
    p = _cmd(actions, "set", policy_set, "propose policy settings KEY=VALUE (critical)",
             "fedraft policy set missed_heartbeats=2 drain_ms=30000\n"
             "fedraft policy set weights.spread=3 latency/eu-west/us-east=80 preemption=false\n"
             "fedraft policy set pending_expiry_ms=7200000")
    p.add_argument("settings", nargs="+", metavar="KEY=VALUE", help="`fedraft policy show` lists the keys")
    _cmd(actions, "show", policy_show, "show every policy setting", "fedraft policy show\nfedraft policy show -o json")


def _cmd(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], command: str, func: Any, help: str,
         example: str) -> argparse.ArgumentParser:
    p = add_command(subparsers, command, func=func, help=help, example=example)
    add_target_args(p)
    add_output_arg(p)
    return p


def _key_args(p: argparse.ArgumentParser, new: str) -> None:
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--key-file", type=Path, metavar="FILE.pub",
                       help=f"the {new}public key file (`fedraft keygen` writes FILE.pub)")
    group.add_argument("--public-key", metavar="HEX", help=f"the {new}public key as 64 hex digits")


def _missing(command: str, actions: str) -> Any:
    def run(_args: argparse.Namespace) -> int:
        raise CallerError(f"fedraft {command}: say {actions}", hint=f"fedraft {command} --help")
    return run


# --- shared ----------------------------------------------------------------------------------------

def public_key(path: Path | None, text: str | None, flag: str) -> bytes:
    """A public key from a `.pub` file or hex; a private key file is refused (it must not travel)."""
    from fedraft.crypto.keyfile import PRIVATE_KIND, load_public_key

    if path is not None:
        try:
            return load_public_key(path)
        except ConfigError:
            try:
                private = PRIVATE_KIND in path.read_text(errors="replace")[:256]
            except OSError:
                private = False
            if private:
                raise CallerError(f"{path} is a private key file: pass its public half ({path}.pub); a private "
                                  "key never leaves its holder") from None
            raise
    try:
        key = bytes.fromhex(text or "")
    except ValueError:
        key = b""
    if len(key) != 32:
        raise CallerError(f"{flag}: an Ed25519 public key is 64 hex digits")
    return key


def proposed(args: argparse.Namespace, result: Any, what: str, hints: dict[int, str] | None = None) -> int:
    """Report a critical proposal: pending (with its id), or executed at once (a one-voter federation)."""
    if result.code != 0:
        return refused(result, hints)
    g = result.governance
    pid = bytes(g.pending_id).hex()
    doc = {"ok": True, "index": result.index, "pending_id": pid, "command": g.command, "state": g.state,
           "approved": list(g.approved), "waiting_for": list(g.waiting_for), "expires_ms": g.expires_ms,
           "command_digest": bytes(g.command_digest).hex()}
    if g.state == "executed":
        doc.update(result_code=g.result_code, result_message=g.result_message)
        emit(args, doc, f"{what}: executed at once (index {result.index}): {g.result_message}")
        return EXIT_OK if g.result_code == Code.OK else EXIT_FAILURE
    emit(args, doc, f"{what}: pending as {pid[:12]} (index {result.index}); approved by {', '.join(g.approved)}; "
                    f"waiting for {', '.join(g.waiting_for)} until {timestamp(g.expires_ms)}\n"
                    f"the admins of {', '.join(g.waiting_for)} run: fedraft approve {pid[:12]}")
    return EXIT_OK


def find_principal(client: Any, text: str, *, current: bool = True) -> Any:
    """A principal by key id, unique hex prefix of it (4+ digits), or unique name among current keys."""
    everyone = client.list("principals")
    candidates = [p for p in everyone if not (current and p.revoked_index)]
    lowered = text.lower()
    by_id = [p for p in candidates if len(lowered) >= 4 and bytes(p.key_id).hex().startswith(lowered)]
    by_name = [p for p in candidates if p.name == text]
    found = by_id or by_name
    if not found:
        raise CallerError(f"no current principal has key id or name {text!r}",
                          hint="`fedraft principal list` shows them")
    if len(found) > 1:
        raise CallerError(f"{text!r} matches {len(found)} principals: give more of the key id")
    return found[0]


# --- principals ------------------------------------------------------------------------------------

def principal_add(args: argparse.Namespace) -> int:
    from fedraft.domain.governance.commands import principal_name_problem
    from fedraft.domain.roles import Role

    pool = name("pool", args.pool, "--pool")
    if args.role not in ROLE_CHOICES:
        raise CallerError(f"--role: unknown role {args.role!r} (one of: {', '.join(ROLE_CHOICES)})")
    problem = principal_name_problem(args.name)
    if problem is not None:
        raise CallerError(f"--name: {problem}")
    key = public_key(args.key_file, args.public_key, "--public-key")
    with connect(args) as client:
        result = client.add_principal(key, pool, Role.parse(args.role), args.name, check=False)
    return proposed(args, result, f"add {args.name} ({args.role} of {pool})")


def principal_revoke(args: argparse.Namespace) -> int:
    with connect(args) as client:
        p = find_principal(client, args.principal)
        result = client.revoke_principal(bytes(p.key_id), check=False)
    return proposed(args, result, f"revoke {p.name}'s key {bytes(p.key_id).hex()[:12]}")


def principal_rotate(args: argparse.Namespace) -> int:
    key = public_key(args.key_file, args.public_key, "--public-key")
    with connect(args) as client:
        p = find_principal(client, args.principal)
        result = client.rotate_key(bytes(p.key_id), key, check=False)
    return proposed(args, result, f"rotate {p.name}'s key {bytes(p.key_id).hex()[:12]}")


def principal_list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        records = client.list("principals")
    rows = [{"key_id": bytes(p.key_id).hex(), "name": p.name, "pool": p.pool, "role": p.role,
             "added_index": p.added_index, "state": f"{p.revoked_why} at {p.revoked_index}" if p.revoked_index
             else "valid"} for p in records if args.all or not p.revoked_index]
    rows.sort(key=lambda r: (r["pool"], r["role"], r["name"]))
    emit_table(args, rows, title="fedraft principals")
    return EXIT_OK


# --- pools and trust -------------------------------------------------------------------------------

def pool_register(args: argparse.Namespace) -> int:
    pool = name("pool", args.pool)
    region = name("region", args.region, "--region") if args.region else ""
    tier = name("tier", args.tier, "--tier") if args.tier else ""
    if (args.agent_key is None) == (args.agent_public_key is None):
        raise CallerError("give the agent's key: --agent-key FILE.pub or --agent-public-key HEX (one of them)")
    key = public_key(args.agent_key, args.agent_public_key, "--agent-public-key")
    with connect(args) as client:
        result = client.register_pool(pool, region, tier, key, check=False)
    return proposed(args, result, f"register member pool {pool}")


def pool_retire(args: argparse.Namespace) -> int:
    pool = name("pool", args.pool)
    with connect(args) as client:
        result = client.retire_pool(pool, check=False)
    return proposed(args, result, f"retire pool {pool}")


def _two_pools(args: argparse.Namespace) -> tuple[str, str]:
    a, b = name("pool", args.pool_a), name("pool", args.pool_b)
    if a == b:
        raise CallerError("name two different pools")
    return a, b


def trust_set(args: argparse.Namespace) -> int:
    a, b = _two_pools(args)
    level = trust(args.level, "LEVEL")
    with connect(args) as client:
        result = client.set_trust(a, b, level, check=False)
    return proposed(args, result, f"trust {a} <-> {b} at {level.label}")


def unpair(args: argparse.Namespace) -> int:
    a, b = _two_pools(args)
    with connect(args) as client:
        result = client.unpair(a, b, check=False)
    return proposed(args, result, f"unpair {a} and {b}")


# --- policy ----------------------------------------------------------------------------------------

def parse_settings(items: list[str]) -> dict[str, str]:
    from fedraft.domain.governance.policy import settings_problem

    settings: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise CallerError(f"{item!r} is not KEY=VALUE", hint="`fedraft policy show` lists the keys")
        if key in settings:
            raise CallerError(f"{key} is given twice")
        settings[key] = value
    problem = settings_problem(tuple(sorted(settings.items())))
    if problem is not None:
        raise CallerError(problem)
    return settings


def policy_set(args: argparse.Namespace) -> int:
    settings = parse_settings(args.settings)
    with connect(args) as client:
        result = client.set_policy(settings, check=False)
    return proposed(args, result, "policy " + " ".join(f"{k}={v}" for k, v in sorted(settings.items())))


def policy_show(args: argparse.Namespace) -> int:
    from fedraft.domain.governance.policy import GovernancePolicy, describe
    from fedraft.wire.governance import policy_from_pb

    with connect(args) as client:
        records = client.list("policy")
    current = policy_from_pb(records[0]) if records else GovernancePolicy()
    defaults = dict(describe(GovernancePolicy()))
    rows = [{"key": k, "value": v, "default": defaults.get(k, "")} for k, v in describe(current)]
    if not records and not wants_json(args):
        print("no SetPolicy yet: every setting has its default")
    emit_table(args, rows, title="fedraft policy")
    return EXIT_OK


