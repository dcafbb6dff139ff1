"""Smoke test of ``python -m experiments.fid_check --quick`` (its docstring's CI path):
shipped denoisers, sampling, metrics, table and figures, end to end."""

import json
import math

from experiments import fid_check


def test_fid_check_quick_runs(tmp_path):
    fid_check.main(["--quick", "--out", str(tmp_path)])
    res = json.loads((tmp_path / "results.json").read_text())["results"]
    assert set(res) == {"digits", "patches_gray"}
    for ds in res.values():
        assert set(ds["steps"]) == {"5", "10"}
        for rows in ds["steps"].values():
            assert {"spectral", "linear", "cosine", "edm"} <= set(rows)
            for row in rows.values():
                assert all(math.isfinite(v) for v in row["fd_pixel"] + row["fd_classifier"])
            # The free spectral design is never worse, in its own Gaussian W2, than the
            # heuristics it is compared with (spectral_tr has fixed endpoints: excluded).
            w2 = {name: row["gaussian_w2"] for name, row in rows.items()}
            others = [v for name, v in w2.items() if name not in ("spectral", "spectral_tr")]
            assert w2["spectral"] <= min(others) * (1 + 1e-6)
    for name in ("table.md", "fid_check.png", "samples_digits.png", "samples_patches_gray.png"):
        assert (tmp_path / name).stat().st_size > 0
