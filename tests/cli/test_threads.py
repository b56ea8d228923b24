"""Qiskit is loaded on the main thread by every command that trains, evaluates or predicts on worker
threads that come and go (controller/shells/threads.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from controller.cli.main import main

# Three one-thread pools, each shut down before the next, each building and transpiling a circuit:
# with Qiskit 2.6.2 loaded first on the first pool's thread, the second pool's circuit is a SIGSEGV.
POOLS = """
import concurrent.futures
from controller.shells.threads import load_qiskit_on_main_thread
{load}
def build():
    from qiskit import QuantumCircuit, transpile
    circuit = QuantumCircuit(2)
    circuit.h(0)
    circuit.cx(0, 1)
    return transpile(circuit, basis_gates=["cx", "rz", "sx"]).size()
for _ in range(3):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert pool.submit(build).result() > 0
print("built on three pools")
"""


def test_trainings_on_pools_that_come_and_go_survive_once_qiskit_is_loaded_on_the_main_thread() -> None:
    done = subprocess.run(
        [sys.executable, "-c", POOLS.format(load="load_qiskit_on_main_thread()")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.strip() == "built on three pools"


class Loaded(Exception):
    pass


@pytest.mark.parametrize("command", ["run", "operator", "serve", "monitor"])
def test_each_long_lived_command_loads_qiskit_on_the_main_thread_first(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    module = importlib.import_module(f"controller.cli.{command}")

    def load() -> None:
        raise Loaded

    monkeypatch.setattr(module, "load_qiskit_on_main_thread", load)
    with pytest.raises(Loaded):
        main([command, "--repo", "/nonexistent/repository"])
