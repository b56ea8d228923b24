"""Checking the champions of a repository now."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from controller.api.quantummodel import QuantumModel
from controller.engine.live import LiveSource
from controller.engine.monitoring.checks import Context, Report, run_checks
from controller.engine.monitoring.sources import CalibrationSource
from controller.engine.registry.ledger import format_time
from controller.engine.text import scrub

CredentialsLookup = Callable[[str, str], Any]


def monitor_model(
    registry: Any,
    model: QuantumModel,
    *,
    source: CalibrationSource,
    now: datetime,
    credentials: CredentialsLookup | None = None,
    live: LiveSource | None = None,
    replay_shots: int | None = None,
) -> Report:
    """The checks of one model's champion now (its spec's ``monitoring``, defaults when absent)."""
    ns, name = model.metadata.namespace, model.metadata.name
    at = format_time(now)
    try:
        champion = registry.champion(ns, name)
    except Exception as err:
        return Report(ns, name, None, [], at, error=scrub(str(err)))
    if champion is None:
        return Report(ns, name, None, [], at, note="no champion yet: nothing to watch")
    secret = model.spec.training.credentials_secret
    lookup = None
    if secret and credentials is not None:
        lookup = lambda: credentials(ns, secret)  # noqa: E731
    context = Context(
        namespace=ns,
        name=name,
        spec=model.spec,
        champion=champion,
        repo_root=registry.repo,
        now=now,
        source=source,
        registry=registry,
        credentials=lookup,
        replay_shots=replay_shots,
    )
    return Report(ns, name, champion.number, run_checks(context, live), at)


def monitor(
    registry: Any,
    models: list[QuantumModel],
    *,
    now: datetime,
    source: CalibrationSource | None = None,
    credentials: CredentialsLookup | None = None,
    live: LiveSource | None = None,
    replay_shots: int | None = None,
) -> list[Report]:
    source = source or CalibrationSource(registry.repo)
    return [
        monitor_model(
            registry, m, source=source, now=now, credentials=credentials, live=live, replay_shots=replay_shots
        )
        for m in models
    ]
