"""deploy/grafana: the dashboard parses, and its queries use only the contract's metrics and labels.

Every PromQL expression is parsed (promql-parser, the Rust parser's binding) after Grafana's variables
are replaced by sample values. The metric names come from docs/contract.md (or the README's copy of
them when ../shared is not there) and must also be what service/metrics.py exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from typing import Any

import promql_parser
import pytest
from prometheus_client import Counter, Gauge, Histogram

from service import metrics
from tests.deploy.files import CONTRACT, DASHBOARD, K8S, README, yaml_docs

GRAFANA_BUILTINS = {"__rate_interval": "5m", "__interval": "1m", "__range": "6h"}
TARGET_LABELS = {"component", "job", "instance", "pod", "namespace"}  # added by the scrape, not the code
CONTRACT_METRIC = re.compile(r"`(bcsync_[a-z_]+)(?:\{([a-z_, ]*)\})?`")


@cache
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels() -> Iterator[dict[str, Any]]:
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


def targets() -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in panels() for target in panel.get("targets", [])]


@cache
def contract_metrics() -> dict[str, set[str]]:
    """Metric name → labels, from the contract's Metrics section (or the README's metrics line)."""
    if CONTRACT.exists():
        text = CONTRACT.read_text().split("## Metrics", 1)[1].split("\n## ", 1)[0]
    else:
        # The README's metrics paragraph; what it marks as an addition is not the contract.
        text = README.read_text().split("\nMetrics: ", 1)[1].split("\n\n", 1)[0].split("*addition", 1)[0]
    found = {name: {x.strip() for x in labels.split(",") if x.strip()} if labels else set()
             for name, labels in CONTRACT_METRIC.findall(text)}
    assert len(found) >= 6, found
    return found


def contract_values() -> dict[str, set[str]]:
    """Label → allowed values where the contract enumerates them (`outcome` `accepted|ignored|…`)."""
    if not CONTRACT.exists():
        return {}
    text = CONTRACT.read_text().split("## Metrics", 1)[1]
    return {label: set(values.split("|")) for label, values in re.findall(r"(\w+)\s+`([a-z_]+(?:\|[a-z_]+)+)`", text)}


def exported_series() -> dict[str, set[str]]:
    """Series name → labels, as service/metrics.py exports them."""
    series: dict[str, set[str]] = {}
    for collector in vars(metrics).values():
        if not isinstance(collector, Counter | Gauge | Histogram):
            continue
        name, labels = collector._name, set(collector._labelnames)
        if isinstance(collector, Counter):
            series[f"{name}_total"] = labels
        elif isinstance(collector, Histogram):
            series.update({name: labels, f"{name}_bucket": labels | {"le"}, f"{name}_sum": labels,
                           f"{name}_count": labels})
        else:
            series[name] = labels
    return series


def test_the_code_exports_what_the_contract_names() -> None:
    exported = exported_series()
    for name, labels in contract_metrics().items():
        assert name in exported, f"{name} is in the contract but not exported"
        assert not labels or labels == exported[name], f"{name}: contract {labels}, code {exported[name]}"


def parse(expr: str) -> Any:
    variables = {v["name"]: ".*" for v in dashboard()["templating"]["list"]} | GRAFANA_BUILTINS
    used = set(re.findall(r"\$(\w+)", expr))
    assert used <= variables.keys(), f"undefined variables {used - variables.keys()} in {expr}"
    return promql_parser.parse(re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], expr))


def nodes(expr: str) -> list[Any]:
    found: list[Any] = []
    promql_parser.walk(parse(expr), found.append)
    return found


@pytest.mark.parametrize(("title", "expr"), targets())
def test_queries_use_only_contract_metrics_and_labels(title: str, expr: str) -> None:
    contract = contract_metrics()
    exported = exported_series()
    allowed_values = contract_values()
    selectors = [n for n in nodes(expr) if isinstance(n, promql_parser.VectorSelector)]
    assert selectors, f"{title}: no metric in {expr}"
    labels: set[str] = set(TARGET_LABELS)
    for selector in selectors:
        base = re.sub(r"_(bucket|sum|count)$", "", selector.name)
        assert selector.name in contract or base in contract, f"{title}: {selector.name} is not in the contract"
        labels |= exported[selector.name]
        for matcher in selector.matchers.matchers:
            assert matcher.name in exported[selector.name] | TARGET_LABELS, f"{title}: label {matcher.name}"
            if matcher.op == promql_parser.MatchOp.Equal and matcher.name in allowed_values:
                assert matcher.value in allowed_values[matcher.name], f"{title}: {matcher.name}={matcher.value}"
    for node in nodes(expr):
        if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            assert set(node.modifier.labels) <= labels, f"{title}: grouping by {node.modifier.labels}"


def test_mapping_variable_reads_a_contract_metric() -> None:
    variable = next(v for v in dashboard()["templating"]["list"] if v["name"] == "mapping")
    metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["query"]["query"]).groups()
    assert metric in contract_metrics() and label in exported_series()[metric]


def test_contract_metrics_all_have_a_panel() -> None:
    used = {re.sub(r"_(bucket|sum|count)$", "", n.name) for _, expr in targets() for n in nodes(expr)
            if isinstance(n, promql_parser.VectorSelector)}
    assert set(contract_metrics()) <= used


def test_component_label_is_what_the_pod_monitors_add() -> None:
    # The dashboard tells the workers' counters from the api's by `component`, which monitoring.yaml
    # copies from the pods' app.kubernetes.io/component label.
    components = {m.value for _, expr in targets() for n in nodes(expr) if isinstance(n, promql_parser.VectorSelector)
                  for m in n.matchers.matchers if m.name == "component"}
    monitors = [d for d in yaml_docs(K8S / "monitoring.yaml") if d["kind"] == "PodMonitor"]
    pods = {d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] for d in monitors}
    relabel = {r["targetLabel"]: r["sourceLabels"] for d in monitors for e in d["spec"]["podMetricsEndpoints"]
               for r in e.get("relabelings", [])}
    assert relabel.get("component") == ["__meta_kubernetes_pod_label_app_kubernetes_io_component"]
    assert components and components <= pods


def test_every_panel_uses_the_datasource_variable() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), panel["title"]


def test_panels_have_unique_ids_and_fit_the_grid() -> None:
    ids = [panel["id"] for panel in panels()]
    assert len(ids) == len(set(ids))
    for panel in panels():
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
