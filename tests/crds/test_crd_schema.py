"""The generated CRDs as an apiserver sees them: valid CustomResourceDefinitions, structural schemas,
every status field declared, CEL cost within budget, defaults and printer columns that make sense."""

from __future__ import annotations

import copy
import typing
from typing import Any

import kubernetes_validate
import pytest
from kubernetes_validate.utils import all_versions
from pydantic import BaseModel

from controller.api import QuantumModelStatus, QuantumPipelineStatus
from controller.api.crd import CRD_RESOURCES, SchemaError, crd_by_kind, structural_schema
from tests.support.schema import (
    _as_draft4,
    _cel_problems,
    apply_defaults,
    cel_rules,
    cost_problems,
    prune,
    rule_cost,
    structural_problems,
    version_schema,
)

KINDS = ("QuantumModel", "QuantumPipeline")
# The oldest Kubernetes whose CRD API has the rules' fieldPath (1.28) and the newest the package knows.
K8S_VERSIONS = ("1.28", all_versions()[-1])


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_kubernetes_validate_accepts_the_crd(kind: str, version: str) -> None:
    kubernetes_validate.validate(crd_by_kind(kind), version, strict=True)


def test_kubernetes_before_1_28_lacks_the_rules_field_path() -> None:
    # Why docs/crds.md says 1.28: kubectl's strict field validation would refuse the CRD before it.
    with pytest.raises(kubernetes_validate.ValidationError, match="fieldPath"):
        kubernetes_validate.validate(crd_by_kind("QuantumModel"), "1.27", strict=True)


def test_kubernetes_validate_refuses_a_broken_crd() -> None:
    broken = crd_by_kind("QuantumModel")
    broken["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["minimum"] = "zero"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)
    broken = crd_by_kind("QuantumModel")
    broken["spec"]["names"]["shortName"] = ["qm"]  # a typo: strict mode refuses unknown fields
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("kind", KINDS)
def test_identity_subresources_and_columns(kind: str) -> None:
    crd = crd_by_kind(kind)
    names = crd["spec"]["names"]
    assert crd["metadata"]["name"] == f"{names['plural']}.qmlops.io"
    assert crd["spec"]["group"] == "qmlops.io" and crd["spec"]["scope"] == "Namespaced"
    assert names["listKind"] == f"{kind}List" and names["singular"] == kind.lower()
    assert names["shortNames"] == [{"QuantumModel": "qm", "QuantumPipeline": "qp"}[kind]]
    assert names["categories"] == ["qmlops"]
    (version,) = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    expected = {
        "QuantumModel": ["Phase", "Champion", "Accuracy", "Backend", "Age"],
        "QuantumPipeline": ["Model", "Phase", "Last Run", "Age"],
    }[kind]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == expected


@pytest.mark.parametrize("kind", KINDS)
def test_printer_columns_point_at_fields_of_their_type(kind: str) -> None:
    crd = crd_by_kind(kind)
    schema = version_schema(crd)
    for column in crd["spec"]["versions"][0]["additionalPrinterColumns"]:
        path = column["jsonPath"]
        if path == ".metadata.creationTimestamp":
            assert column["type"] == "date"
            continue
        node = schema
        for part in path.strip(".").split("."):
            if part.endswith("[-1:]"):
                node = node["properties"][part.removesuffix("[-1:]")]["items"]
            else:
                node = node.get("properties", {}).get(part) or node["additionalProperties"]
        assert node["type"] == column["type"], path


@pytest.mark.parametrize("kind", KINDS)
def test_the_schema_is_structural(kind: str) -> None:
    assert structural_problems(version_schema(crd_by_kind(kind))) == []


@pytest.mark.parametrize(
    ("schema", "complaint"),
    [
        ({"type": "object", "properties": {"a": {}}}, "<root>.a: no type"),
        ({"type": "object", "additionalProperties": False}, "additionalProperties: false is not allowed"),
        ({"type": "object", "properties": {"a": {"$ref": "#/x"}}}, "<root>.a: $ref"),
        (
            {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "string"}},
            "mutually exclusive",
        ),
        ({"type": "object", "anyOf": [{"type": "object"}]}, "type is not allowed inside a logical junctor"),
        (
            {"type": "object", "anyOf": [{"properties": {"b": {"type": "string"}}}]},
            "must also be declared outside",
        ),
        ({"type": "array", "items": {"type": "string"}}, "the root must be of type object"),
        (
            {
                "type": "object",
                "properties": {"l": {"type": "array", "uniqueItems": True, "items": {"type": "string"}}},
            },
            "uniqueItems",
        ),
        ({"type": "object", "patternProperties": {"^a": {"type": "string"}}}, "patternProperties"),
        ({"type": "object", "properties": {"i": {"type": "string", "x-kubernetes-int-or-string": True}}}, "int-or"),
        (
            {"type": "object", "properties": {"metadata": {"type": "object", "properties": {"labels": {}}}}},
            "only restrictions on name and generateName",
        ),
        (
            {
                "type": "object",
                "properties": {
                    "l": {
                        "type": "array",
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["k"],
                        "items": {"type": "object", "properties": {"k": {"type": "string"}}},
                    }
                },
            },
            "must be required or have a default",
        ),
    ],
)
def test_the_structural_checker_catches(schema: dict[str, Any], complaint: str) -> None:
    assert any(complaint in p for p in structural_problems(schema)), structural_problems(schema)


def test_a_type_with_no_structural_equivalent_is_refused_not_guessed() -> None:
    class Odd(BaseModel):
        value: int | list[str]

    with pytest.raises(SchemaError, match=r"Odd\.value"):
        structural_schema(Odd)


class Tree(BaseModel):
    children: list[Tree] = []


def test_a_recursive_type_is_refused() -> None:
    with pytest.raises(SchemaError, match=r"Tree\.children\[\]: recursive type Tree"):
        structural_schema(Tree)


@pytest.mark.parametrize("kind", KINDS)
def test_cel_rules_stay_within_the_cost_budget(kind: str) -> None:
    assert cost_problems(version_schema(crd_by_kind(kind))) == []


def test_the_cost_check_bites_on_an_unbounded_list() -> None:
    schema = copy.deepcopy(version_schema(crd_by_kind("QuantumPipeline")))
    del schema["properties"]["spec"]["properties"]["steps"]["items"]["properties"]["dependsOn"]["maxItems"]
    problems = cost_problems(schema)
    assert any("dependsOn" in p and "exceeds" in p for p in problems), problems
    bounded = [r for r in cel_rules(version_schema(crd_by_kind("QuantumPipeline"))) if "dependsOn" in r.rule]
    assert rule_cost(bounded[0]) < 10_000_000


def _defaults(node: dict[str, Any], path: str = "") -> list[tuple[str, Any, dict[str, Any]]]:
    found = [(path, node["default"], node)] if "default" in node else []
    for name, sub in node.get("properties", {}).items():
        found += _defaults(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            found += _defaults(node[key], f"{path}.{key}")
    return found


@pytest.mark.parametrize("kind", KINDS)
def test_defaults_are_valid_and_survive_pruning(kind: str) -> None:
    import jsonschema

    defaults = _defaults(version_schema(crd_by_kind(kind)))
    assert defaults
    for path, value, node in defaults:
        assert value is not None, path
        jsonschema.Draft4Validator(_as_draft4(node)).validate(value)
        assert prune(value, node) == value, path
        # The apiserver also runs the node's CEL rules on a default (with the default's own defaults in).
        assert _cel_problems(apply_defaults(value, node), node, path) == []


# --- every status field is declared (an undeclared one would be pruned by the apiserver) ----------


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _node_for(schema: dict[str, Any], annotation: Any) -> dict[str, Any]:
    """Descend through Optional, list and dict wrappers to the node that describes the model itself."""
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is list:
        return _node_for(schema["items"], args[0])
    if origin is dict:
        return _node_for(schema["additionalProperties"], args[1])
    if len(args) == 1:
        return _node_for(schema, args[0])
    return schema


def _missing_fields(model: type[BaseModel], schema: dict[str, Any], path: str) -> list[str]:
    missing = []
    declared = schema.get("properties", {})
    for name, info in model.model_fields.items():
        alias = info.alias or name
        if alias not in declared:
            missing.append(f"{path}.{alias}")
            continue
        for inner in _models_in(info.annotation):
            missing += _missing_fields(inner, _node_for(declared[alias], info.annotation), f"{path}.{alias}")
    extra = set(declared) - {i.alias or n for n, i in model.model_fields.items()}
    missing += [f"{path}.{e} (in the CRD, not in the type)" for e in sorted(extra)]
    return missing


@pytest.mark.parametrize(
    ("kind", "status"), [("QuantumModel", QuantumModelStatus), ("QuantumPipeline", QuantumPipelineStatus)]
)
def test_every_status_field_is_in_the_crd(kind: str, status: type[BaseModel]) -> None:
    schema = version_schema(crd_by_kind(kind))["properties"]["status"]
    assert _missing_fields(status, schema, "status") == []


def test_a_status_field_left_out_of_the_crd_is_noticed() -> None:
    schema = copy.deepcopy(version_schema(crd_by_kind("QuantumModel"))["properties"]["status"])
    del schema["properties"]["champion"]["properties"]["metrics"]
    assert _missing_fields(QuantumModelStatus, schema, "status") == ["status.champion.metrics"]


def test_crd_resources_cover_every_resource_type() -> None:
    from controller.api import RESOURCES

    # QuantumPolicy is the cluster admins' (cluster-scoped, never in a spec repository): a CRD, not a spec kind
    assert sorted(r.kind for r in CRD_RESOURCES) == sorted([*RESOURCES, "QuantumPolicy"])


def test_quantum_policy_is_cluster_scoped_and_refuses_a_floor_that_contradicts_itself() -> None:
    import pytest
    from pydantic import ValidationError

    from controller.api.quantumpolicy import QuantumPolicy

    crd = crd_by_kind("QuantumPolicy")
    assert crd["spec"]["scope"] == "Cluster" and crd["spec"]["names"]["plural"] == "quantumpolicies"
    body = {"kind": "QuantumPolicy", "metadata": {"name": "floor"}, "spec": {"floor": {"pinRequiresApproval": True}}}
    with pytest.raises(ValidationError, match=r"floor\.pinRequiresApproval asks for approvals"):
        QuantumPolicy.model_validate(body)
    with pytest.raises(ValidationError, match="packs"):
        QuantumPolicy.model_validate({**body, "spec": {"packs": ["no-such-pack"]}})
