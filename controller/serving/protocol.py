"""The Open Inference Protocol v2 (KServe, Seldon, Triton) as JSON documents: inference requests read
and checked, responses, model metadata and error bodies. No HTTP here.

A model takes one input tensor ``input`` of shape ``[rows, features]`` (FP64, FP32, FP16 or an integer
type; ``data`` flat in row-major order or nested), or one tensor per feature named by the feature,
each of shape ``[rows]``. It answers two outputs: ``label`` (BYTES, ``[rows]``) and ``probabilities``
(FP64, ``[rows, classes]``, columns in the order of the ``classes`` parameter).
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from controller.engine.prediction import MAX_ROWS, InputError, LoadedModel, Predictions, check_rows

PLATFORM = "qmlops-qiskit"
INPUT = "input"
NUMERIC = {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
MAX_ID = 128
_ID = re.compile(r"^[A-Za-z0-9._:/@+=-]+$")
MAX_DEPTH = 3


class ProtocolError(Exception):
    """A request the protocol refuses: the HTTP status and a message naming the problem."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_body(message: str) -> dict[str, str]:
    return {"error": message}


def model_name(model: LoadedModel) -> str:
    return f"{model.namespace}.{model.name}"


def request_id(body: dict[str, Any]) -> str | None:
    value = body.get("id")
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_ID or not _ID.match(value):
        raise ProtocolError(400, f"id: expected up to {MAX_ID} characters of letters, digits and ._:/@+=-")
    return value


def read_inputs(body: Any, features: list[str]) -> np.ndarray:
    """The rows of an inference request, checked: (rows, features) finite numbers."""
    if not isinstance(body, dict):
        raise ProtocolError(400, "the request body must be a JSON object with inputs")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ProtocolError(400, "inputs: expected a non-empty list of tensors")
    if len(inputs) == 1 and isinstance(inputs[0], dict) and inputs[0].get("name") not in features:
        x = _tensor(inputs[0], "inputs[0]", width=len(features))
    else:
        by_name: dict[str, np.ndarray] = {}
        for k, tensor in enumerate(inputs):
            column = _tensor(tensor, f"inputs[{k}]", width=None)
            name = tensor["name"]
            if name not in features:
                raise ProtocolError(400, f"inputs[{k}].name: {shown(name)} is not a feature ({', '.join(features)})")
            if name in by_name:
                raise ProtocolError(400, f"inputs[{k}].name: {name} is given twice")
            by_name[name] = column
        missing = [f for f in features if f not in by_name]
        if missing:
            raise ProtocolError(
                400, f"inputs: missing the feature{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
            )
        lengths = {len(v) for v in by_name.values()}
        if len(lengths) != 1:
            raise ProtocolError(400, "inputs: the feature tensors have different numbers of rows")
        x = np.column_stack([by_name[f] for f in features])
    try:
        return check_rows(x, features, "inputs")
    except InputError as err:
        raise ProtocolError(400, str(err)) from None


def _tensor(tensor: Any, where: str, *, width: int | None) -> np.ndarray:
    """One tensor's data as (rows, width) or, with ``width`` None, as one column (rows,)."""
    if not isinstance(tensor, dict):
        raise ProtocolError(400, f"{where}: expected a tensor object with name, shape, datatype and data")
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise ProtocolError(400, f"{where}.name: expected a string")
    datatype = tensor.get("datatype")
    if datatype not in NUMERIC:
        raise ProtocolError(400, f"{where}.datatype: {shown(datatype)}: the model takes numbers (FP64, FP32, INT64...)")
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or len(shape) > 2
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    ):
        raise ProtocolError(400, f"{where}.shape: expected [rows, features] or [rows]")
    expected = [shape[0], width] if width is not None else [shape[0]]
    if width is not None and len(shape) == 1:
        raise ProtocolError(400, f"{where}.shape: expected [rows, {width}], got {shape}")
    if shape != expected:
        raise ProtocolError(400, f"{where}.shape: expected [rows, {width}] (one column per feature), got {shape}")
    if shape[0] > MAX_ROWS:
        raise ProtocolError(413, f"{where}.shape: {shape[0]} rows; the limit is {MAX_ROWS}")
    values = _flatten(tensor.get("data"), f"{where}.data", datatype.startswith(("INT", "UINT")))
    if len(values) != math.prod(shape):
        raise ProtocolError(400, f"{where}.data: {len(values)} values do not fill the shape {shape}")
    array = np.asarray(values, dtype=float)
    return array.reshape(shape)


def _flatten(data: Any, where: str, integers: bool) -> list[float]:
    if not isinstance(data, list):
        raise ProtocolError(400, f"{where}: expected a list of numbers")
    out: list[float] = []
    stack: list[tuple[list[Any], int]] = [(data, 0)]
    while stack:
        items, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ProtocolError(400, f"{where}: nested deeper than the shape")
        for item in reversed(items):
            if isinstance(item, list):
                stack.append((item, depth + 1))
                continue
            if isinstance(item, bool) or not isinstance(item, int | float):
                raise ProtocolError(400, f"{where}: holds a {type(item).__name__}, expected numbers")
            if integers and not float(item).is_integer():
                raise ProtocolError(400, f"{where}: holds a fraction in an integer tensor")
            out.append(float(item))
        if len(out) > MAX_ROWS * 64:
            raise ProtocolError(413, f"{where}: too many values")
    out.reverse()
    return out


def shown(value: Any) -> str:
    text = str(value)
    return repr(text[:32] + "…") if len(text) > 32 else repr(text)


def infer_response(model: LoadedModel, predictions: Predictions, rid: str) -> dict[str, Any]:
    rows, classes = predictions.probabilities.shape
    return {
        "model_name": model_name(model),
        "model_version": str(model.version),
        "id": rid,
        "parameters": {"classes": [str(c) for c in predictions.classes]},
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [rows], "data": [str(x) for x in predictions.labels]},
            {
                "name": "probabilities",
                "datatype": "FP64",
                "shape": [rows, classes],
                "data": [float(p) for p in predictions.probabilities.ravel()],
            },
        ],
    }


def metadata(model: LoadedModel, versions: list[int]) -> dict[str, Any]:
    features = model.features
    return {
        "name": model_name(model),
        "versions": [str(v) for v in versions],
        "platform": PLATFORM,
        "inputs": [{"name": INPUT, "datatype": "FP64", "shape": [-1, len(features)]}],
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(model.classes)]},
        ],
        "parameters": {
            "version": model.version,
            "features": features,
            "classes": [str(c) for c in model.classes],
            "registeredAt": model.registered_at,
        },
    }
