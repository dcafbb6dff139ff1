"""Smoke test of ``python -m experiments.sampler_comparison --quick`` (its CI path): design,
heuristics, table, figure, and the resumable cells."""

import json
import math

import numpy as np
import pytest

import specdiff as sd
from experiments import sampler_comparison


def test_sampler_comparison_quick_runs_and_resumes(tmp_path, capsys):
    sampler_comparison.main(["--quick", "--out", str(tmp_path)])
    res = json.loads((tmp_path / "results.json").read_text())
    cells = res["spectra"]["synthetic_ata"]["samplers"]
    assert set(cells) == {"ddim", "euler", "heun"}
    for name, per in cells.items():
        c = per["10"]
        smp = sd.samplers.from_name(name)
        assert c["steps"] == smp.steps_for_nfe(10) and c["nfe_used"] <= 10
        assert c["steps"] == (5 if name == "heun" else 10)  # Heun: 2S − 1 evaluations
        values = [c["designed"]["w2"], c["designed"]["kl"]]
        values += [v for h in c["heuristics"].values() for v in h.values()]
        assert all(math.isfinite(v) for v in values)
        best = min(h["w2"] for h in c["heuristics"].values())
        assert c["best_heuristic"]["w2"]["value"] == best
        assert c["gain_w2"] == pytest.approx(best / c["designed"]["w2"])
        # The design's first level is pinned at ᾱ_999 of the linear-β schedule.
        np.testing.assert_allclose(
            c["designed"]["log_snr"][0],
            np.log(sd.schedules.ddpm_alphas_bar()[-1] / (1 - sd.schedules.ddpm_alphas_bar()[-1])),
            rtol=1e-9,
        )
    # Euler is VE DDIM, and a VP DDIM run equals it (SPEC §3, §11): the closed-form DDIM
    # path and the affine-map Euler path give the same numbers for every heuristic.
    for h, v in cells["ddim"]["10"]["heuristics"].items():
        assert cells["euler"]["10"]["heuristics"][h]["w2"] == pytest.approx(v["w2"], rel=1e-9)
    for name in ("table.md", "gain.png", "config.json"):
        assert (tmp_path / name).stat().st_size > 0
    # A rerun reads the finished cells instead of recomputing them.
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cells").iterdir()}
    capsys.readouterr()
    sampler_comparison.main(["--quick", "--out", str(tmp_path)])
    assert "(reused)" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cells").iterdir()} == stamps
    assert res["spectra"]["synthetic_ata"]["ode_floor_w2"] > 0
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["spectra"] == res["spectra"] and again["cells_reused"] == 3


def test_sampler_comparison_rejects_unknown_names(tmp_path):
    with pytest.raises(SystemExit) as e:
        sampler_comparison.main(["--samplers", "nope", "--out", str(tmp_path)])
    assert e.value.code == 2


def test_ode_floor_is_the_limit_of_many_ddim_steps():
    """The start-mismatch floor equals the W2 of DDIM (a first-order ODE solver) from the same
    VP start at σ_0 in the limit of many steps (8000 log-SNR-uniform steps: within 1%)."""
    rng = np.random.default_rng(0)
    spec = sd.Spectrum(np.exp(rng.normal(size=8)), rng.normal(size=8))
    a0 = sampler_comparison.ALPHA_BAR_FIRST
    sch = sd.Schedule.from_log_snr(np.linspace(np.log(a0 / (1 - a0)), 30.0, 8000), "vp")
    w2 = float(sd.divergence(spec, sd.output_moments(spec, sch, sd.samplers.DDIM()), "w2"))
    floor = sampler_comparison.ode_floor(spec, sampler_comparison.SIGMA0)
    assert floor == pytest.approx(w2, rel=1e-2)
    assert sampler_comparison.SIGMA0 == pytest.approx(float(sch.sigma[0]), rel=1e-9)
