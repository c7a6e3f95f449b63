"""benchmarks/bench_methods.py: it reads the registry (plug-ins included), measures one method in-process, and
prints ratios to the supervised row."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from arco.methods import get_method, list_methods
from test_config import PLUGIN

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_methods.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_methods", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_registered_2d_method_is_benchmarked_plugins_included(bench, tmp_path, scratch_registry):
    plugin = tmp_path / "bench_plugin.py"
    plugin.write_text(PLUGIN.replace("plugin-mean-consistency", "plugin-bench-consistency"))
    names = bench.methods_2d((str(plugin),))
    assert names[0] == "supervised" and "plugin-bench-consistency" in names
    assert set(names) == {n for n in list_methods(kind="method") if 2 in get_method(n).spatial_dims}


def test_measure_one_method_in_process(bench):
    row = bench.measure("mean-teacher", size=32, batch=2, iters=1, warmup=1, threads=1, device="cpu")
    assert row["method"] == "mean-teacher" and row["ms"] > 0 and row["peak_mb"] >= 0
    assert 1.5e6 < row["params"] < 2.5e6  # the SSL4MIS UNet (the teacher is not trained)


def test_table_divides_by_the_supervised_row(bench):
    rows = [{"method": "supervised", "ms": 100.0, "peak_mb": 50.0, "params": 1e6},
            {"method": "x", "ms": 250.0, "peak_mb": 75.0, "params": 2e6},
            {"method": "broken", "error": "ValueError: nope"}]  # fmt: skip
    text = bench.table(bench.add_ratios(rows))
    assert "| x | 250 | 2.50 | 75 | 1.50 | 2.00 M |" in text
    assert "| broken | failed: ValueError: nope |" in text
