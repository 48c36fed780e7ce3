"""`fedraft profile`: show which federation and key a command would use, without contacting it."""

from __future__ import annotations

import argparse

from fedraft.cli.common import (
    EXIT_OK,
    add_command,
    add_output_arg,
    add_target_args,
    emit_json,
    print_fields,
    resolve_target,
    wants_json,
)
from fedraft.crypto.keyfile import load_private_key
from fedraft.errors import ConfigError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        subparsers, "profile", func=run_profile,
        help="show the resolved target (endpoints, CA, signing key, cluster id); offline",
        description="Resolve the target the way every client command does (--config, --profile or\n"
                    "$FEDRAFT_PROFILE, then --endpoints/--key/--ca/--cluster-id overrides), check that the\n"
                    "key and CA files can be read, and show the result. Contacts no node.",
        example="fedraft profile --profile fed/admins/hq.profile.toml\n"
                "FEDRAFT_PROFILE=fed/admins/hq.profile.toml fedraft profile -o json",
    )
    add_target_args(parser)
    add_output_arg(parser)


def run_profile(args: argparse.Namespace) -> int:
    target = resolve_target(args)
    identity = load_private_key(target.key_path)
    if not target.ca_cert.is_file():
        raise ConfigError(f"CA certificate {target.ca_cert} not found", hint="check ca_cert in the profile or --ca")
    result = {
        "profile": str(target.path) if target.path.name else "",
        "name": target.name,
        "endpoints": list(target.endpoints),
        "ca_cert": str(target.ca_cert),
        "key": str(target.key_path),
        "key_id": identity.key_id.hex(),
        "public_key": identity.public_key.hex(),
        "cluster_id": target.cluster_id.hex(),
    }
    if wants_json(args):
        emit_json(result)
    else:
        print_fields([("profile", result["profile"] or "(command line)"), ("name", target.name),
                      ("endpoints", ", ".join(target.endpoints)), ("CA certificate", result["ca_cert"]),
                      ("key", result["key"]), ("key id", result["key_id"]), ("cluster id", result["cluster_id"])])
    return EXIT_OK
