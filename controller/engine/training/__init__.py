"""The training engine: a QuantumModel spec in, a portable trained model out.

``train`` prepares the data, builds the circuit, transpiles it once for the backend, and lets the
optimizer drive an objective whose every evaluation is one primitive job; a checkpoint after each job
makes it resumable. ``ModelArtifact`` is the result, ``score`` re-evaluates one on other data.
Imported on first use by the reconciler: planning and auditing never load Qiskit through here.
"""

from controller.engine.training.artifact import ModelArtifact
from controller.engine.training.backends import RuntimeFactory, runtime_factory, using_factory
from controller.engine.training.credentials import Credentials, CredentialsError, local_credentials
from controller.engine.training.errors import (
    ArtifactError,
    BudgetExceeded,
    CircuitError,
    DatasetError,
    LimitExceeded,
    RuntimeFailure,
    TrainingError,
    TrainingStopped,
    TrainingTimedOut,
)
from controller.engine.training.evaluation import Evaluation, evaluate
from controller.engine.training.objective import Progress
from controller.engine.training.trainer import dataset_digest, package_versions, release, score, spec_digest, train

__all__ = [
    "ArtifactError",
    "BudgetExceeded",
    "CircuitError",
    "Credentials",
    "CredentialsError",
    "DatasetError",
    "Evaluation",
    "LimitExceeded",
    "ModelArtifact",
    "Progress",
    "RuntimeFactory",
    "RuntimeFailure",
    "TrainingError",
    "TrainingStopped",
    "TrainingTimedOut",
    "dataset_digest",
    "evaluate",
    "local_credentials",
    "package_versions",
    "release",
    "runtime_factory",
    "score",
    "spec_digest",
    "train",
    "using_factory",
]
