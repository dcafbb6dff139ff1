"""Smoke test: each linear-diffusion experiment's quick path writes its results folder."""

import json

import pytest

from experiments import denoiser_jacobians, emergence_order, power_iteration, spiked_covariance


@pytest.mark.parametrize(
    "module,figure",
    [
        (spiked_covariance, "overlap_vs_noise.png"),
        (emergence_order, "emergence.png"),
        (power_iteration, "power_iteration.png"),
        (denoiser_jacobians, "jacobians.png"),
    ],
)
def test_quick_path(tmp_path, module, figure):
    out = tmp_path / module.__name__.split(".")[-1]
    module.main(["--quick", "--out", str(out)])
    for name in ("config.json", "results.json", "table.md", figure):
        assert (out / name).is_file(), name
    res = json.loads((out / "results.json").read_text())
    assert res and json.loads((out / "config.json").read_text())["quick"] is True
    if module is power_iteration:
        # Time-domain ratio growth against the closed-form H_k(λ̂1)/H_k(λ̂2): the same linear
        # map computed two ways, in float32 over ≤ 10 steps, so agreement to ~1e-5.
        assert res["max_rel_err_ratio_measured_vs_H"] < 1e-3


def test_bad_arguments_exit_2(tmp_path):
    with pytest.raises(SystemExit) as e:
        spiked_covariance.main(["--gammas", "-1", "--out", str(tmp_path)])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        power_iteration.main(["--alpha", "0", "--out", str(tmp_path)])
    assert e.value.code == 2
