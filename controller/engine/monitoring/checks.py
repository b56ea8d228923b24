"""The champion watched on drifting hardware and data: three checks, each with its figures before and
after and a verdict.

* calibration: the champion's ESP on its own layout (recorded in its lineage) under today's
  calibration, against its ESP at training; a better layout on the same device is named.
* replay: the champion scored on its test split under the noise of today's calibration, against the
  same replay under the calibration it was trained on (both with :func:`evaluation.evaluate`, the
  one noise-aware evaluation; on fake backends, no QPU time). An ``ibm:`` device is replayed on its
  local model (the fake backend of the same device) under the service's calibration.
* data: ``file:`` datasets, each feature of the current data against the training data's summary.

* live: the served champion's accuracy on its labelled feedback (read from the server that serves it
  through a :data:`controller.engine.live.LiveSource` the shell provides) against its registered test
  accuracy, over its latest ``window`` labelled rows once ``minSamples`` of them are labelled.

A check whose input cannot be had (the service unreachable, no calibration recorded) is NOT_RUN with
its reason: never OK. Every reason is scrubbed before it is recorded or shown.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any

from controller.api.quantummodel import CalibrationCheck, DataCheck, Monitoring, QuantumModelSpec, ReplayCheck
from controller.engine.live import LiveSource, LiveUnavailable
from controller.engine.memo import Memo
from controller.engine.registry.versions import Version
from controller.engine.text import scrub


class CheckKind(StrEnum):
    CALIBRATION = "calibration"
    REPLAY = "replay"
    DATA = "data"
    LIVE = "live"


class Verdict(StrEnum):
    OK = "ok"  # checked: nothing moved beyond its threshold
    DRIFT = "drift"  # checked: something moved beyond its threshold
    NOT_RUN = "not-run"  # could not be checked now (the reason says why): never read as "no drift"
    NOT_APPLICABLE = "not-applicable"  # does not apply to this model (a simulator, a builtin dataset)


@dataclass(frozen=True)
class Check:
    kind: CheckKind
    verdict: Verdict
    figures: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    # what a drift is about: the calibration digest or the dataset digest it was seen on. A drift
    # already acted on for the same key is not acted on again.
    key: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"check": self.kind.value, "verdict": self.verdict.value, "figures": self.figures}
        if self.reason:
            out["reason"] = self.reason
        if self.key:
            out["key"] = self.key
        return out


@dataclass
class Context:
    """What the checks of one model need."""

    namespace: str
    name: str
    spec: QuantumModelSpec
    champion: Version
    repo_root: Path | None
    now: datetime
    source: Any  # sources.CalibrationSource
    registry: Any = None  # Registry: the training calibration's snapshot is read from it
    credentials: Any = None
    replay_shots: int | None = None

    @property
    def monitoring(self) -> Monitoring:
        return self.spec.monitoring or Monitoring()

    @property
    def lineage(self) -> dict[str, Any]:
        return dict(self.champion.artifact.get("lineage") or {})

    @property
    def backend(self) -> str:
        return str(self.lineage.get("backend") or self.spec.training.backend)


def enabled(monitoring: Monitoring) -> list[CheckKind]:
    """The checks a monitoring section asks for; none named means the three that need no server
    (calibration, replay, data) with their defaults: ``live`` runs only when named."""
    named = [
        kind
        for kind, section in (
            (CheckKind.CALIBRATION, monitoring.calibration),
            (CheckKind.REPLAY, monitoring.replay),
            (CheckKind.DATA, monitoring.data),
            (CheckKind.LIVE, monitoring.live),
        )
        if section is not None
    ]
    return named or [CheckKind.CALIBRATION, CheckKind.REPLAY, CheckKind.DATA]


def run_checks(context: Context, live: LiveSource | None = None) -> list[Check]:
    out: list[Check] = []
    today: Any = None
    for kind in enabled(context.monitoring):
        if kind is CheckKind.DATA:
            out.append(_guarded(kind, lambda: data_check(context)))
            continue
        if kind is CheckKind.LIVE:
            out.append(_guarded(kind, lambda: live_check(context, live)))
            continue
        if today is None:
            today = _today(context)
        if isinstance(today, Check):
            out.append(Check(kind, today.verdict, {}, today.reason))
        elif kind is CheckKind.CALIBRATION:
            out.append(_guarded(kind, partial(calibration_check, context, today)))
        else:
            out.append(_guarded(kind, partial(replay_check, context, today)))
    return out


def _guarded(kind: CheckKind, check: Callable[[], Check | None]) -> Any:
    try:
        return check()
    except Exception as err:  # a check that fails is reported as not run, with the reason
        return Check(kind, Verdict.NOT_RUN, {}, scrub(_describe(err)))


def _describe(err: Exception) -> str:
    text = str(err) or type(err).__name__
    return text if len(text) <= 400 else text[:399] + "…"


def _today(context: Context) -> Any:
    """Today's calibration of the champion's device, or a Check saying why there is none."""
    from controller.engine.monitoring.sources import SourceUnavailable

    backend = context.backend
    if not backend.startswith(("fake:", "ibm:")):
        return Check(CheckKind.CALIBRATION, Verdict.NOT_APPLICABLE, {}, f"{backend} is a simulator: no calibration")
    if "calibration" not in context.lineage:
        return Check(
            CheckKind.CALIBRATION,
            Verdict.NOT_RUN,
            {},
            f"version {context.champion.number} records no calibration in its lineage (trained before it was recorded)",
        )
    device_ref = backend
    if backend == "ibm:least-busy":
        device_ref = f"ibm:{context.lineage['calibration']['device']}"
    credentials = context.credentials
    try:
        return context.source.today(
            device_ref, now=context.now, period=timedelta(seconds=context.monitoring.seconds), credentials=credentials
        )
    except SourceUnavailable as err:
        return Check(CheckKind.CALIBRATION, Verdict.NOT_RUN, {}, scrub(str(err)))
    except Exception as err:  # a malformed calibrations/<device>.json: its located error, not a fallback
        return Check(CheckKind.CALIBRATION, Verdict.NOT_RUN, {}, scrub(_describe(err)))


def _dates(before: dict[str, Any], today: Any) -> dict[str, Any]:
    return {
        "before": {"lastUpdate": before.get("lastUpdate"), "digest": before.get("digest")},
        "after": {"lastUpdate": today.last_update, "digest": today.digest, "source": today.source},
    }


def calibration_check(context: Context, today: Any) -> Check:
    from controller.engine.training.calibration import Footprint, best_layout

    settings = context.monitoring.calibration or CalibrationCheck()
    recorded = dict(context.lineage["calibration"])
    footprint = Footprint.from_json(dict(recorded["layout"]))
    before = float(recorded["esp"])
    after = today.esp(footprint)
    drop = (before - after) / before if before > 0 else 0.0
    figures: dict[str, Any] = {
        "esp": {"before": round(before, 6), "after": round(after, 6)},
        "relativeDrop": round(drop, 6),
        "threshold": settings.max_esp_drop,
        "layout": footprint.qubits,
        "calibration": _dates(recorded, today),
    }
    better = best_layout(today, footprint)
    if better is not None and better[1] > after * 1.01 and better[0].qubits != footprint.qubits:
        figures["betterLayout"] = {"qubits": better[0].qubits, "esp": round(better[1], 6)}
    verdict = Verdict.DRIFT if drop > settings.max_esp_drop else Verdict.OK
    return Check(CheckKind.CALIBRATION, verdict, figures, key=today.digest)


def training_calibration(context: Context) -> Any:
    """The snapshot the champion was trained under: from the registry (where it is kept by digest),
    else from memory or its source while its digest still matches."""
    from controller.engine.training import calibration as calibrations

    recorded = dict(context.lineage["calibration"])
    device, digest = str(recorded.get("device", "")), str(recorded.get("digest", ""))
    if context.registry is not None:
        raw = context.registry.calibration(device, digest)
        if raw is not None:
            return calibrations.parse(raw, context.registry.calibration_path(device, digest), device)
    found = calibrations.recall(recorded)
    if found is not None:
        return found
    raise LookupError(
        f"the calibration {digest[:19]}… of {device} that version {context.champion.number} used is not kept"
    )


def _replay_backend(context: Context, device: str) -> str:
    """The backend a replay runs on: the fake backend itself, or the local model of an ibm: device."""
    if context.backend.startswith("fake:"):
        return context.backend
    from controller.api.common import fake_devices

    bare = device.removeprefix("ibm_").removeprefix("ibmq_").removeprefix("fake_")
    if bare not in fake_devices():
        raise LookupError(f"{device} has no local model to replay on without QPU time")
    return f"fake:{bare}"


def replay_check(context: Context, today: Any) -> Check:
    from controller.engine.training.evaluation import evaluate

    settings = context.monitoring.replay or ReplayCheck()
    trained_under = training_calibration(context)
    on = _replay_backend(context, str(context.lineage["calibration"]["device"]))
    model, spec, root = context.champion.artifact, context.spec, context.repo_root
    shots = context.replay_shots

    def replay(calibration: Any) -> Any:
        return evaluate(model, spec, on, shots=shots, repo_root=root, calibration=calibration)

    # the replay under the training's calibration does not change while the champion, its test data and
    # the shots do not: made once per process (the same seed gives the same figures)
    from controller.engine.training import dataset_digest

    key = (context.champion.digest, trained_under.digest, on, shots, dataset_digest(spec, root))
    before = _BASELINES.get(key, lambda: replay(trained_under))
    after = before if today.digest == trained_under.digest else replay(today)
    drop = float(before.metrics["accuracy"]) - float(after.metrics["accuracy"])
    figures = {
        "accuracy": {"before": round(before.metrics["accuracy"], 6), "after": round(after.metrics["accuracy"], 6)},
        "loss": {"before": round(before.metrics["loss"], 6), "after": round(after.metrics["loss"], 6)},
        "drop": round(drop, 6),
        "threshold": settings.max_accuracy_drop,
        "rows": after.rows,
        "shots": after.shots,
        "backend": on,
        "calibration": _dates(dict(context.lineage["calibration"]), today),
    }
    verdict = Verdict.DRIFT if drop > settings.max_accuracy_drop else Verdict.OK
    return Check(CheckKind.REPLAY, verdict, figures, key=today.digest)


_BASELINES: Memo[Any] = Memo(256)


def data_check(context: Context) -> Check:
    from controller.engine.training import data, summary

    spec = context.spec
    if not spec.dataset.source.startswith("file:"):
        return Check(CheckKind.DATA, Verdict.NOT_APPLICABLE, {}, "a builtin dataset does not change")
    recorded = context.lineage.get("dataSummary")
    if not isinstance(recorded, dict):
        return Check(
            CheckKind.DATA,
            Verdict.NOT_RUN,
            {},
            f"version {context.champion.number} records no summary of its training data",
        )
    settings = context.monitoring.data or DataCheck()
    table = data.load(spec.dataset, context.repo_root, spec.circuit.qubits)
    split = data.split(spec.dataset, table)
    digest = split.digest(spec.dataset.source)
    trained_on = str(context.lineage.get("datasetDigest", ""))
    figures: dict[str, Any] = {
        "datasetDigest": {"before": trained_on, "after": digest},
        "pValue": settings.p_value,
        "minEffect": settings.min_effect,
    }
    if digest == trained_on:
        figures["features"] = []
        return Check(CheckKind.DATA, Verdict.OK, figures, "the dataset is the one the champion was trained on", digest)
    import numpy as np

    rows = np.vstack([split.x_train, split.x_test])
    features = [str(f) for f in split.features]
    drifts = summary.compare(recorded, rows, features, settings.p_value, settings.min_effect)
    figures["features"] = [d.to_json() for d in drifts]
    moved = [d.feature for d in drifts if d.moved]
    figures["moved"] = moved
    verdict = Verdict.DRIFT if moved else Verdict.OK
    return Check(CheckKind.DATA, verdict, figures, key=digest)


NO_LIVE_SOURCE = (
    "no server to read live accuracy from: qmlops run and qmlops monitor take --serving-url; "
    "the operator reads the model's serving Service"
)


def live_check(context: Context, source: LiveSource | None) -> Check:
    """The champion's accuracy on its labelled feedback against its registered test accuracy."""
    from controller.api.quantummodel import LiveCheck

    settings = context.monitoring.live or LiveCheck()
    champion = context.champion
    reference = champion.metrics.get("accuracy")
    if not isinstance(reference, int | float) or isinstance(reference, bool) or not math.isfinite(reference):
        return Check(CheckKind.LIVE, Verdict.NOT_RUN, {}, f"version {champion.number} records no test accuracy")
    if source is None:
        return Check(CheckKind.LIVE, Verdict.NOT_RUN, {}, NO_LIVE_SOURCE)
    try:
        live = source(context.namespace, context.name, settings.window)
    except LiveUnavailable as err:
        return Check(CheckKind.LIVE, Verdict.NOT_RUN, {}, scrub(_describe(err)))
    key = f"{context.namespace}/{context.name}"
    if live.model != key:
        return Check(CheckKind.LIVE, Verdict.NOT_RUN, {}, "the server answered for another model")
    figures: dict[str, Any] = {
        "labelled": live.labelled,
        "minSamples": settings.min_samples,
        "window": min(live.window, settings.window),
        "servedVersion": live.version,
    }
    if live.version != champion.number:
        served = "no version" if live.version is None else f"version {live.version}"
        return Check(
            CheckKind.LIVE,
            Verdict.NOT_RUN,
            figures,
            f"the server serves {served}, the champion is version {champion.number} (not swapped in yet)",
        )
    accuracy = live.accuracy
    if accuracy is None or live.labelled < settings.min_samples:
        return Check(
            CheckKind.LIVE,
            Verdict.NOT_RUN,
            figures,
            f"not enough samples: {live.labelled} labelled rows of version {champion.number}, "
            f"at least {settings.min_samples} needed",
        )
    drop = float(reference) - accuracy
    figures.update(
        {
            "accuracy": {"before": round(float(reference), 6), "after": round(accuracy, 6)},
            "correct": live.correct,
            "drop": round(drop, 6),
            "threshold": settings.max_accuracy_drop,
        }
    )
    verdict = Verdict.DRIFT if drop > settings.max_accuracy_drop else Verdict.OK
    # acted on once per champion: its feedback is what drifted
    return Check(CheckKind.LIVE, verdict, figures, key=f"feedback:version-{champion.number}")


# --- one model's report ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    namespace: str
    name: str
    version: int | None
    checks: list[Check]
    checked_at: str
    error: str = ""  # the model could not be checked at all
    note: str = ""  # why nothing was checked (no champion yet)

    @property
    def verdict(self) -> Verdict:
        verdicts = {c.verdict for c in self.checks}
        if Verdict.DRIFT in verdicts:
            return Verdict.DRIFT
        if self.error or Verdict.NOT_RUN in verdicts:
            return Verdict.NOT_RUN
        if Verdict.OK in verdicts:
            return Verdict.OK
        return Verdict.NOT_APPLICABLE

    def check(self, kind: CheckKind) -> Check | None:
        return next((c for c in self.checks if c.kind is kind), None)

    @property
    def drifted(self) -> list[Check]:
        return [c for c in self.checks if c.verdict is Verdict.DRIFT]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": f"{self.namespace}/{self.name}",
            "version": self.version,
            "checkedAt": self.checked_at,
            "verdict": self.verdict.value,
            "checks": [c.to_json() for c in self.checks],
        }
        if self.error:
            out["error"] = self.error
        if self.note:
            out["note"] = self.note
        return out

    def gauges(self) -> dict[str, float]:
        """The figures exported as gauges: ESP now and at training, replay and live accuracy."""
        out: dict[str, float] = {}
        calibration, replay, live = (self.check(k) for k in (CheckKind.CALIBRATION, CheckKind.REPLAY, CheckKind.LIVE))
        if calibration is not None and "esp" in calibration.figures:
            out["esp"] = float(calibration.figures["esp"]["after"])
            out["esp_at_training"] = float(calibration.figures["esp"]["before"])
        if replay is not None and "accuracy" in replay.figures:
            out["replay_accuracy"] = float(replay.figures["accuracy"]["after"])
        if live is not None and "accuracy" in live.figures:
            out["live_accuracy"] = float(live.figures["accuracy"]["after"])
            out["live_samples"] = float(live.figures["labelled"])
        return {k: v for k, v in out.items() if math.isfinite(v)}
