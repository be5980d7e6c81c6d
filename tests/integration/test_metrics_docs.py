"""/metrics against what documents and uses it: the README's list of metrics (names, types,
labels, both ways), the queries of the Grafana dashboard and of the Prometheus alert rules
(every metric they name is one Relay exports), and `promtool check rules`.

The families come from a scrape of a running `relay serve` (SRT on, as RelayProcess starts
it), so a family added to the collector without a README row, or a query that names a
metric nobody exports (a typo, a rename), fails here."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from testkit.relay_process import RelayProcess

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DASHBOARD = ROOT / "deploy" / "grafana" / "relay.json"
ALERTS = ROOT / "deploy" / "prometheus" / "relay-alerts.yml"
ALERT_TESTS = ROOT / "tests" / "deploy" / "relay-alerts-test.yml"
PROMTOOL = shutil.which("promtool")

_TABLE = re.compile(r"<!-- metrics-table[^>]*-->\n(.*?)<!-- /metrics-table -->", re.S)
_ROW = re.compile(r"^\| `([a-zA-Z_:][a-zA-Z0-9_:]*)` \| (\w+) \| ([^|]*) \|")


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Metric]:
    relay = RelayProcess(tmp_path_factory.mktemp("relay") / "data").start()
    try:
        text = httpx.get(relay.urls["metrics"], timeout=10).text
    finally:
        assert relay.stop() == 0, relay.log
    return {family.name: family for family in text_string_to_metric_families(text)}


def exposed_name(family: Metric) -> str:
    """The name the README lists: a counter's samples carry `_total`."""
    return family.name + "_total" if family.type == "counter" else family.name


def exported_series(families: dict[str, Metric]) -> set[str]:
    """Every series name a query may use, also of families with no series at the moment
    (the per live stream ones, with no stream live)."""
    names: set[str] = set()
    for family in families.values():
        if family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(exposed_name(family))
        names.update(sample.name for sample in family.samples)
    return names


def readme_rows() -> dict[str, tuple[str, frozenset[str]]]:
    """The README's metrics table: name -> (type, labels)."""
    match = _TABLE.search(README.read_text())
    assert match, "README.md has no <!-- metrics-table --> section"
    rows: dict[str, tuple[str, frozenset[str]]] = {}
    for line in match.group(1).splitlines():
        row = _ROW.match(line)
        if row is None:
            continue
        name, kind, labels = row.groups()
        assert name not in rows, f"{name} is listed twice"
        rows[name] = (kind, frozenset(re.findall(r"`([a-zA-Z_][a-zA-Z0-9_]*)`", labels)))
    return rows


def test_every_exported_family_is_in_the_readme_with_its_labels_and_vice_versa(
        families: dict[str, Metric]) -> None:
    rows = readme_rows()
    exported = {exposed_name(family): family for family in families.values()}
    assert sorted(set(exported) - set(rows)) == [], "exported but not in README.md"
    assert sorted(set(rows) - set(exported)) == [], "in README.md but not exported"
    for name, family in exported.items():
        kind, labels = rows[name]
        assert kind == family.type, name
        assert family.documentation.strip(), f"{name} has no help text"
        if family.samples:  # the per stream families have none with no stream live
            seen = {label for sample in family.samples for label in sample.labels} - {"le"}
            assert seen == labels, name


# -- PromQL ---------------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_OFFSET = re.compile(r"\boffset\s+-?[0-9a-zA-Z_$]+")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NUMBER = re.compile(r"(?<![a-zA-Z0-9_:])[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_VARIABLE = re.compile(r"\$\{?\w+\}?")
_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS = frozenset({"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
                       "group_right", "offset", "bool", "inf", "nan"})
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*$", re.S)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, label names,
    strings, numbers, durations and Grafana variables left out)."""
    label_values = _LABEL_VALUES.match(expr)
    if label_values:  # Grafana's label_values(SELECTOR, LABEL)
        expr = label_values.group(1)
    for pattern in (_STRING, _MATCHERS, _RANGE, _OFFSET, _GROUPING, _VARIABLE, _NUMBER):
        expr = pattern.sub(" ", expr)
    names = set()
    for match in _IDENTIFIER.finditer(expr):
        word = match.group()
        if word.lower() in _KEYWORDS or expr[match.end():].lstrip().startswith("("):
            continue  # a keyword, or a function (or aggregation) being called
        names.add(word)
    return names


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (le) (rate(a_bucket{x="y", z=~"$v"}[$__rate_interval]))', {"a_bucket"}),
    ("histogram_quantile(0.95, sum(rate(b_bucket[5m])) by (le)) > 1e3", {"b_bucket"}),
    ("c_total - c_total offset 1h and on(instance) d > bool 2", {"c_total", "d"}),
    ('max_over_time(e[10m]) unless e{status="by (x)"}', {"e"}),
    ("label_values(f{instance=~\"$instance\"}, live_stream_id)", {"f"}),
    ("sum without (job) (g) / ignoring(a) group_left h", {"g", "h"}),
    ("vector(0) or absent(i)", {"i"}),
])
def test_metric_names_are_taken_from_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def dashboard_queries() -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and query variable of the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            yield (f"variable {variable['name']}",
                   query["query"] if isinstance(query, dict) else query)


def alert_rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(ALERTS.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def test_dashboard_queries_name_only_exported_metrics(families: dict[str, Metric]) -> None:
    exported = exported_series(families)
    queries = list(dashboard_queries())
    assert len(queries) > 20
    for where, expr in queries:
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        assert names <= exported, f"{where}: {sorted(names - exported)} not exported"
    rows = {panel["title"] for panel in json.loads(DASHBOARD.read_text())["panels"]
            if panel["type"] == "row"}
    assert {"Ingest", "Playback", "Webhooks", "Simulcast", "Process"} <= rows


def test_alert_rules_name_only_exported_metrics(families: dict[str, Metric]) -> None:
    exported = exported_series(families)
    rules = alert_rules()
    for rule in rules:
        names = metric_names(rule["expr"])
        assert names, f"{rule['alert']}: no metric"
        assert names <= exported, f"{rule['alert']}: {sorted(names - exported)} not exported"
    assert {"RelayStreamDown", "RelayActiveStreamsDropped", "RelayIngestBitrateCollapse",
            "RelayWebhookBacklog", "RelayProtocolErrorsSurge"} <= {r["alert"] for r in rules}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    # A required peer: missing, the tests fail (make test installs it) rather than skip.
    if PROMTOOL is None:
        pytest.fail("promtool is not installed: install Debian's prometheus package "
                    "(make test does: APT_PACKAGES)")
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120,
                          check=False, cwd=ROOT)


def test_promtool_accepts_the_alert_rules() -> None:
    checked = promtool("check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in checked.stdout


def test_the_alerts_fire_on_relays_series() -> None:
    """tests/deploy/relay-alerts-test.yml: stream down, bitrate collapse, active streams
    dropped, webhook backlog and protocol errors surge, each quiet before and firing after."""
    tested = promtool("test", "rules", str(ALERT_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
