"""Smoke tests of ``python -m experiments.benchmark --quick``, one section each: it runs end to
end and its rows carry what the tables are built from (timings themselves are not asserted)."""

import json

import pytest

from experiments import benchmark


def _run(tmp_path, section):
    benchmark.main(["--quick", "--only", section, "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert rows and (tmp_path / "table.md").read_text().count("\n") == len(rows) + 2
    return rows


@pytest.mark.parametrize("section", ["engine", "samplers"])
def test_fast_and_straightforward_compute_the_same_number(tmp_path, section):
    rows = _run(tmp_path, section)
    assert all(r["section"] == section and r["fast_ms"] > 0 and r["scan_ms"] > 0 for r in rows)
    for r in rows:
        tol = 1e-4 if r["dtype"] == "float32" else 1e-10
        assert r["value_rel_diff"] < tol and r["grad_rel_diff"] < 100 * tol, r


def test_memory_section_blocked_holds_fewer_temporaries(tmp_path):
    rows = _run(tmp_path, "memory")
    assert all(r["temp_mib_blocked"] < r["temp_mib_unblocked"] for r in rows), rows


def test_design_section_runs(tmp_path):
    rows = _run(tmp_path, "design")
    per = [r for r in rows if r["what"].startswith("per-eigenvalue")]
    assert len(per) == 1 and per[0]["all_not_worse_than_heuristic"]
    assert 0 < per[0]["w2_ratio_sweep_over_loop"]["median"] < 1.01
