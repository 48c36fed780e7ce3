"""docs/grafana/fedraft.json and docs/prometheus/fedraft-alerts.yml against what a real node exports.

Every PromQL expression in the dashboard (panel targets, template variables) and in the alert rules is
tokenized; its metric names and the label names of its selectors and by/on clauses must exist on the
/metrics of a real three-node federation (node processes, gRPC on loopback, LMDB) after a placement, a
migration and a rejected command, so that every labelled family has a sample. `instance` and `job` are
the labels Prometheus adds to a scrape. With promtool installed, the rules, their unit tests
(fedraft-alerts.test.yml) and the dashboard's expressions also go through Prometheus' own parser.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from fedraft.client import Client
from fedraft.config import load_node_config
from fedraft.domain.placement.model import Trust, WorkloadSpec
from tests.integration.cluster import Cluster, wait_for

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "docs" / "grafana" / "fedraft.json"
ALERTS = REPO / "docs" / "prometheus" / "fedraft-alerts.yml"
ALERT_TESTS = REPO / "docs" / "prometheus" / "fedraft-alerts.test.yml"
RUNBOOK = REPO / "docs" / "runbook.md"

TARGET_LABELS = frozenset({"instance", "job"})  # added by Prometheus to every scraped series
ROWS = ("Consensus", "Writes", "Placement")
SEVERITIES = frozenset({"critical", "warning"})
# Grafana's variables, replaced by values Prometheus accepts before promtool parses an expression
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "1m", "$instance": ".*",
                     "$pool": ".*"}

# ----- a PromQL tokenizer: enough to find metric and label names, and to reject what is not PromQL -----

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:ms|s|m|h|d|w|y)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^<>=,(){}])
""", re.VERBOSE)
AGGREGATIONS = frozenset({"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                          "bottomk", "topk", "quantile", "limitk", "limit_ratio"})
FUNCTIONS = AGGREGATIONS | frozenset({
    "abs", "absent", "absent_over_time", "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min",
    "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp",
    "floor", "histogram_quantile", "hour", "idelta", "increase", "irate", "label_join", "label_replace",
    "last_over_time", "ln", "log10", "log2", "max_over_time", "min_over_time", "minute", "month", "predict_linear",
    "present_over_time", "quantile_over_time", "rate", "resets", "round", "scalar", "sgn", "sort", "sort_desc",
    "sqrt", "stddev_over_time", "stdvar_over_time", "sum_over_time", "time", "timestamp", "vector", "year"})
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan"})
MATCHERS = frozenset({"=", "!=", "=~", "!~"})


@dataclass
class Names:
    """What one expression names: metrics, label names per selected metric, and grouping labels."""

    metrics: set[str] = field(default_factory=set)
    selector_labels: set[tuple[str, str]] = field(default_factory=set)  # (metric, label)
    grouping_labels: set[str] = field(default_factory=set)


def tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise ValueError(f"not PromQL at {expr[pos:pos + 20]!r} in {expr!r}")
        pos = m.end()
        if m.lastgroup != "ws":
            out.append((m.lastgroup or "", m.group()))
    return out


def names_in(expr: str) -> Names:
    """Metric and label names of one PromQL expression; raises ValueError on unbalanced brackets or an
    unknown function."""
    toks = tokens(expr)
    names = Names()
    depth = 0
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        following = toks[i + 1][1] if i + 1 < len(toks) else ""
        if text == "(":
            depth += 1
        elif text == ")":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ')' in {expr!r}")
        elif kind == "ident" and text in GROUPING:
            if following == "(":
                close = _closing(toks, i + 1, expr)
                names.grouping_labels |= {t for k, t in toks[i + 2:close] if k == "ident"}
                i = close
        elif kind == "ident" and text in AGGREGATIONS and following in ("by", "without"):
            pass  # `sum by (...) (...)`: the clause comes next
        elif kind == "ident" and following == "(":
            if text not in FUNCTIONS:
                raise ValueError(f"unknown function {text!r} in {expr!r}")
        elif kind == "ident" and text.lower() not in KEYWORDS:
            names.metrics.add(text)
            if following == "{":
                i = _selector(toks, i + 1, text, names, expr)
        elif text == "{":  # a selector without a metric name
            i = _selector(toks, i, "", names, expr)
        i += 1
    if depth:
        raise ValueError(f"unbalanced '(' in {expr!r}")
    return names


def _closing(toks: list[tuple[str, str]], open_at: int, expr: str) -> int:
    for j in range(open_at + 1, len(toks)):
        if toks[j][1] == ")":
            return j
    raise ValueError(f"unclosed '(' in {expr!r}")


def _selector(toks: list[tuple[str, str]], open_at: int, metric: str, names: Names, expr: str) -> int:
    j = open_at + 1
    while j < len(toks) and toks[j][1] != "}":
        kind, text = toks[j]
        if kind == "ident":
            if j + 2 >= len(toks) or toks[j + 1][1] not in MATCHERS or toks[j + 2][0] != "string":
                raise ValueError(f"bad label matcher at {text!r} in {expr!r}")
            names.selector_labels.add((metric, text))
            j += 3
            continue
        if text != ",":
            raise ValueError(f"unexpected {text!r} in a selector of {expr!r}")
        j += 1
    if j >= len(toks):
        raise ValueError(f"unclosed '{{' in {expr!r}")
    return j


# ----- what the documents hold -------------------------------------------------------------------

def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_expressions(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expression) of every panel target and query variable; label_values(metric, label)
    becomes `metric` with a `by (label)` so both names are checked."""
    out = [(f"panel {p['title']!r}", t["expr"]) for p in doc["panels"] for t in p.get("targets", [])]
    for var in doc["templating"]["list"]:
        if var["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.+),\s*([A-Za-z_][A-Za-z0-9_]*)\)", var["query"]["query"])
        assert m, f"variable {var['name']}: only label_values(metric, label) is checked: {var['query']}"
        out.append((f"variable {var['name']!r}", f"group by ({m.group(2)}) ({m.group(1)})"))
    return out


def every_expression() -> list[tuple[str, str]]:
    return dashboard_expressions(dashboard()) + [(f"alert {r['alert']}", r["expr"]) for r in alert_rules()]


def runbook_anchors() -> set[str]:
    """GitHub's anchors of the runbook's headings: lower case, punctuation dropped, spaces to '-'."""
    anchors = set()
    in_code = False
    for line in RUNBOOK.read_text().splitlines():
        in_code ^= line.startswith("```")
        m = None if in_code else re.match(r"#{1,6} (.+)", line)
        if m:
            title = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            anchors.add(title.replace(" ", "-"))
    return anchors


# ----- a real federation's /metrics ---------------------------------------------------------------

@dataclass(frozen=True)
class Scrape:
    """Sample names of the scrapes, each with the label names its samples carry; and each node's samples
    as (name, sorted labels) -> value."""

    labels: dict[str, set[str]]
    nodes: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = field(default_factory=dict)

    @classmethod
    def of(cls, texts: dict[str, str]) -> Scrape:
        labels: dict[str, set[str]] = {}
        nodes: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        for node, text in texts.items():
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    labels.setdefault(sample.name, set()).update(sample.labels)
                    nodes.setdefault(node, {})[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return cls(labels, nodes)

    def values(self, name: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        """Per node: the samples of `name` by their labels."""
        return {node: {labels: v for (n, labels), v in samples.items() if n == name}
                for node, samples in self.nodes.items()}


def _scrape(cluster: Cluster, node: str) -> str:
    listen = load_node_config(cluster.config(node)).http_listen
    with urllib.request.urlopen(f"http://{listen}/metrics", timeout=5) as response:
        return str(response.read().decode())


def _admin(cluster: Cluster, pool: str) -> Client:
    c = Client.from_profile(cluster.layout.profiles[pool], timeout=30)
    cluster._clients.append(c)
    return c


@pytest.fixture(scope="module")
def scrape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scrape]:
    """Every node's /metrics after a critical operation left pending, a placement, a migration and a
    command rejected at apply."""
    cluster = Cluster(tmp_path_factory.mktemp("dashboards"), sample_inventory=True)
    cluster.start_all()
    try:
        cluster.leader()
        hq = _admin(cluster, "hq")
        wait_for(lambda: len([p for p in hq.list("pools") if p.workers]) == 3, 60, 0.2, "every pool's inventory")
        waiting = hq.set_policy({"drain_ms": "45000"})  # nobody else approves: it stays pending
        assert waiting.governance.state == "pending", waiting
        hq.pair_offer("gpu-dc", Trust.HIGH)
        _admin(cluster, "gpu-dc").pair_accept("hq")
        placed = hq.submit("dash-1", WorkloadSpec(cpu_millis=500, ram_mb=512, preferred_region="dc-east"))
        target = "hq" if placed.placement.pool != "hq" else "gpu-dc"
        hq.migrate("dash-1", target)
        rejected = hq.migrate("no-such-workload", check=False)
        assert rejected.code != 0, rejected
        cluster.wait_applied(rejected.index)

        def scrapes() -> dict[str, str] | None:
            texts = {n: _scrape(cluster, n) for n in cluster.node_ids}
            wanted = ("fedraft_migrations_total{", "fedraft_replication_lag_seconds{",  # lag: the leader's
                      "fedraft_placements_total{", "fedraft_requests_rejected_total{")
            every_node = ("fedraft_peers_connected 2.0",)  # each node's links to both other voters
            return texts if (all(w in "".join(texts.values()) for w in wanted)
                             and all(w in t for w in every_node for t in texts.values())) else None

        yield Scrape.of(wait_for(scrapes, 30, 0.25, "the nodes' /metrics to show the events"))
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.close()


# ----- tests ---------------------------------------------------------------------------------------

def problems(names: Names, scrape: Scrape) -> list[str]:
    out = [f"metric {m} is not exported" for m in sorted(names.metrics) if m not in scrape.labels]
    for metric, label in sorted(names.selector_labels):
        have = scrape.labels.get(metric, set()) if metric else set().union(*scrape.labels.values())
        if label not in have | TARGET_LABELS:
            out.append(f"label {label} is not on {metric or 'any metric'}")
    used = set().union(*(scrape.labels.get(m, set()) for m in names.metrics)) if names.metrics else set()
    out += [f"grouping label {label} is on none of {sorted(names.metrics)}"
            for label in sorted(names.grouping_labels - used - TARGET_LABELS)]
    return out


@pytest.mark.integration
def test_every_metric_and_label_the_documents_name_is_exported(scrape: Scrape) -> None:
    found = [f"{where}: {p}" for where, expr in every_expression() for p in problems(names_in(expr), scrape)]
    assert not found, "\n".join(found)


@pytest.mark.integration
def test_the_checker_catches_a_wrong_name(scrape: Scrape) -> None:
    wrong = names_in('histogram_quantile(0.99, sum by (le, poool) (rate(fedraft_fsync_second_bucket[5m])))'
                     ' + on (instance) fedraft_pool_health{zone="eu"}')
    assert problems(wrong, scrape) == ["metric fedraft_fsync_second_bucket is not exported",
                                       "label zone is not on fedraft_pool_health",
                                       "grouping label le is on none of "
                                       "['fedraft_fsync_second_bucket', 'fedraft_pool_health']",
                                       "grouping label poool is on none of "
                                       "['fedraft_fsync_second_bucket', 'fedraft_pool_health']"]


@pytest.mark.integration
def test_every_node_exports_the_operator_gauges_with_sane_values(scrape: Scrape) -> None:
    """decision 0020's additions on real nodes: a pending operation's age, LMDB space of the state, the
    journal and the pool-local store, apply not halted, the versions, both peer streams up."""
    import importlib.metadata

    assert sorted(scrape.nodes) == ["cpu-branch", "gpu-dc", "hq"]
    for node in scrape.nodes:
        assert scrape.values("fedraft_peers_connected")[node] == {(): 2.0}, node
        assert scrape.values("fedraft_apply_halted")[node] == {(): 0.0}, node
        assert scrape.values("fedraft_pending_critical")[node] == {(): 1.0}, node
        # effective time moved on with the placement and migration committed after the proposal
        assert 0 < scrape.values("fedraft_pending_critical_oldest_seconds")[node][()] < 600, node
        (build,) = scrape.values("fedraft_build_info")[node]
        assert dict(build)["version"] == importlib.metadata.version("fedraft")
        assert dict(build)["pysyncobj"] == importlib.metadata.version("pysyncobj")
        used, size = scrape.values("fedraft_db_used_bytes")[node], scrape.values("fedraft_db_map_size_bytes")[node]
        assert sorted(dict(k)["db"] for k in used) == ["journal", "local", "state"]
        assert sorted(used) == sorted(size)
        for labels, value in used.items():
            assert 0 < value < size[labels] and size[labels] >= 1 << 30, (node, labels)


def test_the_tokenizer_reads_names_and_rejects_what_is_not_promql() -> None:
    names = names_in('sum by (job, le) (rate(fedraft_fsync_seconds_bucket{instance=~"$instance"}[$__rate_interval]))'
                     ' and on (instance) (fedraft_raft_is_leader == 1)')
    assert names.metrics == {"fedraft_fsync_seconds_bucket", "fedraft_raft_is_leader"}
    assert names.selector_labels == {("fedraft_fsync_seconds_bucket", "instance")}
    assert names.grouping_labels == {"job", "le", "instance"}
    for bad in ("rate(fedraft_raft_term[5m]", "rat(fedraft_raft_term[5m])", "fedraft_raft_term{node}",
                "fedraft_raft_term{node=~\"a\"", "fedraft_raft_term ? 1"):
        with pytest.raises(ValueError):
            names_in(bad)


def test_the_dashboard_is_an_importable_grafana_dashboard() -> None:
    doc = dashboard()
    assert 36 <= doc["schemaVersion"] <= 41 and doc["uid"] and doc["title"]
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["type"] == "query"
    rows = [p["title"] for p in doc["panels"] if p["type"] == "row"]
    assert rows == list(ROWS)
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for p in doc["panels"]:
        pos = p["gridPos"]
        assert pos["x"] + pos["w"] <= 24 and pos["h"] > 0, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"] and p.get("description"), p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        assert all(t["datasource"] == p["datasource"] and t["expr"] for t in p["targets"]), p["title"]
    # every panel sits under one of the rows, in their order
    cells = sorted(((p["gridPos"]["y"], p["gridPos"]["x"]), p["type"], p["title"]) for p in doc["panels"])
    assert cells[0][1] == "row"
    for a, b in itertools.pairwise(cells):
        assert a[0] != b[0], f"{a[2]} and {b[2]} overlap"


def test_alert_rules_are_complete_and_link_the_runbook() -> None:
    doc = yaml.safe_load(ALERTS.read_text())
    assert set(doc) == {"groups"}
    anchors = runbook_anchors()
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "an alert name repeats"
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert re.fullmatch(r"Fedraft[A-Z][A-Za-z]+", rule["alert"])
        names_in(rule["expr"])  # parses
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s")), rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert path == "docs/runbook.md" and anchor in anchors, f"{rule['alert']}: no runbook section #{anchor}"
    wanted = {"FedraftNoLeader", "FedraftNoQuorum", "FedraftNodeInLockdown", "FedraftApplyLagGrowing",
              "FedraftReplicationLagHigh", "FedraftFsyncSlow", "FedraftPoolDown",
              "FedraftCriticalOperationWaiting", "FedraftLeaderFlapping", "FedraftDatabaseFilling",
              "FedraftApplyHalted", "FedraftPeersDisconnected"}
    assert wanted <= set(names), sorted(wanted - set(names))


PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian: apt-get install "
                                    "prometheus); the structure tests above still run")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=ALERTS.parent)


@needs_promtool
def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    checked = _promtool("check", "rules", ALERTS.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _promtool("test", "rules", ALERT_TESTS.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr


@needs_promtool
def test_promtool_parses_every_dashboard_expression(tmp_path: Path) -> None:
    rules = []
    for i, (_, expr) in enumerate(dashboard_expressions(dashboard())):
        for variable, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"a Grafana variable the test does not replace: {expr}"
        rules.append({"record": f"fedraft:dashboard_{i}", "expr": expr})
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = _promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
