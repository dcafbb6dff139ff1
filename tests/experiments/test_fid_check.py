"""Smoke test of ``python -m experiments.fid_check --quick`` (its docstring's CI path):
shipped denoisers, sampling with DDIM and a non-DDIM sampler, metrics, table and figures,
end to end."""

import json
import math

import pytest

import specdiff as sd
from experiments import fid_check


def test_fid_check_quick_runs(tmp_path):
    # One shipped denoiser and one NFE keep it inside the suite's budget (every dataset and
    # budget runs the same code; the quick path runs two budgets, the full experiment four).
    fid_check.main(
        ["--quick", "--datasets", "digits", "--sampler", "ddim,heun", "--nfe", "6"]
        + ["--out", str(tmp_path)]
    )
    out = json.loads((tmp_path / "results.json").read_text())
    res = out["results"]
    assert set(res) == {"digits"}
    assert set(out["samplers"]) == {"ddim", "heun"}
    for ds in res.values():
        assert set(ds) == {"ddim", "heun"}
        for smp, per_sampler in ds.items():
            assert set(per_sampler["steps"]) == {"6"}
            for nfe, rows in per_sampler["steps"].items():
                assert {"spectral", "linear", "cosine", "edm"} <= set(rows)
                for row in rows.values():
                    # S from the NFE budget: DDIM S = NFE; Heun 2S − 1 <= NFE.
                    assert row["steps"] == sd.samplers.from_name(smp).steps_for_nfe(int(nfe))
                    assert all(math.isfinite(v) for v in row["fd_pixel"] + row["fd_classifier"])
                # The free spectral design is never worse, in its own Gaussian W2, than the
                # heuristics it is compared with (spectral_tr has fixed endpoints: excluded).
                w2 = {name: row["gaussian_w2"] for name, row in rows.items()}
                others = [v for name, v in w2.items() if name not in ("spectral", "spectral_tr")]
                assert w2["spectral"] <= min(others) * (1 + 1e-6)
    summary = out["summary"]["digits"]["heun"]["6"]["fd_classifier"]
    assert summary["best_heuristic"] in fid_check.HEURISTIC_NAMES
    assert len(summary["spectral_minus_best_heuristic"]) == 2  # (mean, std) over seeds
    files = ["table.md", "fid_check.png"]
    files += [f"samples_{ds}_{s}.png" for ds in ("digits",) for s in ("ddim", "heun")]
    for name in files:
        assert (tmp_path / name).stat().st_size > 0


def test_fid_check_rejects_unknown_sampler(tmp_path):
    with pytest.raises(SystemExit) as e:
        fid_check.main(["--quick", "--sampler", "ddim,nope", "--out", str(tmp_path)])
    assert e.value.code == 2


def test_quick_keeps_an_explicit_nfe():
    args, _ = fid_check._parse(["--quick"])
    assert args.nfe == [5, 10] and args.seeds == 2 and args.n == 64
    assert fid_check._parse(["--quick", "--nfe", "6"])[0].nfe == [6]
    assert fid_check._parse([])[0].nfe == [5, 10, 20, 50]
