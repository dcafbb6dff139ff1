"""The ``specdiff`` command line, run in-process (``main([...])``) on a small spectrum.

Every design here uses the same configuration (synthetic AᵀA with d = 8, S = 4, DDIM, W2,
VP, float64), so the optimiser compiles once for the whole module.
"""

import contextlib
import io
import json
import subprocess
import sys

import numpy as np
import pytest

import specdiff as sd
from specdiff import export, spectra
from specdiff.cli.main import main

SPEC = ["--synthetic", "ata", "--dim", "8"]
S = 4


def run(argv, capsys):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def designed(tmp_path_factory):
    """A schedule designed once by ``specdiff design --json``: (path, printed JSON)."""
    path = tmp_path_factory.mktemp("cli") / "designed.json"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["design", *SPEC, "--steps", str(S), "--out", str(path), "--json"])
    assert rc == 0
    return path, json.loads(buf.getvalue())


def test_design_writes_schedule_and_json(designed):
    path, printed = designed
    sch, rec = sd.load_schedule(path, with_metadata=True)
    assert sch.num_steps == S and sch.process == "vp"
    assert printed["out"] == str(path)
    assert rec["objective"] == "w2" and rec["sampler"] == {"name": "ddim", "eta": 0.0}
    assert rec["spectrum"]["d"] == 8
    assert rec["value"] <= min(rec["heuristics"].values()) + 1e-12
    # The recorded value is the exact W2 of the written levels.
    spec = spectra.synthetic_ata(d=8)
    w2 = float(sd.divergence(spec, sd.output_moments(spec, sch, sd.samplers.DDIM()), "w2"))
    np.testing.assert_allclose(rec["value"], w2, rtol=1e-9)


def test_design_default_output_and_table(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc, out, _ = run(["design", *SPEC, "--steps", S], capsys)
    assert rc == 0
    assert (tmp_path / "schedule.json").is_file()
    lines = out.splitlines()
    assert lines[0].startswith("spectrum 'synthetic_ata' (d = 8)")
    rows = [ln.split() for ln in lines[3:] if ln and ln.split()[0] in sd.schedules.HEURISTICS]
    assert len(rows) >= len(sd.schedules.HEURISTICS) - 1  # every heuristic defined at S
    assert lines[3].split()[0] == "spectral"  # the best row comes first
    assert lines[-1] == "wrote schedule.json"


def test_design_checkpoint_resumes_and_refuses_other_arguments(tmp_path, capsys):
    ck = tmp_path / "ck"
    base = ["design", *SPEC, "--steps", S, "--json", "--checkpoint", ck]
    rc, out, _ = run([*base, "--out", tmp_path / "a.json"], capsys)
    assert rc == 0 and (ck / "run.json").is_file()
    rc, out2, _ = run([*base, "--out", tmp_path / "b.json"], capsys)  # resumes: same result
    assert rc == 0
    assert json.loads(out2)["levels"] == json.loads(out)["levels"]
    rc, _, err = run([*base[:-3], "--steps", S + 1, "--json", "--checkpoint", ck], capsys)
    assert rc == 2 and "other arguments" in err and err.count("\n") == 1


def test_evaluate_matches_library(designed, capsys):
    path, printed = designed
    rc, out, _ = run(["evaluate", path, *SPEC, "--metric", "kl", "--json"], capsys)
    assert rc == 0
    res = json.loads(out)
    spec = spectra.synthetic_ata(d=8)
    sch = sd.load_schedule(path)
    kl = float(sd.divergence(spec, sd.output_moments(spec, sch, sd.samplers.DDIM()), "kl"))
    np.testing.assert_allclose(res["value"], kl, rtol=1e-9)
    assert res["sampler"] == {"name": "ddim", "eta": 0.0} and res["note"] is None
    rc, out, _ = run(["evaluate", path, *SPEC], capsys)
    assert rc == 0 and f"W2 = {printed['value']:.4g}" in out
    # --process ve: the same levels run as VE (start N(0, σ0²) instead of N(0, 1)).
    rc, out, _ = run(["evaluate", path, *SPEC, "--process", "ve", "--json"], capsys)
    mom = sd.output_moments(spec, sch.to_ve(), sd.samplers.DDIM())
    np.testing.assert_allclose(json.loads(out)["value"], float(sd.divergence(spec, mom, "w2")))
    assert json.loads(out)["process"] == "ve"


def test_evaluate_notes_other_spectrum(designed, capsys):
    rc, out, _ = run(["evaluate", designed[0], "--synthetic", "powerlaw:1.5", "--dim", 8], capsys)
    assert rc == 0 and "designed for spectrum 'synthetic_ata'" in out


def test_compare_json_and_table(capsys):
    rc, out, _ = run(["compare", *SPEC, "--steps", S, "--json"], capsys)
    assert rc == 0
    table = json.loads(out)["table"][str(S)]
    assert set(table) >= {"spectral", "cosine", "edm"}
    w2 = {n: v["w2"] for n, v in table.items()}
    assert w2["spectral"] <= min(w2.values()) + 1e-12
    assert all(v["kl"] is not None and v["kl"] > 0 for v in table.values())
    rc, out, _ = run(["compare", *SPEC, "--steps", S], capsys)
    assert rc == 0 and "KL(data‖model)" in out and "spectral" in out and "*" in out


def test_compare_kl_undefined_for_zero_eigenvalue(tmp_path, capsys):
    f = tmp_path / "low_rank.npz"
    lam = np.r_[spectra.synthetic_ata(d=8).eigenvalues[:-1], 0.0]
    # Same d and name as SPEC: the design's compiled loop is reused (the name is static).
    sd.save_spectrum(f, sd.Spectrum(lam, name="synthetic_ata"))
    rc, out, _ = run(["compare", "--spectrum", f, "--steps", S, "--json"], capsys)
    assert rc == 0
    table = json.loads(out)["table"][str(S)]
    assert all(v["kl"] is None for v in table.values())


def test_export_diffusers(designed, tmp_path, capsys):
    path, _ = designed
    out = tmp_path / "diffusers.json"
    rc, printed, _ = run(["export", path, "--format", "diffusers", "--out", out], capsys)
    assert rc == 0 and f"wrote {out}" in printed
    d = json.loads(out.read_text())
    sig = np.asarray(d["sigmas"])
    assert sig.shape == (S + 1,) and sig[-1] == 0 and (np.diff(sig) < 0).all()
    ref = export.to_diffusers(sd.load_schedule(path))
    np.testing.assert_allclose(sig, ref["sigmas"], rtol=1e-12)
    assert d["timesteps"] == [int(t) for t in ref["timesteps"]]
    assert all(isinstance(t, int) for t in d["timesteps"])
    assert d["train_schedule"]["num_train_timesteps"] == 1000


def test_export_to_stdout_and_k_diffusion_npy(designed, tmp_path, capsys):
    path, _ = designed
    rc, out, _ = run(["export", path, "--format", "k-diffusion"], capsys)
    assert rc == 0
    sig = np.asarray(json.loads(out)["sigmas"])
    np.testing.assert_allclose(sig, export.to_k_diffusion(sd.load_schedule(path)), rtol=1e-12)
    npy = tmp_path / "sigmas.npy"
    rc, _, _ = run(["export", path, "--format", "k-diffusion", "--out", npy], capsys)
    assert rc == 0
    np.testing.assert_allclose(np.load(npy), sig, rtol=1e-12)


def test_export_interpolated_reports_loss(designed, tmp_path, capsys):
    path, _ = designed
    out = tmp_path / "s6.json"
    argv = ["export", path, "--format", "json", "--steps", 6, *SPEC, "--out", out]
    rc, printed, _ = run(argv, capsys)
    assert rc == 0
    assert "original      S =    4" in printed and "interpolated  S =    6" in printed
    sch6, rec = sd.load_schedule(out, with_metadata=True)
    assert sch6.num_steps == 6
    spec = spectra.synthetic_ata(d=8)
    w2 = float(sd.divergence(spec, sd.output_moments(spec, sch6, sd.samplers.DDIM()), "w2"))
    np.testing.assert_allclose(rec["value"], w2, rtol=1e-9)
    assert rec["loss"]["original"]["steps"] == S
    assert rec["interpolated_from"]["steps"] == S
    # The interpolation keeps both end levels of the source schedule.
    src = np.asarray(sd.load_schedule(path).log_snr)
    np.testing.assert_allclose(np.asarray(sch6.log_snr)[[0, -1]], src[[0, -1]], rtol=1e-12)


def test_plot_writes_three_pngs(designed, tmp_path, capsys):
    out_dir = tmp_path / "figs"
    argv = ["plot", designed[0], *SPEC, "--loss-steps", S, "--out-dir", out_dir, "--json"]
    rc, out, _ = run(argv, capsys)
    assert rc == 0
    files = json.loads(out)["files"]
    assert sorted(p.rsplit("/", 1)[-1] for p in files) == [
        "loss_vs_steps.png",
        "schedules.png",
        "transfer.png",
    ]
    for p in files:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def bad_files(tmp_path):
    no_eig = tmp_path / "no_eigenvalues.npz"
    np.savez(no_eig, lam=np.ones(3))
    non_monotone = tmp_path / "non_monotone.json"
    non_monotone.write_text(json.dumps({"process": "vp", "levels": [0.5, 0.2, 0.9]}))
    zero = tmp_path / "zero.npz"
    sd.save_spectrum(zero, sd.Spectrum([1.0, 0.5, 0.0]))
    return {"NO_EIG": no_eig, "NON_MONOTONE": non_monotone, "ZERO": zero}


BAD = {
    "steps0": (["design", "--steps", "0"], "steps must be an integer >= 1"),
    "steps_neg": (["design", "--steps", "-3"], "steps must be an integer >= 1"),
    "sampler": (["design", "--sampler", "magic"], "unknown sampler 'magic'"),
    "metric": (["design", "--metric", "fid"], "unknown metric 'fid'"),
    "dataset": (["design", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    "no_eigenvalues": (["design", "--spectrum", "NO_EIG"], "no 'eigenvalues'"),
    "kl_zero_eig": (["design", "--metric", "kl", "--spectrum", "ZERO"], "zero eigenvalue"),
    "synthetic": (["design", "--synthetic", "white"], "unknown synthetic spectrum"),
    "two_sources": (["design", "--dataset", "digits", *SPEC[:2]], "not allowed with"),
    "non_monotone_export": (["export", "NON_MONOTONE"], "strictly increasing"),
    "format": (["export", "NON_MONOTONE", "--format", "onnx"], "unknown format 'onnx'"),
    "export_steps0": (["export", "NON_MONOTONE", "--steps", "0"], "steps must be"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_one_line_exit_2_nothing_overwritten(case, bad_files, tmp_path, capsys):
    argv, message = BAD[case]
    out = tmp_path / "existing.json"
    out.write_text("keep me\n")
    argv = [bad_files.get(a, a) for a in argv] + ["--out", out]
    rc, stdout, err = run(argv, capsys)
    assert rc == 2
    assert err.startswith("specdiff: error: ") and err.count("\n") == 1, err
    assert message in err
    assert stdout == ""
    assert out.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize(
    "argv, message",
    [
        (["evaluate", "NON_MONOTONE"], "strictly increasing"),
        (["evaluate", "missing.json"], "does not exist"),
        (["compare", "--steps", "5,0"], "steps must be an integer >= 1"),
        (["compare", "--sampler", "magic"], "unknown sampler 'magic'"),
        (["plot", "NON_MONOTONE", "--out-dir", "figs"], "strictly increasing"),
        (["plot", "--heuristics", "cosine,magic", "--out-dir", "figs"], "unknown heuristic"),
        ([], "give a command"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_other_commands(argv, message, bad_files, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc, stdout, err = run([bad_files.get(a, a) for a in argv], capsys)
    assert rc == 2
    assert err.startswith("specdiff: error: ") and err.count("\n") == 1, err
    assert message in err and stdout == ""
    assert not (tmp_path / "figs").exists()


def test_module_help_subprocess():
    res = subprocess.run(
        [sys.executable, "-m", "specdiff", "--help"], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    for cmd in ("design", "evaluate", "compare", "export", "plot"):
        assert cmd in res.stdout
