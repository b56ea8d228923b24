"""The training data's per-feature summary, and a later dataset compared with it.

At training, each raw feature of the training rows is summarised by its count and a few quantiles:
never a row. Later, a changed dataset is compared feature by feature with a two-sample
Kolmogorov-Smirnov test against that summary: the reference distribution is the piecewise-linear CDF
through the recorded quantiles, the statistic D is the largest gap between it and the new data's
empirical CDF, and the p-value is the asymptotic Kolmogorov distribution at sqrt(n m / (n + m)) D.
A feature moved when p < ``p_value`` and D >= ``min_effect``: the effect-size floor keeps large files
(whose p-values are tiny for any gap) from alarming on noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from controller.engine.training.errors import DatasetError

QUANTILES = tuple(k / 20 for k in range(21))  # 0, 5%, ..., 100%


def summarize(x: np.ndarray, features: list[str]) -> dict[str, Any]:
    """Per feature: the number of rows and the values at QUANTILES."""
    x = np.asarray(x, dtype=float)
    out: dict[str, Any] = {"quantiles": list(QUANTILES), "features": {}}
    for k, name in enumerate(features):
        column = x[:, k]
        out["features"][name] = {
            "count": int(column.size),
            "values": [round(float(v), 12) for v in np.quantile(column, QUANTILES)],
        }
    return out


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    statistic: float  # KS D
    p_value: float
    rows_before: int
    rows_after: int
    median_before: float
    median_after: float
    moved: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "ksStatistic": round(self.statistic, 6),
            "pValue": float(f"{self.p_value:.6g}"),
            "rows": {"before": self.rows_before, "after": self.rows_after},
            "median": {"before": round(self.median_before, 6), "after": round(self.median_after, 6)},
            "moved": self.moved,
        }


def compare(
    summary: dict[str, Any], x: np.ndarray, features: list[str], p_value: float, min_effect: float
) -> list[FeatureDrift]:
    """Each feature of ``x`` against ``summary``; a feature missing from the summary is an error."""
    probabilities = np.asarray(summary.get("quantiles") or QUANTILES, dtype=float)
    recorded = summary.get("features") or {}
    out = []
    for k, name in enumerate(features):
        entry = recorded.get(name)
        if not isinstance(entry, dict) or len(entry.get("values") or []) != len(probabilities):
            raise DatasetError(f"lineage.dataSummary: the training summary has no feature {name!r}")
        reference = np.asarray(entry["values"], dtype=float)
        n = int(entry["count"])
        column = np.sort(np.asarray(x[:, k], dtype=float))
        m = column.size
        statistic = _ks_statistic(reference, probabilities, column)
        effective = n * m / (n + m) if n and m else 0.0
        p = _kolmogorov_sf(math.sqrt(effective) * statistic)
        moved = p < p_value and statistic >= min_effect
        out.append(
            FeatureDrift(
                name,
                statistic,
                p,
                n,
                m,
                float(np.interp(0.5, probabilities, reference)),
                float(np.median(column)),
                moved,
            )
        )
    return out


def _ks_statistic(reference: np.ndarray, probabilities: np.ndarray, sample: np.ndarray) -> float:
    """sup |F_new - F_ref| where F_ref is piecewise linear through (quantile value, probability)."""
    m = sample.size
    if m == 0:
        return 0.0
    points = np.unique(np.concatenate([sample, reference]))
    before = np.searchsorted(sample, points, side="left") / m  # F_new just below each point
    at = np.searchsorted(sample, points, side="right") / m  # F_new at each point
    ref_at = _reference_cdf(reference, probabilities, points)
    return float(max(np.max(np.abs(at - ref_at)), np.max(np.abs(before - ref_at))))


def _reference_cdf(reference: np.ndarray, probabilities: np.ndarray, points: np.ndarray) -> np.ndarray:
    # equal quantile values (a discrete feature) collapse into one step at their highest probability
    values, last = np.unique(reference[::-1], return_index=True)
    highest = probabilities[::-1][last]
    cdf = np.interp(points, values, highest, left=0.0, right=1.0)
    return np.asarray(cdf, dtype=float)


def _kolmogorov_sf(t: float) -> float:
    from scipy.special import kolmogorov

    return float(kolmogorov(t)) if t > 0 else 1.0
