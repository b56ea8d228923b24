"""How the long-running commands (``qmlops operator``, ``qmlops serve``) log: one line per record, with
control characters escaped (names and messages come from specs and Git), and the libraries that narrate
every transpiler pass kept to their warnings."""

from __future__ import annotations

import logging

from controller.engine.text import EscapingFormatter

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# INFO from these is one line per transpiler pass or HTTP request: noise in an operator's or server's log
CHATTY = ("qiskit", "qiskit_ibm_runtime", "qiskit_aer", "stevedore", "urllib3", "aiohttp.access")


def configure(verbose: bool = False) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(EscapingFormatter(FORMAT))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    if not verbose:
        for name in CHATTY:
            logging.getLogger(name).setLevel(logging.WARNING)
