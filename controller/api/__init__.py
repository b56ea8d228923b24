"""The resource types: the single source of truth for the CRDs, the validator and the engine."""

from controller.api.common import API_VERSION, GROUP, VERSION
from controller.api.meta import Condition, ConditionStatus, ConditionType, ObjectMeta
from controller.api.quantummodel import Phase, QuantumModel, QuantumModelSpec, QuantumModelStatus
from controller.api.quantumpipeline import QuantumPipeline, QuantumPipelineSpec, QuantumPipelineStatus

RESOURCES = {"QuantumModel": QuantumModel, "QuantumPipeline": QuantumPipeline}

__all__ = [
    "API_VERSION",
    "GROUP",
    "RESOURCES",
    "VERSION",
    "Condition",
    "ConditionStatus",
    "ConditionType",
    "ObjectMeta",
    "Phase",
    "QuantumModel",
    "QuantumModelSpec",
    "QuantumModelStatus",
    "QuantumPipeline",
    "QuantumPipelineSpec",
    "QuantumPipelineStatus",
]
