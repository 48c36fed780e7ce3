"""`fedraft fanout QUERY`: a signed query to the pools paired with yours at a trust level (decision 0009).

The query is signed here with your key (context fedraft/v1/fanout) and sent, through a node of your
pool, to every pool paired with it at --level or more. Each of those nodes checks the signature, your
key, the pairing and its trust, the freshness and that it never saw the query before; it answers from
its local handler (a document search over its fan-out folder) and signs the answer. Every answer's
signature is verified here against the answering pool's node key.

Exit codes: 0 when every answer that came back verifies (pools that refused or timed out are shown),
1 when an answer does not verify.
"""

from __future__ import annotations

import argparse
import sys

from fedraft.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    add_command,
    add_output_arg,
    add_target_args,
    emit_json,
    print_table,
    wants_json,
)
from fedraft.cli.placement_common import TRUST_CHOICES, connect, integer
from fedraft.domain.governance.fanout import MAX_RESULTS, MAX_TEXT
from fedraft.errors import CallerError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(subparsers, "fanout", func=fanout, help="ask the pools trusted enough; verify their signed answers",
                    description=__doc__.split("\n\n", 1)[1] if __doc__ else "",
                    example='fedraft fanout "gpu quota"\nfedraft fanout "incident 42" --level high -o json')
    p.add_argument("query", metavar="QUERY", help=f"the text to search for (1-{MAX_TEXT} characters)")
    p.add_argument("--level", choices=TRUST_CHOICES, default="standard",
                   help="only pools paired with yours at this trust or more are asked (default: standard)")
    p.add_argument("--max-results", metavar="N", help=f"hits per pool (1-{MAX_RESULTS}; default: the pool's)")
    p.add_argument("--timeout", metavar="SECONDS", help="how long each pool has to answer (1-30, default 5)")
    add_target_args(p)
    add_output_arg(p)


def fanout(args: argparse.Namespace) -> int:
    text = args.query
    if not 0 < len(text) <= MAX_TEXT or not text.strip():
        raise CallerError(f"QUERY must be 1-{MAX_TEXT} characters, not blank")
    max_results = integer(args.max_results, "--max-results", 1, MAX_RESULTS)
    timeout_ms = integer(args.timeout, "--timeout", 1, 30, default=5) * 1000
    with connect(args) as client:
        result = client.fanout(text, args.level, max_results=max_results, timeout_ms=timeout_ms)
    bad = [a for a in result.answers if a.verify_error]
    if wants_json(args):
        emit_json({"query": text, "level": args.level, "served_by": result.served_by, "skipped": list(result.skipped),
                   "answers": [{"pool": a.pool, "node_id": a.node_id, "trust": a.trust, "code": a.code.name,
                                "message": a.message, "verified": a.verified, "signer": a.signer,
                                "verify_error": a.verify_error,
                                "handler": a.handler, "truncated": a.truncated,
                                "hits": [{"name": n, "snippet": s, "line": line} for n, s, line in a.hits]}
                               for a in result.answers]})
    else:
        _print(result, args.level)
    return EXIT_FAILURE if bad else EXIT_OK


def _print(result: object, level: str) -> None:
    from fedraft.client import FanoutResult

    assert isinstance(result, FanoutResult)
    if not result.answers:
        print(f"no pool is paired with yours at {level} or more: nobody was asked")
    for a in result.answers:
        if a.verified:
            more = " (truncated)" if a.truncated else ""
            print(f"{a.pool} ({a.trust}): {len(a.hits)} hits{more}, answer signed by {a.signer}, verified")
        else:
            print(f"{a.pool} ({a.trust}): {a.code.name}: {a.message}", file=sys.stderr if a.verify_error else None)
    rows = [[a.pool, name, str(line) if line else "", snippet] for a in result.answers if a.verified
            for name, snippet, line in a.hits]
    if rows:
        print_table(["pool", "name", "line", "snippet"], rows)
    for line in result.skipped:
        print(f"not asked: {line}")
