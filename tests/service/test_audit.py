"""The node's pool-local recorder: audit records from applied results, refusals, snapshots, the crash-gap
backfill, level-triggered incidents, and the alert hooks (SPEC §5, §8, D14)."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedraft._proto.fedraft.v1 import entries_pb2 as pb
from fedraft._proto.fedraft.v1 import governance_pb2 as gpb
from fedraft.consensus.applier import AppliedEntry, Applier, EnvelopeSummary
from fedraft.crypto.envelopes import build_envelope
from fedraft.crypto.signing import Identity, Signer, key_id_of
from fedraft.domain import commands as c
from fedraft.domain.placement.model import Health, PoolHealth
from fedraft.service import audit as audit_mod
from fedraft.service.alerts import AlertDispatcher, AlertTargets
from fedraft.service.audit import LocalRecorder, RefusedRequest
from fedraft.storage import placement_schema
from fedraft.storage.local import AUDIT, INCIDENTS, LocalStore
from fedraft.storage.state import StateStore
from tests.helpers import Fed, make_federation, sign_entry

T0 = 1_800_000_000_000


@pytest.fixture()
def fed() -> Fed:
    return make_federation()


@pytest.fixture()
def state(tmp_path: Path, fed: Fed) -> Iterator[StateStore]:
    s = StateStore(tmp_path / "state", fed.genesis, map_size=64 << 20)
    yield s
    s.close()


@pytest.fixture()
def local(tmp_path: Path) -> Iterator[LocalStore]:
    s = LocalStore(tmp_path / "local", map_size=16 << 20)
    yield s
    s.close()


def _recorder(local: LocalStore, state: StateStore, **kw: Any) -> LocalRecorder:
    r = LocalRecorder(local, state, "hq", **kw)
    r.start()
    return r


def _env(fed: Fed, who: Identity, command: c.Command) -> pb.Signed:
    return build_envelope(Signer(who), fed.cluster_id, command, now_ms=T0)


def _apply(state: StateStore, index: int, data: bytes) -> AppliedEntry | None:
    applied = Applier(state).apply(index, 1, data)
    state.commit()
    return applied


def _entry(fed: Fed, *envelopes: pb.Signed) -> bytes:
    return sign_entry(fed, "hq", 1, list(envelopes), T0)


def _applied_view(local: LocalStore) -> list[tuple[Any, ...]]:
    return [(r["index"], r["ordinal"], r["command"], r["code_name"], (r["author"] or {}).get("name"))
            for r in local.records(AUDIT) if r["kind"] == "applied"]


def test_applied_envelopes_are_journaled_once_with_command_and_author(
        fed: Fed, state: StateStore, local: LocalStore) -> None:
    rec = _recorder(local, state)
    stranger = Identity.generate()
    data = _entry(fed, _env(fed, fed.admins["hq"], c.Put("/routes/a", b"1")),
                  _env(fed, fed.admins["gpu-dc"], c.Put("/secrets/x", b"1")),
                  _env(fed, stranger, c.Delete("/routes/a")),
                  _env(fed, fed.admins["hq"], c.Delete("/routes/a")))
    applied = _apply(state, 2, data)
    assert applied is not None
    # an unknown key's envelope is not read at all: its claimed command stays unnamed
    assert [s.command for s in applied.envelopes if s] == ["put", "put", "", "delete"]
    rec.on_applied(applied)
    assert rec.flush()
    assert _applied_view(local) == [(2, 0, "put", "OK", "hq-admin"), (2, 1, "put", "INVALID_ARGUMENT", "gpu-dc-admin"),
                                    (2, 2, "", "UNAUTHENTICATED", None), (2, 3, "delete", "OK", "hq-admin")]
    first = local.records(AUDIT)[0]
    assert first["key_id"] == key_id_of(fed.admins["hq"].public_key).hex()
    assert first["author"] == {"name": "hq-admin", "pool": "hq", "role": "admin"} and first["node"] == "hq"
    assert local.audited_index() == 2
    # the same entry again (a replay after a restart whose state lost its last commit): nothing new
    rec.on_applied(applied)
    assert rec.flush()
    assert local.count(AUDIT) == 4
    rec.stop()
    assert local.verify(AUDIT).ok


def test_refused_requests_are_journaled_with_their_author(fed: Fed, state: StateStore, local: LocalStore) -> None:
    rec = _recorder(local, state)
    hq = key_id_of(fed.admins["hq"].public_key)
    rec.on_refused(RefusedRequest("Propose", "INVALID_ARGUMENT", "keys live under /routes/ or /settings/", hq,
                                  "ipv4:127.0.0.1:5000", at_ms=T0))
    rec.on_refused(RefusedRequest("Get", "UNAUTHENTICATED", "missing fedraft-auth-bin metadata", at_ms=T0 + 1))
    rec.on_refused(RefusedRequest("List", "UNAUTHENTICATED", "request signature does not verify", hq, at_ms=T0 + 2))
    assert rec.flush()
    rec.stop()
    r1, r2, r3 = local.records(AUDIT)
    assert (r1["kind"], r1["method"], r1["code_name"], r1["author"]["name"], r1["at_ms"]) == \
        ("refused", "Propose", "INVALID_ARGUMENT", "hq-admin", T0)
    assert (r2["method"], r2["author"], r2["key_id"]) == ("Get", None, "")
    # a signature that does not verify proves nobody: the key is only claimed
    assert (r3["author"], r3["claimed_author"]["name"]) == (None, "hq-admin")
    assert local.audited_index() == 0  # refusals are not applied entries


def test_refusals_over_the_rate_limit_are_counted(fed: Fed, state: StateStore, local: LocalStore,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_mod, "REFUSED_PER_SECOND", 3)
    rec = _recorder(local, state)
    second = int(time.time()) * 1000
    for i in range(10):
        rec.on_refused(RefusedRequest("Get", "UNAUTHENTICATED", "no", at_ms=second + i))  # all in one second
    rec.on_refused(RefusedRequest("Get", "UNAUTHENTICATED", "no", at_ms=second + 1000))
    assert rec.flush()
    _wait(lambda: sum(r.get("suppressed_before", 0) + r.get("count", 0) for r in local.records(AUDIT)) == 7)
    rec.stop()
    records = local.records(AUDIT)
    # 3 recorded, then 7 counted: in the next refusal's record, or in a record of their own once the second is over
    assert [r["kind"] for r in records if r["kind"] == "refused"] == ["refused"] * 4


def test_snapshot_install_records_the_range(fed: Fed, state: StateStore, local: LocalStore) -> None:
    rec = _recorder(local, state)
    rec.on_snapshot(3, 40)
    rec.on_snapshot(3, 40)
    rec.on_snapshot(41, 40)  # nothing arrived
    assert rec.flush()
    rec.stop()
    [snap] = local.records(AUDIT)
    assert (snap["kind"], snap["first"], snap["last"]) == ("snapshot", 3, 40)
    assert "3..40 arrived by snapshot" in snap["message"]
    assert local.audited_index() == 40


def test_backfill_recovers_entries_applied_before_a_crash(fed: Fed, state: StateStore, local: LocalStore) -> None:
    # applied and committed, but the node died before its audit journal got them
    for index, path in ((2, "/routes/a"), (3, "/bad/b")):
        assert _apply(state, index, _entry(fed, _env(fed, fed.admins["hq"], c.Put(path, b"v")))) is not None
    rec = _recorder(local, state)
    assert rec.flush()
    rec.stop()
    assert _applied_view(local) == [(2, 0, "put", "OK", "hq-admin"), (3, 0, "put", "INVALID_ARGUMENT", "hq-admin")]
    assert all(r["recovered"] for r in local.records(AUDIT))
    assert local.audited_index() == 3
    # the live listener then brings the same entries: nothing is written twice
    rec = _recorder(local, state)
    rec.on_applied(AppliedEntry(3, [pb.Result(code=3, message="x", index=3)], [None], [None]))
    assert rec.flush()
    rec.stop()
    assert local.count(AUDIT) == 2 and local.verify(AUDIT).ok


def _set_health(state: StateStore, pool: str, health: Health) -> None:
    st = state.writer()
    p = placement_schema.get_pool(st, pool)
    assert p is not None
    from dataclasses import replace
    placement_schema.put_pool(st, replace(p, status=PoolHealth(health=health, changed_ms=T0)))
    state.commit()


def _incidents(local: LocalStore) -> list[tuple[str, Any]]:
    return [(r["kind"], r["detail"].get("pool")) for r in local.records(INCIDENTS)]


def test_pool_down_and_up_are_raised_once_even_across_restarts(
        fed: Fed, state: StateStore, local: LocalStore) -> None:
    rec = LocalRecorder(local, state, "hq")
    rec.check_pools()
    assert _incidents(local) == []  # healthy pools at first sight: nothing to say
    _set_health(state, "gpu-dc", Health.DOWN)
    rec.check_pools()
    rec.check_pools()
    assert _incidents(local) == [("pool_down", "gpu-dc")]
    again = LocalRecorder(local, state, "hq")  # a restart: the level is remembered
    again.check_pools()
    assert _incidents(local) == [("pool_down", "gpu-dc")]
    _set_health(state, "gpu-dc", Health.UP)
    again.check_pools()
    assert _incidents(local) == [("pool_down", "gpu-dc"), ("pool_up", "gpu-dc")]
    down = local.records(INCIDENTS)[0]
    assert down["level"] == "critical" and down["detail"]["since_ms"] == T0 and down["node"] == "hq"
    assert local.verify(INCIDENTS).ok


def test_pool_down_after_apply_is_noticed_by_the_writer_thread(
        fed: Fed, state: StateStore, local: LocalStore) -> None:
    rec = _recorder(local, state)
    _set_health(state, "cpu-branch", Health.DOWN)
    rec.on_applied(AppliedEntry(2, [], [], []))
    deadline = time.monotonic() + 10
    while not local.records(INCIDENTS) and time.monotonic() < deadline:
        time.sleep(0.05)
    rec.stop()
    assert _incidents(local) == [("pool_down", "cpu-branch")]


def test_lockdown_is_debounced_and_level_triggered(fed: Fed, state: StateStore, local: LocalStore) -> None:
    rec = LocalRecorder(local, state, "hq", lockdown_grace_s=10)
    rec.check_lockdown(True, 100.0)  # start-up: peers not yet heard
    rec.check_lockdown(False, 101.0)
    rec.check_lockdown(True, 102.0)
    rec.check_lockdown(True, 111.0)
    assert local.records(INCIDENTS) == []
    rec.check_lockdown(True, 112.0)
    rec.check_lockdown(True, 113.0)
    assert [r["kind"] for r in local.records(INCIDENTS)] == ["lockdown_entered"]
    LocalRecorder(local, state, "hq").check_lockdown(False, 200.0)  # after a restart, it is over
    rec.check_lockdown(False, 201.0)
    assert [r["kind"] for r in local.records(INCIDENTS)] == ["lockdown_entered", "lockdown_left"]
    assert local.level("lockdown") == "0"


def _governance(index: int, state: str, **fields: Any) -> AppliedEntry:
    result = pb.Result(code=0, index=index, ordinal=0, governance=gpb.GovernanceResult(
        pending_id=b"\x07" * 32, state=state, **fields))
    return AppliedEntry(index, [result], [(b"k" * 16, b"r" * 16)],
                        [EnvelopeSummary("veto", "gpu-dc-admin", "gpu-dc", "admin")])


def test_a_veto_in_applied_results_is_an_incident_once(fed: Fed, state: StateStore, local: LocalStore) -> None:
    rec = _recorder(local, state)
    rec.on_applied(_governance(5, "vetoed"))
    rec.on_applied(_governance(5, "vetoed"))  # replay
    rec.on_applied(_governance(6, "vetoed"))  # a repeated request answered with the first result
    rec.on_applied(_governance(7, "pending"))
    assert rec.flush()
    rec.stop()
    [veto] = local.records(INCIDENTS)
    assert veto["kind"] == "veto" and veto["detail"]["pending_id"] == "07" * 32
    assert veto["detail"]["author"] == "gpu-dc-admin" and veto["detail"]["index"] == 5
    [gov] = [r for r in local.records(AUDIT) if r["index"] == 5]
    assert gov["governance"] == {"pending_id": "07" * 32, "state": "vetoed"}


def test_raise_incident_for_app_code_is_idempotent_with_a_key(fed: Fed, state: StateStore, local: LocalStore) -> None:
    rec = _recorder(local, state)
    rec.raise_incident("break_glass", {"pending_id": "ab", "index": 9}, key="break_glass/9/0")
    rec.raise_incident("break_glass", {"pending_id": "ab", "index": 9}, key="break_glass/9/0")
    rec.raise_incident("disk_full", {"free_mb": 3}, level="warning")
    assert rec.flush()
    rec.stop()
    assert [(r["kind"], r["level"]) for r in local.records(INCIDENTS)] == [("break_glass", "critical"),
                                                                          ("disk_full", "warning")]


# -- alert hooks ------------------------------------------------------------------------------------

class _Hook(http.server.BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []
    fail_first = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if _Hook.fail_first > 0:
            _Hook.fail_first -= 1
            self.send_response(500)
            self.end_headers()
            return
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture()
def webhook() -> Iterator[str]:
    _Hook.received, _Hook.fail_first = [], 2
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def _wait(condition: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_incidents_go_to_the_webhook_and_the_program_with_retries(
        tmp_path: Path, fed: Fed, state: StateStore, local: LocalStore, webhook: str) -> None:
    out = tmp_path / "alerts.jsonl"
    script = tmp_path / "alert.sh"
    script.write_text(f"#!/bin/sh\ncat >> {out}\necho >> {out}\n")
    script.chmod(0o755)
    local.append(INCIDENTS, [audit_mod.Pending({"kind": "old", "level": "info", "detail": {}})])  # before: not sent
    alerts = AlertDispatcher(local, AlertTargets(webhook, script), node_id="hq", cluster_id=fed.cluster_id,
                             backoff_scale=0.01)
    alerts.start()
    rec = _recorder(local, state, on_incident=alerts.notify)
    _wait(lambda: local.meta_int("alert_cursor/webhook") == 1 and local.meta_int("alert_cursor/exec") == 1)
    rec.raise_incident("pool_down", {"pool": "gpu-dc"})
    rec.raise_incident("veto", {"pending_id": "ab"}, level="warning")
    _wait(lambda: len(_Hook.received) == 2 and out.exists() and len(out.read_text().splitlines()) == 2)
    rec.stop()
    alerts.stop()
    assert [d["incident"]["kind"] for d in _Hook.received] == ["pool_down", "veto"]  # in order, after 2 failures
    doc = _Hook.received[0]
    assert doc["source"] == "fedraft" and doc["node"] == "hq" and doc["cluster_id"] == fed.cluster_id.hex()
    assert doc["incident"]["detail"] == {"pool": "gpu-dc"} and doc["incident"]["seq"] == 2
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [d["incident"]["kind"] for d in lines] == ["pool_down", "veto"]
    assert local.meta_int("alert_cursor/webhook") == 3


def test_an_undeliverable_incident_is_skipped_after_its_attempts(
        tmp_path: Path, fed: Fed, local: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from fedraft.service import alerts as alerts_mod

    monkeypatch.setattr(alerts_mod, "MAX_ATTEMPTS", 3)
    script = tmp_path / "fail.sh"
    script.write_text("#!/bin/sh\necho broken >&2\nexit 3\n")
    script.chmod(0o755)
    alerts = AlertDispatcher(local, AlertTargets(exec_path=script), node_id="hq", cluster_id=fed.cluster_id,
                             backoff_scale=0.001)
    alerts.start()
    _wait(lambda: local.meta_int("alert_cursor/exec") == 0)
    local.append(INCIDENTS, [audit_mod.Pending({"kind": "x", "level": "info", "detail": {}})])
    alerts.notify()
    _wait(lambda: local.meta_int("alert_cursor/exec") == 1)
    alerts.stop()


def test_the_snapshot_serializer_tells_its_listener(tmp_path: Path) -> None:
    from tests.consensus.test_snapshot import CHUNK, OTHER, FakeSource, make, serialize, transmit, wait_done

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    source = FakeSource(tmp_path / "a")
    source.apply(10, 50)
    sender = make(tmp_path / "a" / "snapshot", source)
    serialize(sender, 10)
    wait_done(sender)
    calls: list[int] = []
    receiver = make(tmp_path / "b" / "snapshot", FakeSource(tmp_path / "b"), node="node-b", identity=OTHER,
                    on_installed=calls.append)
    assert [receiver.setTransmissionData(chunk) for chunk in transmit(sender)][-1] is True
    assert calls == [10] and CHUNK > 0

    def broken(_index: int) -> None:
        raise RuntimeError("listener bug")

    (tmp_path / "c").mkdir()
    other = make(tmp_path / "c" / "snapshot", FakeSource(tmp_path / "c"), node="node-b", identity=OTHER,
                 on_installed=broken)
    assert [other.setTransmissionData(chunk) for chunk in transmit(sender, "n3")][-1] is True  # still installed


def test_the_engine_reports_the_range_a_snapshot_brought() -> None:
    from types import SimpleNamespace

    from fedraft.consensus.engine import RaftEngine

    calls: list[tuple[int, int]] = []

    def broken(_first: int, _last: int) -> None:
        raise RuntimeError("listener bug")

    engine: Any = SimpleNamespace(_last_applied=7, store=SimpleNamespace(applied_index=lambda: 38),
                                  _snapshot_listeners=[broken, lambda a, b: calls.append((a, b))])
    RaftEngine._on_snapshot_installed(engine, 40)  # the state is at 38; 39..40 were pysyncobj no-ops
    assert calls == [(8, 40)] and engine._last_applied == 38


def test_a_break_glass_execution_is_an_incident_once_per_operation(
        fed: Fed, state: StateStore, local: LocalStore) -> None:
    rec = _recorder(local, state)
    rec.on_applied(_governance(8, "executed", break_glass=True, command="revoke_principal"))
    rec.on_applied(_governance(9, "executed", break_glass=True))  # a later answer about the same operation
    rec.on_applied(_governance(10, "executed"))  # executed on every pool's approval: no override
    assert rec.flush()
    rec.stop()
    [incident] = local.records(INCIDENTS)
    assert (incident["kind"], incident["level"], incident["detail"]["index"]) == ("break_glass", "critical", 8)
