"""Kubernetes resource quantities (``500m``, ``2``, ``1Gi``), and a spec's ``training.resources``
against the cluster's ceiling (the operator's ``--job-max-cpu`` and ``--job-max-memory``): a spec
asking for more is refused at admission, with the field named."""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

_QUANTITY = re.compile(r"^([0-9]{1,9}(?:\.[0-9]{1,6})?)(m|k|Ki|M|Mi|G|Gi|T|Ti)?$")
_SUFFIX = {
    None: Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
}
RESOURCES = ("cpu", "memory")


class QuantityError(ValueError):
    pass


def parse(text: str) -> Decimal:
    """A quantity's value in its base unit (cores, bytes)."""
    found = _QUANTITY.fullmatch(str(text))
    if found is None:
        raise QuantityError(f"{str(text)[:20]!r} is not a quantity such as 500m, 2, 512Mi or 4Gi")
    try:
        return Decimal(found.group(1)) * _SUFFIX[found.group(2)]
    except InvalidOperation:
        raise QuantityError(f"{str(text)[:20]!r} is not a quantity") from None


def ceiling_problems(spec: Mapping[str, Any], ceiling: Mapping[str, str]) -> list[tuple[str, str]]:
    """(field path, message) for each of ``spec.training.resources`` above ``ceiling``."""
    resources = ((spec.get("training") or {}) if isinstance(spec, Mapping) else {}).get("resources") or {}
    if not isinstance(resources, Mapping):
        return []
    problems = []
    for name in RESOURCES:
        asked, most = resources.get(name), ceiling.get(name)
        if asked is None or most is None:
            continue
        try:
            above = parse(str(asked)) > parse(most)
        except QuantityError:
            continue  # the schema says what is wrong with it
        if above:
            problems.append(
                (f"spec.training.resources.{name}", f"{str(asked)[:20]} is above this cluster's ceiling of {most}")
            )
    return problems
