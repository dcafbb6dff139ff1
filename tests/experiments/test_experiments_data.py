"""The data experiments end to end: ``reproduce_all --quick`` into a temporary folder, then
the files it wrote and a few invariants checked from them."""

import json

import numpy as np
import pytest

import specdiff as sd
from specdiff import datasets

pytest.importorskip("sklearn")
pytest.importorskip("mnist1d")
if not hasattr(sd, "design_schedule"):
    pytest.skip("specdiff.design_schedule not available yet", allow_module_level=True)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    from experiments import reproduce_all

    root = tmp_path_factory.mktemp("results")
    reproduce_all.main(["--quick", "--only", *reproduce_all.DATA, "--out", str(root)])
    return root


def _load(root, name):
    folder = root / name
    for f in ("config.json", "results.json", "table.md"):
        assert (folder / f).is_file(), f"{name}/{f} missing"
    assert list(folder.glob("*.png")) or name == "reproduce_all", f"{name}: no figure"
    return json.loads((folder / "results.json").read_text())


def test_sanity_spectral_equals_full_covariance(results):
    r = _load(results, "sanity")
    lam = np.asarray(r["spectral"])
    assert r["summary"]["max_abs_err_full"] <= 1e-8 * lam.max()
    assert r["summary"]["max_mc_err_in_std_errs"] < 6
    assert abs(r["w2_spectral"] - r["w2_full_covariance_eigenbasis"]) < 1e-9
    # The general sqrtm formula carries round-off from Σ0's ~1e-30 eigenvalues.
    assert abs(r["w2_spectral"] - r["w2_full_covariance"]) < 1e-3 * r["w2_spectral"]


def test_per_eigenvalue(results):
    r = _load(results, "per_eigenvalue")
    rel = np.asarray(r["trajectory"]["relative_variance_error"])
    assert rel.shape == (20, 10) and np.isfinite(rel).all()
    assert np.asarray(r["per_eigenvalue"]["log_snr"]).shape == (50, 10)


def test_synthetic_designed_never_worse_than_heuristics(results):
    r = _load(results, "synthetic_schedules")
    assert set(r["steps"]) == {"10", "112"}
    for row in r["steps"].values():
        assert row["designed"] <= row["best_heuristic_value"] * (1 + 1e-6)
    assert set(r["fits"]) == {"chen_cosine", "chen_sigmoid"}
    sch = sd.load_schedule(results / "synthetic_schedules" / "schedule_S112.json")
    assert sch.num_steps == 112


def test_real_data_summary(results):
    r = _load(results, "real_data")
    assert set(r["summary"]) == set(datasets.DATASETS)
    for name, per_s in r["summary"].items():
        assert set(per_s) == {"10"}
        for row in per_s.values():
            assert row["w2_spectral"] <= row["w2_best_heuristic"] * (1 + 1e-6), name
    table = (results / "real_data" / "table.md").read_text()
    assert "digits" in table and "patches_color" in table
