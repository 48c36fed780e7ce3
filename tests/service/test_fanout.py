"""Fan-out verification on a receiving node (decision 0009), against a real replicated state: a good
query passes; a bad signature, another federation's, an expired or replayed query, an unknown or revoked
author, an unpaired origin and a trust below the query's level are each refused with a clear reason.
Plus: only a node of the origin pool may forward (Ask), the answer is signed by the node key and bound to
its query, and the folder search is bounded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import grpc
import pytest

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft._proto.fedraft.v1 import fanout_pb2 as fpb
from fedraft.crypto import fanout as fcrypto
from fedraft.crypto.request_auth import AUTH_HEADER, sign_request
from fedraft.crypto.signing import Identity, Signer
from fedraft.domain.governance import commands as gc
from fedraft.domain.outcome import Code
from fedraft.domain.placement.model import Trust
from fedraft.domain.roles import Role
from fedraft.service.fanout import FanoutService, NonceCache, QueryChecker, Refusal, method_name
from fedraft.service.fanout_search import FolderSearch, Query
from fedraft.storage.state import StateStore
from tests.consensus.test_governance_apply import enact
from tests.consensus.test_placement_apply import Log
from tests.helpers import Fed, make_federation


@pytest.fixture()
def fed() -> Fed:
    return make_federation()


@pytest.fixture()
def log(tmp_path: Path, fed: Fed) -> Log:
    log = Log(fed, [StateStore(tmp_path / "state", fed.genesis, map_size=64 << 20)])
    log.pair("hq", "gpu-dc", Trust.HIGH)
    log.pair("hq", "cpu-branch", Trust.STANDARD)
    return log


def wall() -> int:
    import time

    return int(time.time() * 1000)


def query(fed: Fed, who: Identity, *, origin: str = "hq", level: str = "high", now: int | None = None,
          validity_ms: int = 60_000, cluster_id: bytes | None = None, text: str = "gpu quota") -> pb.Signed:
    return fcrypto.build_query(Signer(who), cluster_id or fed.cluster_id, origin_pool=origin, author="a", text=text,
                               level=level, now_ms=now if now is not None else wall(), validity_ms=validity_ms)


def checker(log: Log, pool: str) -> QueryChecker:
    return QueryChecker(log.stores[0], log.fed.cluster_id, pool)


def refusal(fn: Any, *args: Any) -> tuple[Code, str]:
    with pytest.raises(Refusal) as info:
        fn(*args)
    return info.value.code, info.value.message


def test_a_good_query_passes_on_a_pool_paired_at_its_level(log: Log) -> None:
    q = query(log.fed, log.fed.admins["hq"])
    verified = checker(log, "gpu-dc").check(q, wall())
    assert verified.query.text == "gpu quota" and verified.author.name == "hq-admin"
    # and on the origin's own node (no pairing needed)
    assert checker(log, "hq").check(query(log.fed, log.fed.admins["hq"]), wall()).query.origin_pool == "hq"


def test_a_bad_signature_or_another_federations_is_refused(log: Log) -> None:
    fed = log.fed
    q = query(fed, fed.admins["hq"])
    forged = pb.Signed(body=q.body, sig=Identity.generate().sign(b"fedraft/v1/fanout", fed.cluster_id, q.body),
                       key_id=q.key_id)
    assert refusal(checker(log, "gpu-dc").check, forged, wall()) == (
        Code.UNAUTHENTICATED, "the query's signature does not verify (wrong key, another federation, or altered bytes)")
    altered = fpb.FanoutMessage()
    altered.ParseFromString(q.body)
    altered.query.level = "standard"
    tampered = pb.Signed(body=altered.SerializeToString(deterministic=True), sig=q.sig, key_id=q.key_id)
    assert refusal(checker(log, "gpu-dc").check, tampered, wall())[0] == Code.UNAUTHENTICATED
    other = query(fed, fed.admins["hq"], cluster_id=os.urandom(32))
    assert refusal(checker(log, "gpu-dc").check, other, wall())[0] == Code.UNAUTHENTICATED


def test_an_answer_cannot_pass_for_a_query(log: Log) -> None:
    fed = log.fed
    answer = fcrypto.sign_message(Signer(fed.admins["hq"]), fed.cluster_id,
                                  fpb.FanoutMessage(answer=fpb.FanoutAnswer(pool="hq")))
    code, message = refusal(checker(log, "gpu-dc").check, answer, wall())
    assert code == Code.INVALID_ARGUMENT and "not a fan-out query" in message


def test_expired_and_future_queries_are_refused(log: Log) -> None:
    fed = log.fed
    old = query(fed, fed.admins["hq"], now=wall() - 120_000)
    code, message = refusal(checker(log, "gpu-dc").check, old, wall())
    assert code == Code.DEADLINE_EXCEEDED and "expired" in message
    future = query(fed, fed.admins["hq"], now=wall() + 120_000)
    assert refusal(checker(log, "gpu-dc").check, future, wall()) == (
        Code.INVALID_ARGUMENT, "the query is issued in the future (check the author's clock)")
    long = query(fed, fed.admins["hq"], validity_ms=10 * 60_000)
    assert refusal(checker(log, "gpu-dc").check, long, wall())[0] == Code.INVALID_ARGUMENT


def test_a_replayed_query_is_refused(log: Log) -> None:
    q = query(log.fed, log.fed.admins["hq"])
    c = checker(log, "gpu-dc")
    c.check(q, wall())
    assert refusal(c.check, q, wall()) == (Code.UNAUTHENTICATED,
                                           "replayed fan-out query (this key's nonce was seen already)")
    # another receiving node has its own cache: the origin sends the same query to every target
    checker(log, "cpu-branch").check(query(log.fed, log.fed.admins["hq"], level="standard"), wall())


def test_unknown_and_revoked_authors_are_refused(log: Log) -> None:
    fed = log.fed
    assert refusal(checker(log, "gpu-dc").check, query(fed, Identity.generate()), wall()) == (
        Code.UNAUTHENTICATED, "the query's author key is not a principal of this federation")
    alice = Identity.generate()
    enact(log, gc.AddPrincipal(alice.public_key, "hq", Role.SUBMITTER, "alice"))
    checker(log, "gpu-dc").check(query(fed, alice), wall())
    enact(log, gc.RevokePrincipal(alice.key_id))
    code, message = refusal(checker(log, "gpu-dc").check, query(fed, alice), wall())
    assert code == Code.UNAUTHENTICATED and "alice was revoked by hq-admin at index" in message


def test_an_author_claiming_another_pool_and_nodes_are_refused(log: Log) -> None:
    fed = log.fed
    code, message = refusal(checker(log, "gpu-dc").check, query(fed, fed.admins["cpu-branch"], origin="hq"), wall())
    assert code == Code.PERMISSION_DENIED and "cpu-branch-admin belongs to pool cpu-branch" in message
    code, message = refusal(checker(log, "gpu-dc").check, query(fed, fed.nodes["hq"]), wall())
    assert code == Code.PERMISSION_DENIED and "a node principal may not author" in message


def test_unpaired_origins_and_trust_below_the_level_are_refused(log: Log) -> None:
    fed = log.fed
    code, message = refusal(checker(log, "gpu-dc").check,
                            query(fed, fed.admins["cpu-branch"], origin="cpu-branch", level="standard"), wall())
    assert code == Code.PERMISSION_DENIED and "cpu-branch is not paired with gpu-dc" in message
    code, message = refusal(checker(log, "cpu-branch").check, query(fed, fed.admins["hq"], level="high"), wall())
    assert (code, message) == (Code.PERMISSION_DENIED,
                               "cpu-branch trusts hq at standard, below the query's level high")
    checker(log, "cpu-branch").check(query(fed, fed.admins["hq"], level="standard"), wall())
    enact(log, gc.Unpair("hq", "gpu-dc"))
    code, message = refusal(checker(log, "gpu-dc").check, query(fed, fed.admins["hq"]), wall())
    assert code == Code.PERMISSION_DENIED and "zero default trust" in message


def test_the_nonce_cache_refuses_when_full_of_live_queries() -> None:
    cache = NonceCache(max_entries=2)
    assert cache.add(b"a", 2_000, 1_000) and cache.add(b"b", 2_000, 1_000)
    assert not cache.add(b"a", 2_000, 1_500)
    with pytest.raises(Refusal, match="too many fan-out queries"):
        cache.add(b"c", 2_000, 1_500)
    assert cache.add(b"c", 3_000, 2_000)  # the others expired: room again
    assert cache.add(b"a", 3_000, 2_000)  # an expired nonce is forgotten


class FakeContext:
    def __init__(self, header: bytes) -> None:
        self.header = header

    def invocation_metadata(self) -> list[tuple[str, bytes]]:
        return [(AUTH_HEADER, self.header)]

    def time_remaining(self) -> float:
        return 10.0

    def peer(self) -> str:
        return "test"


def service(log: Log, pool: str, folder: Path | None) -> FanoutService:
    return FanoutService(log.stores[0], log.fed.genesis, pool, log.fed.nodes[pool],
                         handler=FolderSearch(folder) if folder else None, peer_api={}, ca_pem=b"")


def ask(svc: FanoutService, log: Log, caller: Identity, q: pb.Signed) -> pb.Signed:
    body = q.SerializeToString(deterministic=True)
    header = sign_request(Signer(caller), log.fed.cluster_id, method_name("Ask"), body)
    out = pb.Signed()
    out.ParseFromString(svc.ask(body, FakeContext(header)))  # type: ignore[arg-type]
    return out


def test_ask_answers_only_a_node_of_the_origin_pool_and_signs_the_answer(log: Log, tmp_path: Path) -> None:
    fed = log.fed
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "quota.md").write_text("# Quotas\nThe GPU quota for hq is 16 units.\n")
    (docs / "other.txt").write_text("nothing here\n")
    svc = service(log, "gpu-dc", docs)
    q = query(fed, fed.admins["hq"])
    for caller in (fed.admins["hq"], fed.nodes["cpu-branch"]):  # a person, or another pool's node
        code, message = refusal(ask, svc, log, caller, q)
        assert code == Code.PERMISSION_DENIED and "only a node of the origin pool hq forwards" in message
    signed = ask(svc, log, fed.nodes["hq"], q)  # the nonce was not used up by the refused callers
    assert bytes(signed.key_id) == fed.nodes["gpu-dc"].key_id
    fcrypto.verify_message(fed.nodes["gpu-dc"].public_key, fed.cluster_id, signed)
    answer = fcrypto.parse(signed, "answer", fcrypto.MAX_ANSWER_BYTES).answer
    assert (answer.pool, answer.node_id, bytes(answer.query_sha256)) == ("gpu-dc", "gpu-dc", fcrypto.query_digest(q))
    assert [(h.name, h.line) for h in answer.hits] == [("quota.md", 2)] and "16 units" in answer.hits[0].snippet
    assert refusal(ask, svc, log, fed.nodes["hq"], q)[0] == Code.UNAUTHENTICATED  # replayed
    bad_header = FakeContext(b"garbage")
    with pytest.raises(Refusal) as info:
        svc.ask(q.SerializeToString(deterministic=True), bad_header)  # type: ignore[arg-type]
    assert info.value.status == grpc.StatusCode.UNAUTHENTICATED
    # a pool without a fan-out folder says so
    code, message = refusal(ask, service(log, "gpu-dc", None), log, fed.nodes["hq"], query(fed, fed.admins["hq"]))
    assert code == Code.FAILED_PRECONDITION and "serves no fan-out" in message


def test_folder_search_is_bounded_and_skips_hidden_links_and_binaries(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "a.txt").write_text("alpha beta\n" * 3)
    (root / "sub" / "b.md").write_text("line one\nBETA and Alpha\n")
    (root / ".hidden" / "c.txt").write_text("alpha beta")
    (root / "bin.dat").write_bytes(b"alpha beta\0\1\2")
    (root / "link.txt").symlink_to(tmp_path / "outside.txt")
    (tmp_path / "outside.txt").write_text("alpha beta secret")
    search = FolderSearch(root)
    out = search.answer(Query("alpha beta", "hq", "a", "standard"))
    assert [(h.name, h.line) for h in out.hits] == [("a.txt", 1), ("sub/b.md", 2)] and not out.truncated
    assert search.answer(Query("b.md", "hq", "a", "standard")).hits[0].snippet == ""  # matched by name
    assert search.answer(Query("alpha", "hq", "a", "standard", max_results=1)).truncated
    assert FolderSearch(root, max_files=1).answer(Query("alpha", "hq", "a", "standard")).truncated
    assert FolderSearch(tmp_path / "missing").answer(Query("alpha", "hq", "a", "standard")).hits == ()
