"""qmlops: a GitOps controller for quantum machine-learning models.

Layout (read top-down):

- ``controller.api``      the resource types (QuantumModel, QuantumPipeline): the single source of truth,
                          from which ``crds/`` is generated.
- ``controller.engine``   plain typed Python that decides: validation, governance, training, the Git
                          registry, promotion. Imports neither kopf nor the CLI.
- ``controller.cli``      the ``qmlops`` command line, a thin shell over the engine.
"""

__version__ = "0.1.0"
