"""The ``qmlops`` command line: a thin shell that parses arguments and calls the engine."""
