"""The governance commands without a federation: help, argument checks, output from canned answers, the
offline break-glass signature, and `fedraft recover` on a real state directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fedraft._proto.fedraft.v1 import api_pb2 as api
from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft._proto.fedraft.v1 import governance_pb2 as gpb
from fedraft._proto.fedraft.v1 import placement_pb2 as ppb
from fedraft.cli import approvals_cmd, governance_cmd
from fedraft.crypto.envelopes import build_envelope
from fedraft.crypto.keyfile import write_private_key, write_public_key
from fedraft.crypto.signing import CTX_BREAKGLASS, Identity, Signer, verify
from fedraft.crypto.tls import issue_node_cert, make_ca
from fedraft.domain.genesis import parse_genesis
from fedraft.domain.governance import commands as gc
from fedraft.domain.outcome import Code
from fedraft.domain.roles import Role
from fedraft.errors import CallerError
from fedraft.recovery import verify_recovery
from fedraft.storage.state import StateStore
from tests.cli.test_placement_cli import assert_one_error, run
from tests.consensus.test_placement_apply import Log
from tests.helpers import make_federation

COMMANDS = ["principal", "principal add", "principal revoke", "principal rotate", "principal list", "pool",
            "pool register", "pool retire", "trust", "trust set", "unpair", "policy", "policy set", "policy show",
            "pending", "approve", "veto", "break-glass", "break-glass sign", "break-glass submit", "recover"]
PID = bytes(range(32))


@pytest.fixture(autouse=True)
def _no_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDRAFT_PROFILE", raising=False)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_exits_0_and_shows_an_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run([*command.split(), "--help"], capsys)
    assert code == 0
    assert "example:" in out and f"fedraft {command} " in out


@pytest.mark.parametrize("command", [c for c in COMMANDS if c not in ("principal", "pool", "trust", "policy",
                                                                         "break-glass")])
def test_every_command_offers_json(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert "-o {table,json}" in run([*command.split(), "--help"], capsys)[1]


BAD = [
    (["principal", "add", "--pool", "hq", "--role", "king", "--name", "a", "--public-key", "00" * 32], "--role"),
    (["principal", "add", "--pool", "hq", "--role", "admin", "--name", "a b", "--public-key", "00" * 32],
     "principal name"),
    (["principal", "add", "--pool", "HQ", "--role", "admin", "--name", "a", "--public-key", "00" * 32], "pool 'HQ'"),
    (["principal", "add", "--pool", "hq", "--role", "admin", "--name", "a", "--public-key", "abc"], "64 hex digits"),
    (["principal"], "say add, revoke, rotate or list"),
    (["pool", "register", "edge"], "--agent-key FILE.pub or --agent-public-key HEX"),
    (["pool", "register", "Edge", "--agent-public-key", "00" * 32], "pool 'Edge'"),
    (["trust", "set", "hq", "hq", "max"], "two different pools"),
    (["trust", "set", "hq", "gpu-dc", "none"], "unknown trust level 'none'"),
    (["unpair", "hq", "hq"], "two different pools"),
    (["policy", "set", "heartbeat_ms"], "not KEY=VALUE"),
    (["policy", "set", "nope=1"], "unknown policy key"),
    (["policy", "set", "heartbeat_ms=5"], "heartbeat_ms must be 1000..3600000"),
    (["policy", "set", "drain_ms=1", "drain_ms=2"], "given twice"),
    (["veto", "1a2b3c", "--reason", " "], "--reason"),
    (["break-glass", "sign", "1a2b", "--key", "x.key", "--cluster-id", "00" * 32], "full pending id"),
    (["break-glass", "submit", "1a2b3c", "--sig", "zz"], "128 hex digits"),
    (["break-glass"], "say sign or submit"),
    (["recover", "--genesis", "/nonexistent/genesis.json"], "genesis /nonexistent/genesis.json"),
]


@pytest.mark.parametrize(("argv", "fragment"), BAD, ids=[" ".join(a)[:50] for a, _ in BAD])
def test_bad_arguments_are_one_line_and_exit_2(argv: list[str], fragment: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(argv, capsys)
    assert_one_error(code, err, 2, fragment)
    assert out == ""


@pytest.mark.parametrize("argv", [["policy", "set", "drain_ms=1000"], ["unpair", "hq", "gpu-dc"], ["pending"],
                                  ["approve", "1a2b3c"], ["trust", "set", "hq", "gpu-dc", "MAX"]])
def test_good_arguments_get_as_far_as_the_target(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_error(*run(argv, capsys)[::2], 2, "no target")


def test_a_private_key_file_is_refused_where_a_public_key_goes(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    write_private_key(tmp_path / "alice.key", Identity.generate())
    code, _, err = run(["principal", "add", "--pool", "hq", "--role", "operator", "--name", "alice",
                        "--key-file", str(tmp_path / "alice.key")], capsys)
    assert_one_error(code, err, 2, "is a private key file")


# --- output from canned answers --------------------------------------------------------------------

def _pending_result(state: str, waiting: list[str], **kw: Any) -> pb.Result:
    r = pb.Result(code=Code.OK, index=42, message=kw.pop("message", ""))
    r.governance.CopyFrom(gpb.GovernanceResult(pending_id=PID, state=state, command=kw.pop("command", "set_policy"),
                                               approved=kw.pop("approved", ["hq"]), waiting_for=waiting,
                                               command_digest=b"\xdd" * 32, expires_ms=1_800_003_600_000, **kw))
    return r


def _record(state: str = "pending", approved: tuple[str, ...] = ("hq",)) -> gpb.PendingRecord:
    env = build_envelope(Signer(Identity.generate()), b"c" * 32, gc.SetPolicy((("drain_ms", "30000"),)), now_ms=1)
    return gpb.PendingRecord(pending_id=PID, command="set_policy", command_digest=b"\xdd" * 32,
                             envelope=env.SerializeToString(deterministic=True), proposer_name="hq-admin",
                             proposer_pool="hq", proposed_index=7, expires_ms=1_800_003_600_000, state=state,
                             approvals=[gpb.VoteRecord(pool=p, index=7) for p in approved])


class FakeClient:
    def __init__(self) -> None:
        self.endpoints = ["127.0.0.1:1"]
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.results: dict[str, pb.Result] = {}
        self.collections: dict[str, list[Any]] = {
            "pools": [ppb.PoolRecord(id=p, voter=True) for p in ("cpu-branch", "gpu-dc", "hq")],
            "pending": [_record()], "principals": [], "policy": []}

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        def answer(*args: Any, check: bool = True) -> pb.Result:
            self.calls.append((name, args))
            return self.results.get(name, _pending_result("pending", ["cpu-branch", "gpu-dc"]))
        return answer

    def list(self, collection: str, *, prefix: str = "", stale: bool = False) -> list[Any]:
        return list(self.collections[collection])

    def find_pending(self, prefix: str) -> Any:
        if not PID.hex().startswith(prefix):
            raise CallerError(f"no critical operation has an id starting {prefix}")
        return self.collections["pending"][0]

    def status(self, endpoint: str, **_: Any) -> api.StatusResponse:
        return api.StatusResponse(node_id="hq", effective_time_ms=1_800_000_000_000)


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    client = FakeClient()
    for module in (governance_cmd, approvals_cmd):
        monkeypatch.setattr(module, "connect", lambda _args: client)
    return client


def test_a_proposal_prints_its_pending_id_and_who_must_approve(fake: FakeClient,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    key = Identity.generate().public_key
    code, out, err = run(["principal", "add", "--pool", "hq", "--role", "operator", "--name", "alice",
                          "--public-key", key.hex()], capsys)
    assert code == 0, err
    assert fake.calls == [("add_principal", (key, "hq", Role.OPERATOR, "alice"))]
    assert f"pending as {PID.hex()[:12]}" in out and "waiting for cpu-branch, gpu-dc" in out
    assert f"fedraft approve {PID.hex()[:12]}" in out
    code, out, _ = run(["policy", "set", "missed_heartbeats=2", "drain_ms=30000", "-o", "json"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["pending_id"] == PID.hex() and doc["waiting_for"] == ["cpu-branch", "gpu-dc"]
    assert fake.calls[-1] == ("set_policy", ({"drain_ms": "30000", "missed_heartbeats": "2"},))


def test_pending_lists_approvals_by_pool(fake: FakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["pending"], capsys)
    assert code == 0, err
    assert PID.hex()[:12] in out and "set_policy" in out and "hq-admin@hq" in out
    assert "cpu-branch ·, gpu-dc ·, hq ✓" in out
    code, out, _ = run(["pending", PID.hex()[:6], "-o", "json"], capsys)
    doc = json.loads(out)
    assert doc["arguments"] == {"settings": "drain_ms=30000"} and doc["waiting_for"] == ["cpu-branch", "gpu-dc"]
    code, out, _ = run(["pending", PID.hex()[:6]], capsys)
    assert "settings" in out and "drain_ms=30000" in out and "command digest" in out


def test_approve_names_the_digest_and_reports_the_execution(fake: FakeClient,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    fake.results["approve"] = _pending_result("executed", [], approved=["cpu-branch", "gpu-dc", "hq"],
                                              result_code=Code.OK, message="approved by x; executed at index 42")
    code, out, err = run(["approve", PID.hex()[:6]], capsys)
    assert code == 0, err
    assert fake.calls == [("approve", (PID, b"\xdd" * 32))] and "executed at index 42" in out
    code, _, err = run(["approve", PID.hex()[:6], "--digest", "ab"], capsys)
    assert_one_error(code, err, 2, "command digest")
    fake.results["approve"] = _pending_result("executed", [], result_code=Code.NOT_FOUND)
    assert run(["approve", PID.hex()[:6]], capsys)[0] == 1  # the vote counted, the command failed


def test_refused_votes_are_one_line_with_a_hint(fake: FakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    fake.results["veto"] = pb.Result(code=Code.ABORTED, message="set_policy 000102030405 was vetoed by gpu-dc")
    code, _, err = run(["veto", PID.hex()[:6], "--reason", "no"], capsys)
    assert code == 1 and err.startswith("error: ABORTED: set_policy 000102030405 was vetoed by gpu-dc")
    assert fake.calls == [("veto", (PID, b"\xdd" * 32, "no"))]
    code, _, err = run(["approve", "ffff"], capsys)
    assert_one_error(code, err, 2, "no critical operation")


def test_break_glass_sign_offline_then_submit(tmp_path: Path, fake: FakeClient,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    fed = make_federation()
    genesis = tmp_path / "genesis.json"
    genesis.write_bytes(fed.genesis.raw)
    write_private_key(tmp_path / "bg.key", fed.break_glass)
    code, out, err = run(["break-glass", "sign", PID.hex(), "--key", str(tmp_path / "bg.key"), "--genesis",
                          str(genesis)], capsys)
    assert code == 0, err
    signature = bytes.fromhex(out.strip())
    verify(fed.break_glass.public_key, CTX_BREAKGLASS, fed.cluster_id, PID, signature)
    write_private_key(tmp_path / "other.key", Identity.generate())
    code, _, err = run(["break-glass", "sign", PID.hex(), "--key", str(tmp_path / "other.key"), "--genesis",
                        str(genesis)], capsys)
    assert_one_error(code, err, 2, "not this federation's break-glass key")
    fake.results["break_glass"] = _pending_result("executed", [], break_glass=True, excused=["cpu-branch: down"],
                                                  message="break-glass override by x (excused cpu-branch: down)")
    code, out, err = run(["break-glass", "submit", PID.hex()[:8], "--sig", signature.hex()], capsys)
    assert code == 0, err
    assert fake.calls[-1] == ("break_glass", (PID, signature)) and "excused cpu-branch: down" in out


def test_policy_show_prints_every_setting_with_its_default(fake: FakeClient,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["policy", "show", "-o", "json"], capsys)
    rows = {r["key"]: r for r in json.loads(out)}
    assert code == 0 and rows["heartbeat_ms"] == {"key": "heartbeat_ms", "value": "10000", "default": "10000"}
    assert rows["pending_expiry_ms"]["value"] == "3600000"


# --- recover ---------------------------------------------------------------------------------------

def test_recover_writes_a_new_genesis_naming_the_old_checkpoint(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    fed = make_federation()
    store = StateStore(tmp_path / "hq" / "state", fed.genesis, map_size=64 << 20)
    log = Log(fed, [store])
    log.one(fed.admins["hq"], gc.SetPolicy((("drain_ms", "1000"),)))
    index, head, digest = store.applied_index(), None, store.digest()
    with store.read() as st:
        head = st.chain_head
    store.close()
    old = tmp_path / "genesis.json"
    old.write_bytes(fed.genesis.raw)
    write_private_key(tmp_path / "bg.key", fed.break_glass)
    ca = make_ca("test")
    voters = []
    for node in ("hq", "dc2@gpu-dc", "br2@cpu-branch"):
        node_id = node.split("@")[0]
        key = Identity.generate()
        write_public_key(tmp_path / f"{node_id}.pub", key.public_key)
        (tmp_path / f"{node_id}.crt").write_bytes(issue_node_cert(ca, node_id, ["127.0.0.1"]).cert_pem)
        voters += ["--voter", f"{node}={tmp_path / f'{node_id}.pub'},{tmp_path / f'{node_id}.crt'}"]
    out_file = tmp_path / "new" / "genesis.json"
    code, out, err = run(["recover", "--genesis", str(old), "--break-glass-key", str(tmp_path / "bg.key"),
                          "--state", str(tmp_path / "hq" / "state"), *voters, "--out", str(out_file), "-o", "json"],
                         capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["index"], doc["chain_head"], doc["state_digest"]) == (index, head.hex(), digest.hex())
    new = parse_genesis(out_file.read_bytes())
    assert [v.node_id for v in new.voters] == ["hq", "dc2", "br2"]
    assert sorted(a.pool for a in new.admins) == ["cpu-branch", "gpu-dc", "hq"]  # the state's admins are kept
    assert new.cluster_id != fed.cluster_id
    checkpoint = verify_recovery(out_file.read_bytes(), fed.genesis)
    assert (checkpoint.cluster_id, checkpoint.index) == (fed.cluster_id, index)
    code, out, err = run(["recover", "--genesis", str(old), "--verify", str(out_file)], capsys)
    assert code == 0 and f"at index {index}" in out, err
    tampered = out_file.read_bytes().replace(f'"index": {index}'.encode(), f'"index": {index + 1}'.encode())
    (tmp_path / "bad.json").write_bytes(tampered)
    code, _, err = run(["recover", "--genesis", str(old), "--verify", str(tmp_path / "bad.json")], capsys)
    assert_one_error(code, err, 2, "signature does not verify")


def test_recover_refuses_a_wrong_break_glass_key_and_another_federations_state(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fed, other = make_federation(), make_federation()
    StateStore(tmp_path / "state", other.genesis, map_size=64 << 20).close()
    (tmp_path / "genesis.json").write_bytes(fed.genesis.raw)
    write_private_key(tmp_path / "bg.key", fed.break_glass)
    key = Identity.generate()
    write_public_key(tmp_path / "n.pub", key.public_key)
    (tmp_path / "n.crt").write_bytes(issue_node_cert(make_ca("t"), "n", ["127.0.0.1"]).cert_pem)
    base = ["recover", "--genesis", str(tmp_path / "genesis.json"), "--voter",
            f"n@hq={tmp_path / 'n.pub'},{tmp_path / 'n.crt'}", "--out", str(tmp_path / "new.json")]
    code, _, err = run([*base, "--break-glass-key", str(tmp_path / "bg.key"), "--state", str(tmp_path / "state")],
                       capsys)
    assert_one_error(code, err, 2, "another federation")
    code, _, err = run([*base, "--break-glass-key", str(tmp_path / "bg.key"), "--state", str(tmp_path / "none")],
                       capsys)
    assert_one_error(code, err, 2, "no state database here")
