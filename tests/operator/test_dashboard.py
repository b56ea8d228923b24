"""The Grafana dashboard in deploy/ asks only for metrics the operator exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from controller.operator.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy/grafana/qmlops-dashboard.json"


def exported() -> set[str]:
    names = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        else:
            names.add(family.name)
    return names


def queried(node: object) -> list[str]:
    if isinstance(node, dict):
        found = []
        for key, value in node.items():
            if key in ("expr", "query") and isinstance(value, str):
                found += re.findall(r"\bqmlops_[a-z_]+", value)
            else:
                found += queried(value)
        return found
    if isinstance(node, list):
        return [name for item in node for name in queried(item)]
    return []


def test_every_metric_the_dashboard_queries_is_exported() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    names = queried(dashboard)
    assert names, "the dashboard queries no qmlops metric"
    assert sorted(set(names) - exported()) == []


def test_it_shows_per_model_the_champion_esp_replay_drifts_trainings_and_qpu_seconds() -> None:
    names = set(queried(json.loads(DASHBOARD.read_text())))
    assert {
        "qmlops_model_champion_version",
        "qmlops_model_esp",
        "qmlops_model_esp_at_training",
        "qmlops_model_replay_accuracy",
        "qmlops_drift_detected_total",
        "qmlops_decisions_total",
        "qmlops_qpu_seconds_total",
    } <= names
