"""The dataset-bound benchmark still runs; its figures are printed by the benchmark, never asserted here."""

from __future__ import annotations

from benchmarks import dataset_bound as bench


def test_the_benchmark_loads_what_fits_and_refuses_what_does_not() -> None:
    fits = bench.measure(1_000)
    assert (fits["rows"], fits["message"]) == (1_000, None)
    over = bench.measure(100_002)
    assert over["rows"] is None
    assert over["message"] == "dataset.source: file:data/big.csv has more than 100,000 data rows, the limit"
