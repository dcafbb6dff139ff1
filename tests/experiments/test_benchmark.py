"""Smoke test of ``python -m experiments.benchmark --quick``: it runs end to end and its
rows carry what the tables are built from (timings themselves are not asserted)."""

import json

from experiments import benchmark


def test_benchmark_quick_runs(tmp_path):
    benchmark.main(["--quick", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    engine = [r for r in rows if r["section"] == "engine"]
    assert engine and all(r["fast_ms"] > 0 and r["scan_ms"] > 0 for r in engine)
    # The fast objective and the step-by-step scan compute the same number.
    for r in engine:
        tol = 1e-4 if r["dtype"] == "float32" else 1e-10
        assert r["value_rel_diff"] < tol and r["grad_rel_diff"] < 100 * tol, r
    per = [r for r in rows if r["what"].startswith("per-eigenvalue")]
    assert len(per) == 1 and per[0]["all_not_worse_than_heuristic"]
    assert 0 < per[0]["w2_ratio_sweep_over_loop"]["median"] < 1.01
    assert (tmp_path / "table.md").read_text().count("\n") == len(rows) + 2
