"""The engine: what a reconcile decides, as plain typed Python. Imports neither kopf nor the CLI."""
