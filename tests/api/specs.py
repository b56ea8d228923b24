"""Valid specs to start tests from: the examples of docs/DESIGN.md, and a way to change one field."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
DELETE = object()


def design_examples() -> list[str]:
    """The YAML blocks of the design contract, as written there."""
    text = (ROOT / "docs" / "DESIGN.md").read_text(encoding="utf-8")
    return re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)


def design_model_yaml() -> str:
    return next(b for b in design_examples() if "kind: QuantumModel" in b)


def design_pipeline_yaml() -> str:
    return next(b for b in design_examples() if "kind: QuantumPipeline" in b)


def _plain(text: str) -> Any:
    return YAML(typ="safe", pure=True).load(text)


def model() -> dict[str, Any]:
    data: dict[str, Any] = _plain(design_model_yaml())
    return data


def pipeline() -> dict[str, Any]:
    data: dict[str, Any] = _plain(design_pipeline_yaml())
    return data


def changed(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``obj`` with the field at dotted ``path`` set to ``value`` (or removed with
    ``DELETE``); digits index into lists."""
    out = copy.deepcopy(obj)
    node: Any = out
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    key: Any = int(last) if isinstance(node, list) else last
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    return out


def to_yaml(obj: Any) -> str:
    import io

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    buffer = io.StringIO()
    yaml.dump(obj, buffer)
    return buffer.getvalue()
