"""The placement and pairing commands without a federation: help, argument checks, and output from
canned answers (a fake client stands in for the federation)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from fedraft._proto.fedraft.v1 import api_pb2 as api
from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft._proto.fedraft.v1 import governance_pb2 as gpb
from fedraft._proto.fedraft.v1 import placement_pb2 as ppb
from fedraft.cli import pair_cmd, pool_cmd, workload_cmd
from fedraft.cli.main import main
from fedraft.domain.outcome import Code
from fedraft.domain.placement.model import Trust
from fedraft.domain.scheduler.explain import Explanation, ScoredPool, encode_explanation
from fedraft.domain.scheduler.feasible import Refused

COMMANDS = ["submit", "cancel", "workloads", "explain", "migrate", "pools", "drain", "cordon", "uncordon",
            "agent", "pair", "pair offer", "pair accept", "pairings"]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: --help, or a missing argument
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_error(code: int, err: str, expected: int, fragment: str) -> None:
    assert code == expected, err
    lines = err.splitlines()
    assert "Traceback" not in err
    assert len([line for line in lines if line.startswith("error:")]) == 1, err
    assert all(line.startswith(("error:", "hint:")) for line in lines), err
    assert fragment in lines[0], err


@pytest.fixture(autouse=True)
def _no_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDRAFT_PROFILE", raising=False)


# --- help ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", COMMANDS)
def test_help_exits_0_and_shows_an_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run([*command.split(), "--help"], capsys)
    assert code == 0
    assert "example:" in out and f"fedraft {command} " in out


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "pair"])
def test_every_command_offers_json_and_a_target(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run([*command.split(), "--help"], capsys)
    assert "-o {table,json}" in out and "--profile FILE" in out


# --- argument checks: one line, exit 2, before anything is signed or sent ---------------------------

BAD = [
    (["submit", "w1", "--gpus", "-1"], "--gpus -1 is out of range"),
    (["submit", "w1", "--gpus", "65"], "--gpus 65 is out of range"),
    (["submit", "w1", "--gpus", "two"], "--gpus: 'two' is not a whole number"),
    (["submit", "w1", "--gpus", "1", "--min-trust", "bogus"], "unknown trust level 'bogus'"),
    (["submit", "w1", "--gpus", "1", "--min-trust", "none"], "unknown trust level 'none'"),
    (["submit", "Bad_Id!", "--gpus", "1"], "workload id 'Bad_Id!'"),
    (["submit", "w1"], "at least one GPU or some CPU"),
    (["submit", "w1", "--gpus", "0", "--gpu-mem", "1000", "--cpu", "100"], "gpu memory given"),
    (["submit", "w1", "--gpus", "1", "--ram", "-5"], "--ram -5 is out of range"),
    (["submit", "w1", "--gpus", "1", "--label", "Fast"], "--label: label 'Fast'"),
    (["submit", "w1", "--gpus", "1", "--exclude", "a,B"], "--exclude: pool 'B'"),
    (["submit", "w1", "--gpus", "1", "--priority", "1.5"], "--priority: '1.5'"),
    (["submit", "w1", "--gpus", "1", "--max-latency", "-1"], "--max-latency -1"),
    (["workloads", "--phase", "bogus"], "unknown phase 'bogus'"),
    (["workloads", "--pool", "GPU"], "pool 'GPU'"),
    (["cancel", "a b"], "workload id 'a b'"),
    (["explain", "_x"], "workload id '_x'"),
    (["migrate", "w1", "--to", "Nope"], "--to: pool 'Nope'"),
    (["cordon", "UPPER"], "pool 'UPPER'"),
    (["pair", "offer", "gpu-dc", "--trust", "total"], "unknown trust level 'total'"),
    (["pair", "accept", "x" * 64], "pool 'xxxx"),
    (["pair"], "say offer or accept"),
    (["agent", "--pool", "edge-1", "--inventory", "magic"], "--inventory: unknown kind 'magic'"),
    (["agent", "--pool", "edge-1", "--interval", "0"], "--interval: '0'"),
    (["agent", "--pool", "Edge"], "--pool: pool 'Edge'"),
]


@pytest.mark.parametrize(("argv", "fragment"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_arguments_are_one_line_and_exit_2(argv: list[str], fragment: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(argv, capsys)
    assert_one_error(code, err, 2, fragment)
    assert out == ""


@pytest.mark.parametrize("argv", [["submit"], ["cancel"], ["agent"], ["pair", "offer", "gpu-dc"]])
def test_missing_required_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(argv, capsys)
    assert code == 2 and "required" in err


@pytest.mark.parametrize("argv", [
    ["submit", "w1", "--gpus", "2"],                       # no --gpu-mem: any GPU memory
    ["submit", "w1", "--gpus", "0", "--cpu", "1000"],      # CPU only
    ["workloads", "--phase", "PENDING"],
    ["pools"],
])
def test_good_arguments_get_as_far_as_the_target(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_error(*run(argv, capsys)[::2], 2, "no target")


# --- output from canned answers --------------------------------------------------------------------

class FakeClient:
    """Answers like the federation would; records what was asked."""

    def __init__(self) -> None:
        self.endpoints = ["127.0.0.1:1"]
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.results: dict[str, pb.Result] = {}
        self.collections: dict[str, list[Any]] = {"pools": [], "workloads": [], "pairings": []}
        self.effective_ms = 0

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def _answer(self, name: str, *args: Any) -> pb.Result:
        self.calls.append((name, args))
        return self.results.get(name, pb.Result(code=Code.OK, index=42))

    def submit(self, workload_id: str, spec: Any, *, check: bool = True) -> pb.Result:
        return self._answer("submit", workload_id, spec)

    def cancel(self, workload_id: str, *, check: bool = True) -> pb.Result:
        return self._answer("cancel", workload_id)

    def migrate(self, workload_id: str, to_pool: str = "", *, check: bool = True) -> pb.Result:
        return self._answer("migrate", workload_id, to_pool)

    def pool_control(self, pool: str, action: str, *, check: bool = True) -> pb.Result:
        return self._answer("pool_control", pool, action)

    def pair_offer(self, to_pool: str, trust: Trust, *, check: bool = True) -> pb.Result:
        return self._answer("pair_offer", to_pool, trust)

    def pair_accept(self, from_pool: str, *, check: bool = True) -> pb.Result:
        return self._answer("pair_accept", from_pool)

    def list(self, collection: str, *, prefix: str = "", stale: bool = False) -> list[Any]:
        return [item for item in self.collections[collection] if getattr(item, "id", prefix).startswith(prefix)]

    def status(self, endpoint: str, **_: Any) -> api.StatusResponse:
        return api.StatusResponse(node_id="hq", effective_time_ms=self.effective_ms)


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClient]:
    client = FakeClient()
    for module in (workload_cmd, pool_cmd, pair_cmd):
        monkeypatch.setattr(module, "connect", lambda _args: client)
    yield client


def _placed(workload_id: str, pool: str, worker: str, gpus: list[str], phase: str = "placed") -> pb.Result:
    result = pb.Result(code=Code.OK, index=42)
    result.placement.CopyFrom(ppb.PlacementResult(workload_id=workload_id, pool=pool, worker=worker, gpus=gpus,
                                                  phase=phase))
    return result


def _workload(workload_id: str, phase: str, pool: str = "", gpus: int = 0, **kw: Any) -> ppb.WorkloadRecord:
    record = ppb.WorkloadRecord(id=workload_id, phase=phase, submitter_pool="hq",
                                spec=ppb.WorkloadSpec(gpus=gpus, cpu_millis=kw.pop("cpu", 0), min_trust="standard"),
                                **kw)
    if pool:
        record.placement.CopyFrom(ppb.PlacementRecord(pool=pool, worker=f"{pool}-0",
                                                      gpus=[f"GPU-{pool}-{i}" for i in range(gpus)]))
    return record


def test_submit_sends_the_spec_and_prints_the_placement(fake: FakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    fake.results["submit"] = _placed("train", "gpu-dc", "dc-0", ["GPU-dc-0-0", "GPU-dc-0-1"])
    code, out, err = run(["submit", "train", "--gpus", "2", "--gpu-mem", "80000", "--label", "b,a", "--label", "a",
                          "--exclude", "cpu-branch", "--min-trust", "HIGH", "--priority", "-3"], capsys)
    assert code == 0, err
    (name, (workload_id, spec)), = fake.calls
    assert (name, workload_id) == ("submit", "train")
    assert (spec.gpus, spec.gpu_memory_mb, spec.labels, spec.exclude_pools, spec.min_trust, spec.priority) == \
        (2, 80000, ("a", "b"), ("cpu-branch",), Trust.HIGH, -3)
    assert "train placed on pool gpu-dc, worker dc-0, GPUs GPU-dc-0-0, GPU-dc-0-1" in out


def test_submit_pending_says_why(fake: FakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    result = _placed("big", "", "", [], phase="pending")
    result.message = "no pool fits (fedraft explain shows why)"
    fake.results["submit"] = result
    explanation = Explanation(note="no pool fits", refused=(Refused("state", 1, (("gpu-dc", "cordoned"),)),
                                                            Refused("gpus", 1, (("hq", "no worker has 8"),))))
    fake.collections["workloads"] = [_workload("big", "pending", gpus=8, explanation=encode_explanation(explanation))]
    code, out, _ = run(["submit", "big", "--gpus", "8"], capsys)
    assert code == 0
    assert "big is pending: no pool fits" in out
    assert "refused by state: 1 — gpu-dc: cordoned" in out and "hq: no worker has 8" in out
    code, out, _ = run(["submit", "big", "--gpus", "8", "-o", "json"], capsys)
    doc = json.loads(out)
    assert (doc["phase"], doc["pool"], doc["reason"]) == ("pending", "", "no pool fits (fedraft explain shows why)")


def test_a_refused_result_is_one_line_exit_1(fake: FakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    fake.results["submit"] = pb.Result(code=Code.ALREADY_EXISTS, message="workload train exists")
    code, out, err = run(["submit", "train", "--gpus", "1"], capsys)
    assert_one_error(code, err, 1, "ALREADY_EXISTS: workload train exists")
    assert "hint: choose another id" in err and out == ""


@pytest.mark.parametrize(("argv", "call"), [
    (["cancel", "ghost"], "cancel"),
    (["migrate", "ghost", "--to", "hq"], "migrate"),
    (["drain", "nowhere"], "pool_control"),
    (["pair", "offer", "nowhere", "--trust", "high"], "pair_offer"),
])
def test_not_found_exits_4(argv: list[str], call: str, fake: FakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    fake.results[call] = pb.Result(code=Code.NOT_FOUND, message="it does not exist")
    assert_one_error(*run(argv, capsys)[::2], 4, "NOT_FOUND: it does not exist")


def test_explain_of_an_unknown_workload_exits_4(fake: FakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_error(*run(["explain", "ghost"], capsys)[::2], 4, "workload ghost not found")


def test_explain_renders_scores_refusals_and_moves(fake: FakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    e = Explanation(chosen="gpu-dc", worker="dc-1", gpus=("GPU-dc-1-0",), note="placed on gpu-dc",
                    weights=(4, 3, 3, 2, 2, 1), scored=(ScoredPool("gpu-dc", 900, (90, 50, 0, 100, 100, 80)),),
                    refused=(Refused("trust", 1, (("cpu-branch", "not paired with hq"),)),))
    record = _workload("job", "running", pool="gpu-dc", gpus=1, home_pool="gpu-dc", explanation=encode_explanation(e))
    record.moves.add(at_ms=1_700_000_000_000, index=7, from_pool="hq", to_pool="gpu-dc", reason="migrate")
    fake.collections["workloads"] = [_workload("jo", "pending", cpu=1), record]
    code, out, err = run(["explain", "job"], capsys)
    assert code == 0, err
    assert "workload job: running on gpu-dc" in out
    assert "gpu-dc" in out and "900" in out and " *" in out
    assert "refused by trust: 1 — cpu-branch: not paired with hq" in out
    assert "index 7: hq -> gpu-dc (migrate)" in out
    code, out, _ = run(["explain", "job", "-o", "json"], capsys)
    doc = json.loads(out)
    assert doc["explanation"]["scored"][0]["parts"]["free"] == 90
    assert doc["explanation"]["refused"][0]["examples"] == [{"pool": "cpu-branch", "reason": "not paired with hq"}]
    assert doc["moves"][0]["reason"] == "migrate"


def test_workloads_filters_and_table(fake: FakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    fake.collections["workloads"] = [_workload("a", "running", pool="hq", gpus=1),
                                     _workload("b", "pending", gpus=8, reason="no pool fits"),
                                     _workload("c", "placed", pool="gpu-dc", gpus=8)]
    code, out, _ = run(["workloads"], capsys)
    assert code == 0
    header = out.splitlines()[1].split()
    assert header == ["ID", "PHASE", "POOL", "WORKER", "GPUS", "HOME", "SUBMITTER", "PRIORITY", "MOVES", "REASON"]
    assert "\x1b[" not in out  # piped: plain text
    _, out, _ = run(["workloads", "--phase", "pending", "-o", "json"], capsys)
    assert [w["id"] for w in json.loads(out)] == ["b"]
    _, out, _ = run(["workloads", "--pool", "gpu-dc", "-o", "json"], capsys)
    assert [(w["id"], w["gpu_ids"][:1]) for w in json.loads(out)] == [("c", ["GPU-gpu-dc-0"])]


def test_pools_counts_booked_gpus_load_and_heartbeat_age(fake: FakeClient,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    gpus = [ppb.GpuUnit(uuid=f"GPU-{i}", memory_mb=81920, healthy=i != 3) for i in range(4)]
    fake.collections["pools"] = [
        ppb.PoolRecord(id="gpu-dc", health="up", voter=True, region="dc-east", tier="gpu", last_heartbeat_ms=95_000,
                       workers=[ppb.WorkerInfo(name="dc-0", cpu_millis=1000, gpus=gpus)], cordoned=True),
        ppb.PoolRecord(id="cpu-branch", health="down", workers=[ppb.WorkerInfo(name="b-0", cpu_millis=4000)]),
    ]
    fake.collections["workloads"] = [_workload("a", "running", pool="gpu-dc", gpus=2),
                                     _workload("b", "cancelled", pool="gpu-dc", gpus=1),
                                     _workload("c", "placed", pool="cpu-branch", cpu=1000)]
    fake.effective_ms = 100_000
    code, out, _ = run(["pools", "-o", "json"], capsys)
    assert code == 0
    dc, branch = json.loads(out)
    assert (dc["gpus_healthy"], dc["gpus_total"], dc["gpus_booked"], dc["load_pct"]) == (3, 4, 2, 67)
    assert (dc["cordoned"], dc["draining"], dc["heartbeat_age"]) == (True, False, "5s")
    assert (branch["health"], branch["gpus_booked"], branch["load_pct"], branch["heartbeat_age"]) == \
        ("down", 0, 25, "")
    _, out, _ = run(["pools"], capsys)
    assert "3/4" in out and "LOAD %" in out


def test_pool_control_and_pairing(fake: FakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["cordon", "gpu-dc"], capsys)[0] == 0
    offered = pb.Result(code=Code.OK, index=9)
    offered.governance.CopyFrom(gpb.GovernanceResult(state="offered"))
    fake.results["pair_offer"] = offered
    code, out, _ = run(["pair", "offer", "gpu-dc", "--trust", "high", "-o", "json"], capsys)
    assert code == 0 and json.loads(out) == {"ok": True, "index": 9, "to_pool": "gpu-dc", "trust": "high",
                                             "state": "offered"}
    assert fake.calls == [("pool_control", ("gpu-dc", "cordon")), ("pair_offer", ("gpu-dc", Trust.HIGH))]
    fake.results["pair_accept"] = pb.Result(code=Code.FAILED_PRECONDITION, message="no standing offer from hq")
    code, _, err = run(["pair", "accept", "hq"], capsys)
    assert_one_error(code, err, 1, "no standing offer")
    fake.collections["pairings"] = [gpb.PairingRecord(pool_a="gpu-dc", pool_b="hq", trust="high", offered_by="hq",
                                                      active=True)]
    _, out, _ = run(["pairings", "-o", "json"], capsys)
    assert json.loads(out) == [{"pool_a": "gpu-dc", "pool_b": "hq", "trust": "high", "state": "active",
                                "offered_by": "hq"}]
