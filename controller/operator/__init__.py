"""The kopf operator: thin adapters between the Kubernetes API and the engine (``controller.engine``)."""
