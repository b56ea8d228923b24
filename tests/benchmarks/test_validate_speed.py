"""The validate-speed benchmark still runs: one timed run of a case, its figures formatted. Figures are
printed by the benchmark, never asserted here (wall-clock belongs to the benchmark)."""

from __future__ import annotations

from benchmarks import validate_speed as bench


def test_the_benchmark_times_a_case_and_names_what_it_imported() -> None:
    case = bench.Case("the demo's 2 specs", ("specs/",), True)
    result = bench.measure(case, runs=1)
    assert result.exit_code == 0
    assert len(result.seconds) == 1 and result.seconds[0] > 0
    assert "qiskit_ibm_runtime" not in result.imported
    text = bench.format_result(result)
    assert "x the 0.5 s reference" in text and "heavy imports: " in text


def test_the_qasm_case_has_no_target_and_imports_the_importer() -> None:
    (qasm,) = [c for c in bench.CASES if not c.target]
    imported = bench.heavy_imports(qasm.paths)
    assert {"qiskit", "qiskit_qasm3_import"} <= set(imported)
    assert "qiskit_ibm_runtime" not in imported
