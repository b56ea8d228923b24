"""What a dataset over its bound costs: the issue's 8 MB CSV of 2 million rows, loaded as ``qmlops plan``
and the trainer load it (``data.load``), in a process of its own so that its memory is its own.

    .venv/bin/python benchmarks/dataset_bound.py [--rows 2000000]

Printed: the message, the seconds ``data.load`` took, and how much its peak resident memory grew. Before
the bound, this file took 9 to 18 s and 770 MB on every plan; with it, it is refused at row 100,001
(0.3 to 0.7 s, 19 MB), on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

LOAD = """
import json, resource, sys, time
from pathlib import Path
from controller.api.quantummodel import Dataset
from controller.engine.training import data
from controller.engine.training.errors import DatasetError
dataset = Dataset.model_validate({"source": "file:data/big.csv", "target": "label"})
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
try:
    rows = len(data.load(dataset, Path(sys.argv[1]), 2).y)
    message = None
except DatasetError as err:
    rows, message = None, str(err)
seconds = time.perf_counter() - started
grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({"rows": rows, "message": message, "seconds": round(seconds, 3), "grewMiB": round(grew, 1)}))
"""


def measure(rows: int) -> dict[str, Any]:
    """Load a CSV of ``rows`` rows of two one-digit cells (4 bytes a row) in a fresh process."""
    with tempfile.TemporaryDirectory() as folder:
        repo = Path(folder)
        (repo / "data").mkdir()
        (repo / "data" / "big.csv").write_text("x,label\n" + "1,0\n2,1\n" * (rows // 2))
        done = subprocess.run(
            [sys.executable, "-c", LOAD, str(repo)], capture_output=True, text=True, check=True, cwd=ROOT
        )
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    args = parser.parse_args()
    print(json.dumps(measure(args.rows), indent=2))


if __name__ == "__main__":
    main()
