"""The qmlops image with IBM Quantum stood in, for the kubelet stand-in's pods: ``qmlops`` itself, with
tests/training/standin.py's Runtime installed (fake devices in local testing mode, each primitive job
billed 1.5 QPU seconds as IBM would bill it), so that a Job's training on an ``ibm:`` backend runs
offline and spends what the operator then has to account for. Run as ``python ibm_image.py ARGS``."""

from __future__ import annotations

import sys
from pathlib import Path

SECONDS_PER_JOB = 1.5


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the pod runs in a folder of its own
    from controller.cli.main import main as qmlops
    from tests.training.standin import installed

    with installed(seconds_per_job=SECONDS_PER_JOB):
        return qmlops(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
