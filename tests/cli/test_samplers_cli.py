"""Every sampler on the command line: parameter flags, --process flow, equal-NFE designs.

Designs use the configuration of ``test_cli.py`` (synthetic AᵀA, d = 8, W2, VP, float64)
with DDIM at S = 4 where possible, so the optimiser compiles few new loops; values are
checked against the library (``output_moments`` + ``divergence``) on the same levels.
"""

import contextlib
import io
import json

import numpy as np
import pytest

import specdiff as sd
from specdiff import samplers, spectra
from specdiff.cli.main import main
from tests.cli.test_cli import SPEC, S, run


def w2(spec, schedule, sampler, metric="w2"):
    return float(sd.divergence(spec, sd.output_moments(spec, schedule, sampler), metric))


@pytest.fixture(scope="module")
def cosine_file(tmp_path_factory):
    """A cosine schedule file with no sampler recorded (evaluate defaults to DDIM)."""
    path = tmp_path_factory.mktemp("cli_samplers") / "cosine.json"
    sd.save_schedule(path, sd.schedules.cosine(S))
    return path


@pytest.mark.parametrize(
    "name, flags",
    [
        ("euler", {"--s-churn": 0.5, "--s-tmin": 0.1, "--s-tmax": 20.0, "--s-noise": 1.1}),
        ("dpmpp_2m_sde", {"--eta": 0.5, "--solver-type": "heun"}),
        ("lms", {"--order": 2}),
        ("euler_ancestral", {"--eta": 0.3}),
    ],
)
def test_sampler_flags_reach_the_sampler(name, flags, cosine_file, capsys):
    argv = ["evaluate", cosine_file, *SPEC, "--sampler", name, "--json"]
    rc, out, err = run([*argv, *(x for kv in flags.items() for x in kv)], capsys)
    assert rc == 0, err
    params = {k[2:].replace("-", "_"): v for k, v in flags.items()}
    sampler = samplers.from_name(name, **params)
    res = json.loads(out)
    assert res["sampler"] == sampler.to_dict()
    expected = w2(spectra.synthetic_ata(d=8), sd.load_schedule(cosine_file), sampler)
    np.testing.assert_allclose(res["value"], expected, rtol=1e-12)


def test_evaluate_uses_recorded_sampler_unless_flags_override(tmp_path, capsys):
    path = tmp_path / "ea.json"
    recorded = samplers.from_name("euler_ancestral", eta=0.5, s_noise=1.2)
    sd.save_schedule(path, sd.schedules.cosine(S), sampler=recorded)
    spec, sch = spectra.synthetic_ata(d=8), sd.load_schedule(path)
    cases = [
        ([], recorded),
        (["--eta", "0.2"], samplers.from_name("euler_ancestral", eta=0.2, s_noise=1.2)),
        (["--sampler", "euler"], samplers.from_name("euler")),
    ]
    for flags, sampler in cases:
        rc, out, err = run(["evaluate", path, *SPEC, "--json", *flags], capsys)
        assert rc == 0, err
        res = json.loads(out)
        assert res["sampler"] == sampler.to_dict(), flags
        np.testing.assert_allclose(res["value"], w2(spec, sch, sampler), rtol=1e-12)
    rc, out, _ = run(["evaluate", path, *SPEC], capsys)
    assert "sampler euler_ancestral(eta=0.5, s_noise=1.2)" in out


def test_process_flow(cosine_file, capsys):
    rc, out, _ = run(["evaluate", cosine_file, *SPEC, "--process", "flow", "--json"], capsys)
    assert rc == 0
    res = json.loads(out)
    flow = sd.load_schedule(cosine_file).to_flow()
    assert res["process"] == "flow" and flow.process == "flow"
    expected = w2(spectra.synthetic_ata(d=8), flow, samplers.DDIM())
    np.testing.assert_allclose(res["value"], expected, rtol=1e-12)
    # The same levels run as flow differ from VP (start N(0, (1 + σ0)²) vs N(0, 1 + σ0²)).
    rc, out, _ = run(["evaluate", cosine_file, *SPEC, "--json"], capsys)
    assert not np.isclose(json.loads(out)["value"], res["value"])


def test_design_sde_schedule_evaluates_to_recorded_value(tmp_path, capsys):
    # S = 2 (the first step draws noise with η; compiles in a third less time than S = 3).
    S = 2
    path = tmp_path / "sde.json"
    argv = ["design", *SPEC, "--steps", S, "--sampler", "dpmpp_2m_sde", "--eta", 0.5]
    rc, _, err = run([*argv, "--out", path, "--json"], capsys)
    assert rc == 0, err
    sch, rec = sd.load_schedule(path, with_metadata=True)
    sampler = samplers.from_name("dpmpp_2m_sde", eta=0.5)
    assert rec["sampler"] == sampler.to_dict() and rec["nfe"] == sampler.nfe(S)
    rc, out, _ = run(["evaluate", path, *SPEC, "--json"], capsys)
    assert rc == 0
    res = json.loads(out)
    assert res["sampler"] == rec["sampler"]
    np.testing.assert_allclose(res["value"], rec["value"], rtol=1e-12)
    np.testing.assert_allclose(res["value"], w2(spectra.synthetic_ata(d=8), sch, sampler))
    assert rec["value"] <= min(rec["heuristics"].values()) + 1e-12


NFE = 4  # DDIM: S = 4 (the loop test_cli.py compiles); Heun: S = 2 (NFE 3)


@pytest.fixture(scope="module")
def equal_nfe(tmp_path_factory):
    """``design --sampler ddim,heun --nfe 4 --out base.json``: (folder, printed text)."""
    folder = tmp_path_factory.mktemp("nfe")
    argv = ["design", *SPEC, "--sampler", "ddim,heun", "--nfe", NFE, "--out", folder / "base.json"]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main([str(a) for a in argv]) == 0
    return folder, buf.getvalue()


def test_design_equal_nfe_one_file_per_sampler(equal_nfe):
    folder, out = equal_nfe
    assert sorted(p.name for p in folder.iterdir()) == ["base_ddim.json", "base_heun.json"]
    values = {}
    for name in ("ddim", "heun"):
        sampler = samplers.from_name(name)
        sch, rec = sd.load_schedule(folder / f"base_{name}.json", with_metadata=True)
        steps = sampler.steps_for_nfe(NFE)
        assert sch.num_steps == steps and rec["steps"] == steps
        assert rec["nfe"] == sampler.nfe(steps) <= NFE
        assert rec["sampler"] == sampler.to_dict()
        assert rec["value"] <= min(rec["heuristics"].values()) + 1e-12
        np.testing.assert_allclose(rec["value"], w2(spectra.synthetic_ata(d=8), sch, sampler))
        values[name] = rec["value"]
        assert f"sampler {name}, process vp, S = {steps}, NFE = {sampler.nfe(steps)}" in out
    ranked = sorted(values, key=values.get)
    summary = out.strip().splitlines()[-1]
    assert summary.startswith(f"samplers by designed W2 at NFE <= {NFE}: {ranked[0]} ")
    assert summary.index(ranked[0]) < summary.index(f"< {ranked[1]} ")


def test_compare_samplers_at_equal_nfe(equal_nfe, capsys):
    folder, _ = equal_nfe
    rc, out, err = run(["compare", *SPEC, "--sampler", "ddim,heun", "--nfe", NFE, "--json"], capsys)
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["budget"] == "nfe" and doc["values"] == [NFE]
    assert [p["name"] for p in doc["samplers"]] == ["ddim", "heun"]
    for per in doc["samplers"]:
        sampler = samplers.from_name(per["name"])
        assert per["steps"] == [sampler.steps_for_nfe(NFE)]
        assert per["nfe"] == [sampler.nfe(per["steps"][0])]
        row = per["table"][str(NFE)]
        rec = json.loads((folder / f"base_{per['name']}.json").read_text())
        np.testing.assert_allclose(row["spectral"]["w2"], rec["value"], rtol=1e-9)
    rc, out, _ = run(["compare", *SPEC, "--sampler", "ddim,heun", "--nfe", NFE], capsys)
    assert rc == 0
    assert f"NFE={NFE} (S=2)" in out and "the designed schedules at equal NFE" in out
    last = [ln.split() for ln in out.strip().splitlines()[-2:]]
    assert {ln[0] for ln in last} == {"ddim", "heun"}


def test_help_lists_the_sampler_flags(capsys):
    rc, out, _ = run(["design", "--help"], capsys)
    assert rc == 0
    for flag in ("--nfe", "--eta", "--s-noise", "--s-churn", "--s-tmin", "--s-tmax"):
        assert flag in out
    for flag in ("--solver-type", "--order", "dpmpp_2m_sde", "flow"):
        assert flag in out


HEUN_MIN_NFE = samplers.from_name("heun").nfe(1)

BAD = {
    "unknown_in_list": (["design", "--sampler", "heun,magic"], "unknown sampler 'magic'"),
    "repeated": (["design", "--sampler", "heun,heun"], "sampler 'heun' is given twice"),
    "param_not_taken": (
        ["design", "--sampler", "dpmpp_2m", "--eta", "0.5"],
        "sampler 'dpmpp_2m' takes no parameter 'eta'; allowed: none",
    ),
    "param_not_taken_in_list": (
        ["design", "--sampler", "euler_ancestral,heun", "--eta", "0.5"],
        "sampler 'heun' takes no parameter 'eta'; allowed: s_churn, s_tmin, s_tmax, s_noise",
    ),
    "solver_type_not_taken": (
        ["design", "--solver-type", "heun"],
        "sampler 'ddim' takes no parameter 'solver_type'; allowed: eta",
    ),
    "bad_solver_type": (
        ["design", "--sampler", "dpmpp_2m_sde", "--solver-type", "rk4"],
        "solver_type must be one of 'midpoint', 'heun', got 'rk4'",
    ),
    "bad_order": (["design", "--sampler", "lms", "--order", "0"], "order"),
    "eta_range": (["design", "--eta", "2"], "eta must lie in [0, 1]"),
    "nfe_and_steps": (["design", "--nfe", "8", "--steps", "4"], "not allowed with argument"),
    "nfe_too_small": (
        ["design", "--sampler", "heun", "--nfe", str(HEUN_MIN_NFE - 1)],
        f"nfe must be an integer >= {HEUN_MIN_NFE} for heun",
    ),
    "process": (["design", "--process", "edm"], "unknown process 'edm'"),
    "evaluate_two": (["evaluate", "FILE", "--sampler", "heun,euler"], "takes one sampler"),
    "evaluate_param": (["evaluate", "FILE", "--s-churn", "1"], "takes no parameter 's_churn'"),
    "compare_nfe_steps": (["compare", "--nfe", "4", "--steps", "4"], "not allowed with"),
    "compare_nfe_small": (["compare", "--sampler", "heun", "--nfe", "0"], "nfe must be"),
    "compare_param": (["compare", "--sampler", "heun", "--order", "2"], "no parameter 'order'"),
    "export_two": (["export", "FILE", "--sampler", "heun,euler"], "takes one sampler"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_sampler_input_one_line_exit_2_nothing_written(case, cosine_file, tmp_path, capsys):
    argv, message = BAD[case]
    argv = [cosine_file if a == "FILE" else a for a in argv]
    out = tmp_path / "existing.json"
    out.write_text("keep me\n")
    if argv[0] in ("design", "export"):
        argv = [*argv, "--out", out]
    rc, stdout, err = run([*argv, *SPEC], capsys)
    assert rc == 2
    assert err.startswith("specdiff: error: ") and err.count("\n") == 1, err
    assert message in err
    assert stdout == ""
    assert out.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.json"]
