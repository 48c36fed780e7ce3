"""Fuzz the signed-message decoders: envelopes, log entries at apply, request signatures, fan-out
messages and sealed memory boxes.

- `envelopes.parse_signed` (API Propose, fan-out): `pb.Signed` or `DecodeError`.
- `envelopes.parse_envelope` + `wire.commands.command_from_pb` (an envelope's signed body): a `Command` or
  `DecodeError`.
- `validation.check_envelope` (every envelope, at the leader and at apply): `Checked` or `Refused`, never
  raises.
- `Applier.apply` (a committed log entry (from the leader)): one `Result` per envelope, never raises.
- `RequestVerifier.verify` (the `fedraft-auth-bin` header of every API call): a `Caller` or `AuthError`.
- `fanout.parse` (a fan-out query or answer): `FanoutMessage` or `DecodeError`.
- `sealing.open_box` (a sealed memory value): the value or `OpenError`.

Beyond "no other exception": a mutated message never verifies as the genuine one unless it carries
the genuine fields, and a mutated entry changes no registry key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf.message import DecodeError as ProtoDecodeError

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft._proto.fedraft.v1 import fanout_pb2 as fpb
from fedraft.consensus.applier import Applier
from fedraft.consensus.handlers import static_problem
from fedraft.consensus.validation import Checked, Refused, check_envelope
from fedraft.crypto import fanout, sealing
from fedraft.crypto.envelopes import MAX_ENVELOPE_BYTES, build_envelope, parse_envelope, parse_signed
from fedraft.crypto.request_auth import sign_request
from fedraft.crypto.signing import CTX_ENVELOPE, Signer
from fedraft.domain import commands as c
from fedraft.domain.outcome import Code
from fedraft.errors import DecodeError
from fedraft.service.auth import AuthError, RequestVerifier
from fedraft.storage.state import StateStore
from fedraft.wire.commands import command_from_pb
from tests.helpers import make_federation, sign_entry
from tests.security.fuzzing import fuzz_pair, hostile, within_memory

T0 = 1_800_000_000_000
FED = make_federation()
CID = FED.cluster_id
ADMIN = Signer(FED.admins["hq"])


def _every_command_shape() -> list[bytes]:
    """An envelope body per command kind (fields empty): seeds that reach every command decoder."""
    bodies = []
    for field in pb.Envelope.DESCRIPTOR.oneofs_by_name["command"].fields:
        inner = field.message_type.oneofs_by_name.get("command")
        for sub in inner.fields if inner is not None else [None]:
            env = pb.Envelope(cluster_id=CID, request_id=b"r" * 16, issued_at_ms=T0, expires_at_ms=T0 + 60_000)
            target = getattr(env, field.name)
            target.SetInParent()
            if sub is not None:
                getattr(target, sub.name).SetInParent()
            bodies.append(env.SerializeToString(deterministic=True))
    return bodies


GENUINE = [build_envelope(ADMIN, CID, cmd, now_ms=T0, request_id=bytes([i]) * 16) for i, cmd in enumerate([
    c.Put("/routes/a", b"value"), c.Delete("/routes/a", 3), c.CompareAndSet("/settings/b", b"x" * 40, 2)])]
BODIES = [bytes(s.body) for s in GENUINE] + _every_command_shape()
SIGNED = [s.SerializeToString(deterministic=True) for s in GENUINE]


def check_signed(raw: bytes) -> None:
    try:
        signed = within_memory(256 * 1024 + 8 * len(raw), lambda: parse_signed(raw, MAX_ENVELOPE_BYTES))
    except DecodeError:
        return
    assert len(signed.sig) == 64 and len(signed.key_id) == 16


test_fuzz_signed, test_fuzz_signed_nightly = fuzz_pair(hostile(SIGNED), check_signed)


def check_envelope_body(body: bytes) -> None:
    try:
        env = parse_envelope(body)
        command = command_from_pb(env)
    except DecodeError:
        return
    assert isinstance(command, c.Command)
    problem = static_problem(command)
    assert problem is None or isinstance(problem, str)


test_fuzz_envelope_body, test_fuzz_envelope_body_nightly = fuzz_pair(hostile(BODIES), check_envelope_body, ci=400)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StateStore]:
    s = StateStore(tmp_path_factory.mktemp("fuzz-state"), FED.genesis, map_size=256 << 20)
    yield s
    s.close()


def check_envelope_at_the_leader(store: StateStore, body: bytes) -> None:
    # An authenticated but hostile client: whatever it signs is refused as a value or accepted as valid.
    signed = pb.Signed(body=body, sig=ADMIN.sign(CTX_ENVELOPE, CID, body), key_id=ADMIN.key_id)
    with store.read() as st:
        outcome = check_envelope(st, signed, CID, T0 + 1000, max_validity_ms=300_000)
    assert isinstance(outcome, Checked | Refused)
    if isinstance(outcome, Refused):
        assert outcome.message and outcome.code != Code.OK


test_fuzz_envelope_at_the_leader, test_fuzz_envelope_at_the_leader_nightly = fuzz_pair(
    hostile(BODIES), check_envelope_at_the_leader)


def check_signed_envelope_bytes(store: StateStore, raw: bytes) -> None:
    # Bytes not re-signed: only a message carrying a genuine (body, sig, key id) passes.
    signed = pb.Signed()
    try:
        signed.ParseFromString(raw)
    except ProtoDecodeError:
        return
    with store.read() as st:
        outcome = check_envelope(st, signed, CID, T0 + 1000, max_validity_ms=300_000)
    if isinstance(outcome, Checked):
        assert any((g.body, g.sig, g.key_id) == (signed.body, signed.sig, signed.key_id) for g in GENUINE)


test_fuzz_signed_envelope, test_fuzz_signed_envelope_nightly = fuzz_pair(hostile(SIGNED), check_signed_envelope_bytes)


# ----- entries at apply -----

GENUINE_ENTRY = sign_entry(FED, "hq", 1, [GENUINE[0]], T0)
KEY = "/routes/a"


def _is_genuine(raw: bytes) -> bool:
    mine, genuine = pb.Signed(), pb.Signed.FromString(GENUINE_ENTRY)
    try:
        mine.ParseFromString(raw)
    except ProtoDecodeError:
        return False
    return (mine.body, mine.sig, mine.key_id) == (genuine.body, genuine.sig, genuine.key_id)


@pytest.fixture(scope="module")
def apply_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StateStore]:
    s = StateStore(tmp_path_factory.mktemp("fuzz-apply"), FED.genesis, map_size=256 << 20)
    yield s
    s.close()


def check_entry(apply_store: StateStore, raw: bytes) -> None:
    with apply_store.read() as st:
        index = st.applied_index + 1
        before = st.registry_get(KEY)
    applied = Applier(apply_store).apply(index, 1, raw)
    apply_store.commit()
    assert applied is not None
    with apply_store.read() as st:
        assert st.applied_index == index
        after = st.registry_get(KEY)
    if not _is_genuine(raw):
        assert after == before, "a mutated entry changed the registry"
        assert all(r.code != Code.OK for r in applied.results)


test_fuzz_entry, test_fuzz_entry_nightly = fuzz_pair(hostile([GENUINE_ENTRY]), check_entry, ci=100, nightly=2000)


# ----- request signatures -----

REQUEST_BODY = b"\x0a\x03abc"


def check_request_header(store: StateStore, header: bytes) -> None:
    verifier = RequestVerifier(store, CID)
    genuine = sign_request(ADMIN, CID, "Get", REQUEST_BODY, now_ms=T0)
    for candidate in (header, genuine):
        try:
            caller = verifier.verify("Get", REQUEST_BODY, candidate, now_ms=T0 + 1)
        except AuthError:
            continue
        assert caller.key_id == ADMIN.key_id


def _headers() -> list[bytes]:
    return [sign_request(ADMIN, CID, "Get", REQUEST_BODY, now_ms=T0),
            sign_request(ADMIN, CID, "Propose", b"", now_ms=T0)]


test_fuzz_request_header, test_fuzz_request_header_nightly = fuzz_pair(hostile(_headers()), check_request_header)


# ----- fan-out messages and sealed boxes -----

QUERY = fanout.build_query(ADMIN, CID, origin_pool="hq", author="hq-admin", text="gpus?", level="summary",
                           now_ms=T0, nonce=b"n" * 16)
ANSWER = fanout.sign_message(ADMIN, CID, fpb.FanoutMessage(answer=fpb.FanoutAnswer(
    query_sha256=hashlib.sha256(bytes(QUERY.body)).digest())))


def check_fanout(raw: bytes) -> None:
    signed = pb.Signed()
    try:
        signed.ParseFromString(raw)
    except ProtoDecodeError:
        return
    for kind, limit in (("query", fanout.MAX_QUERY_BYTES), ("answer", fanout.MAX_ANSWER_BYTES)):
        try:
            message = fanout.parse(signed, kind, limit)
        except DecodeError:
            continue
        assert message.WhichOneof("kind") == kind


test_fuzz_fanout, test_fuzz_fanout_nightly = fuzz_pair(
    hostile([QUERY.SerializeToString(), ANSWER.SerializeToString()]), check_fanout)

POOL_KEY = FED.nodes["hq"]
BOX = sealing.seal(POOL_KEY.public_key, "/memories/m", "hq", b"secret value")


def check_box(box: bytes) -> None:
    try:
        value = sealing.open_box(POOL_KEY, box, "/memories/m", "hq")
    except sealing.OpenError:
        return
    assert value == b"secret value" and box == BOX


test_fuzz_sealed_box, test_fuzz_sealed_box_nightly = fuzz_pair(hostile([BOX], protobuf=False), check_box)


def test_a_valid_entry_still_applies_after_the_fuzzing(apply_store: StateStore, tmp_path: Path) -> None:
    fresh = StateStore(tmp_path / "fresh", FED.genesis, map_size=64 << 20)
    try:
        entry = sign_entry(FED, "hq", 1, [build_envelope(ADMIN, CID, c.Put("/routes/z", b"1"), now_ms=T0)], T0)
        for s in (apply_store, fresh):
            with s.read() as st:
                index = st.applied_index + 1
            applied = Applier(s).apply(index, 1, entry)
            s.commit()
            assert applied is not None and [r.code for r in applied.results] == [Code.OK]
    finally:
        fresh.close()
