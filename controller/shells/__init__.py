"""What the shells (the CLI, the runner, ``qmlops serve`` and the operator) share, and the engine does
not import: clients of the shells' own endpoints and of Git remotes. A shell may import this package;
this package imports no shell (``controller/shells/ruff.toml``)."""
