"""Smoke tests of ``python -m experiments.benchmark --quick``, one section each: it runs end to
end and its rows carry what the tables are built from (timings themselves are not asserted)."""

import json

import jax
import numpy as np
import pytest

from experiments import benchmark


def _run(tmp_path, section):
    benchmark.main(["--quick", "--only", section, "--out", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    rows = results["rows"]
    table = (tmp_path / "table.md").read_text()
    lines = table.splitlines()
    # First lines: the command and the machine; then one table line per row.
    assert lines[0] == "# Benchmark" and f"--only {section}" in lines[2]
    env = results["environment"]
    assert lines[4].startswith("machine: ") and env["cpu_model"] in lines[4]
    for key in ("cpu_count", "memory_gib", "python", "jax", "jaxlib", "backend", "devices"):
        assert env[key], key
    assert env["load_1min_start"] >= 0 and env["load_1min_end"] >= 0
    assert lines[4].endswith(f"; {env['dispatch']} dispatch")
    n_tables = sum(line.startswith("|---") for line in lines)
    assert sum(line.startswith("| ") for line in lines) == len(rows) + n_tables
    return rows


def _spread_ok(r):
    return all(r[f"{k}_q25_ms"] <= r[f"{k}_ms"] <= r[f"{k}_q75_ms"] for k in ("fast", "scan"))


@pytest.mark.parametrize("section", ["engine", "samplers"])
def test_fast_and_straightforward_compute_the_same_number(tmp_path, section):
    rows = _run(tmp_path, section)
    assert all(r["section"] == section and r["fast_ms"] > 0 and r["scan_ms"] > 0 for r in rows)
    assert all(_spread_ok(r) for r in rows), rows  # spread recorded for every row
    for r in rows:
        # float32: the engine and the scan each round to ~4e-4 of float64 on DPM++ 2M SDE
        # at S = 100 (tests/core/test_adjoint.py checks the engine against float64).
        tol = 1e-3 if r["dtype"] == "float32" else 1e-10
        assert r["value_rel_diff"] < tol and r["grad_rel_diff"] < 100 * tol, r


def test_memory_section_blocked_holds_fewer_temporaries(tmp_path):
    rows = _run(tmp_path, "memory")
    assert all(r["temp_mib_blocked"] < r["temp_mib_unblocked"] for r in rows), rows
    assert all(r["paired"] and _spread_ok(r) for r in rows), rows


def test_design_section_runs(tmp_path):
    rows = _run(tmp_path, "design")
    per = [r for r in rows if r["what"].startswith("per-eigenvalue")]
    assert len(per) == 1 and per[0]["all_not_worse_than_heuristic"]
    assert 0 < per[0]["w2_ratio_sweep_over_loop"]["median"] < 1.01


def test_sweep_section_streams_every_problem(tmp_path):
    rows = _run(tmp_path, "sweep")
    assert [r["d"] for r in rows] == [512, 2048] and all(r["S"] == 10 for r in rows)
    for r in rows:
        assert sum(r["stop_reasons"].values()) == r["d"], r
        assert set(r["stop_reasons"]) <= {"converged", "stalled", "budget"}, r
        assert r["all_not_worse_than_heuristic"] and r["seconds"] > 0, r
        item = 4 if r["dtype"] == "float32" else 8
        assert r["result_schedules_mib"] == r["d"] * r["S"] * item / 2**20
        assert r["peak_rss_growth_mib"] is not None  # Linux: VmHWM can be reset
    assert "Per-eigenvalue sweep, streamed" in (tmp_path / "table.md").read_text()


def test_scaling_section_memory_and_bandwidth_bound(tmp_path):
    rows = _run(tmp_path, "scaling")
    assert {r["sampler"] for r in rows} == {"ddim", "heun"}
    for r in rows:
        assert r["value_rel_diff"] < 1e-4 and r["grad_rel_diff"] < 1e-2, r
        assert _spread_ok(r) and r["n"] >= 3 and r["speedup_cold"] > 0, r
        d, S = r["d"], r["S"]
        assert r["min_bytes"] == 4 * (2 * d + S) + 4 * (1 + S)
        for key in ("memory_bytes_fast", "memory_bytes_scan"):
            mem = r[key]
            assert mem["argument"] >= 4 * (2 * d + S) and mem["temp"] > 0  # λ, m, ρ at least
            assert mem["peak"] == mem["temp"] + mem["argument"] + mem["output"] - mem["alias"]
        assert r["bandwidth_gb_per_s"] > 0
        assert r["floor_ms"] > 0 and r["ceiling"] > 0
        np.testing.assert_allclose(
            r["fast_bound_fraction"] * r["fast_ms"], r["bound_ms"], rtol=1e-12
        )


def test_paired_times_the_second_call_of_each_run(monkeypatch):
    """Runs of two calls alternate (fast, slow, slow, fast, …); the second call of a run is
    the timed one and the first is kept as the cold time."""
    calls = []

    def fast():
        pass

    def slow():
        pass

    def fake_call(fn, args):  # cold: 3× (fast) or 2× (slow) its warm time
        cold = not calls or calls[-1] is not fn
        calls.append(fn)
        return (1.0 if fn is fast else 10.0) * ((3.0 if fn is fast else 2.0) if cold else 1.0)

    monkeypatch.setattr(benchmark, "_call", fake_call)
    p = benchmark.paired(fast, slow, reps=3, min_time=0.0, warmup=False)
    assert calls == [fast, fast, slow, slow, slow, slow, fast, fast, fast, fast, slow, slow]
    assert p["fast"]["median"] == 1.0 and p["slow"]["median"] == 10.0
    assert p["fast_cold"]["median"] == 3.0 and p["slow_cold"]["median"] == 20.0
    assert p["ratio"]["median"] == 10.0 and p["ratio_cold"]["median"] == pytest.approx(20 / 3)
    fields = benchmark.pair_fields(p)
    assert fields["speedup"] == 10.0 and fields["speedup_cold"] == pytest.approx(20 / 3)


def test_cold_section_ratios_against_targets(tmp_path):
    rows = _run(tmp_path, "cold")
    assert [r["target"] for r in rows] == [1.2, 2.5]
    for r in rows:
        ratio = r["specdiff_s"]["median"] / r["baseline_s"]["median"]
        assert r["ratio"] == pytest.approx(ratio) and r["meets_target"] == (ratio <= r["target"])
    assert rows[1]["first_run_s"] > 0


def test_scaling_cell_too_big_for_memory_times_the_engine_alone(monkeypatch):
    from experiments import _bench_scaling as sc

    monkeypatch.setattr(sc, "_meminfo_gib", lambda field: 1.0)
    timing = {"timed": benchmark.timed, "paired": benchmark.paired, "stats": benchmark.stats,
              "pair_fields": benchmark.pair_fields}  # fmt: skip
    peaks = iter([1, 10 * 2**30])  # the engine fits, the scan would need 10 GiB of 1 GiB
    zero = {"temp": 0, "argument": 0, "output": 0, "alias": 0}
    monkeypatch.setattr(sc, "memory_bytes", lambda compiled: dict(zero, peak=next(peaks)))
    bw = {"array_mib": 1.0, "gb_per_s": benchmark.stats([10.0]), "time_s": benchmark.stats([1])}
    row = sc._cell("ddim", 64, 10, benchmark.benchmark_spectrum, timing, bw, quick=True)
    assert row["scan_skipped"].startswith("not run: needs 10.0 GiB, 1.0 GiB available")
    assert "fast_skipped" not in row and row["speedup"] is None and row["fast_ms"] > 0
    row["bandwidth"] = bw
    assert "not run" in sc.table([row])


def test_dispatch_is_set_before_the_backend_starts():
    """The timed calls run synchronously unless asked: the mode is set in a fresh process
    (the CPU client reads it when it starts) and the run says which it has."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import jax, jax.numpy; from experiments import benchmark as b; "
        "m = b.set_dispatch({}); jax.numpy.zeros(1); "
        'print(m, jax.config.values["jax_cpu_enable_async_dispatch"])'
    )
    for flag, want in ((False, "synchronous False"), (True, "asynchronous True")):
        out = subprocess.run(
            [sys.executable, "-c", code.format(flag)],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert out.stdout.split() == want.split()
    # In a process that has already computed, the mode can no longer be set, and says so.
    np.asarray(jax.numpy.zeros(1))
    assert benchmark.set_dispatch(False).startswith("unknown")
