"""The failover/recovery summaries and how the report picks the newest result per benchmark (no timing)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import failover, report


def _trial(total: float, detection: float, election: float) -> dict[str, Any]:
    return {"total_ms": total, "detection_ms": detection, "election_ms": election,
            "first_commit_ms": round(total - detection - election, 1), "old_term": 1, "new_term": 2}


def test_summary_is_nearest_rank_per_phase_and_skips_trials_without_a_phase() -> None:
    trials = [_trial(1000.0 + 100 * i, 900.0, 10.0) for i in range(10)]
    trials.append({"error": "Unavailable: no leader", "old_term": 1, "new_term": 0})
    s = failover.summarize(trials, p99=False)
    assert s["total"] == {"n": 10, "p50_ms": 1400.0, "p90_ms": 1800.0, "max_ms": 1900.0, "mean_ms": 1450.0}
    assert s["detection"]["p50_ms"] == 900.0
    assert "p99_ms" not in s["total"]
    assert failover.summarize(trials, p99=True)["total"]["p99_ms"] == 1900.0


def test_verdict_says_by_how_much_a_target_is_missed() -> None:
    v = failover.verdict({"total": {"p50_ms": 1620.5, "max_ms": 2900.0}})
    assert v["p50"] == {"target_ms": 1500, "measured_ms": 1620.5, "met": False, "missed_by_ms": 120.5}
    assert v["max"]["met"] and v["max"]["missed_by_ms"] == 0.0
    assert not failover.verdict({})["p50"]["met"]


def _result(out: Path, stamp: str, mode: str, results: dict[str, Any]) -> None:
    doc = {"mode": mode, "started_utc": stamp, "command": f"python -m bench --{mode}", "duration_s": 1.0,
           "machine": {}, "results": results}
    (out / f"{stamp}-{mode}.json").write_text(json.dumps(doc))


def test_report_keeps_the_commit_section_when_a_newer_run_only_measured_failover(tmp_path: Path) -> None:
    commit = {"system": "fedraft", "levels": [{"clients": 1, "ops": 10, "ops_per_s": 123.4, "p50_ms": 4.0,
                                                "p99_ms": 6.0, "max_ms": 7.0, "errors": 0}]}
    trials = [_trial(1300.0, 1200.0, 5.0), _trial(3300.0, 2100.0, 5.0)]
    summary = failover.summarize(trials, p99=False)
    fail = {"system": "failover", "trials": trials, "summary": summary, "targets": failover.verdict(summary)}
    _result(tmp_path, "20260101T000000Z", "quick", {"fedraft": commit})
    _result(tmp_path, "20260102T000000Z", "quick", {"failover": fail})
    text = report.render(tmp_path)
    assert "| fedraft | 1 | 10 | 123.4 |" in text
    assert "### Failover" in text and "20260102T000000Z-quick.json" in text
    assert "missed by 300.0 ms" in text  # max 3300 ms against 3000 ms
    assert text.count("## quick") == 1


def test_recovery_reads_node_up_and_snapshot_install_from_the_nodes_own_log() -> None:
    from datetime import datetime

    from bench import recovery

    started = datetime(2026, 1, 2, 3, 4, 5).timestamp()
    text = ("2026-01-02 03:04:06,250 hq INFO fedraft.app: node hq up: api 127.0.0.1:1, peers 127.0.0.1:2\n"
            "Traceback-free noise without a timestamp\n"
            "2026-01-02 03:04:07,500 hq INFO fedraft.consensus.snapshot: installed snapshot at index 64 term 1\n"
            "2026-01-02 03:04:09,000 hq INFO fedraft.consensus.snapshot: installed snapshot at index 90 term 1\n")
    assert recovery.log_marks(text, "hq", started) == {"node_up_s": 1.25, "snapshot_installed_s": 2.5}
    assert recovery.log_marks(text, "gpu-dc", started) == {"snapshot_installed_s": 2.5}
