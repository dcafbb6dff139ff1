"""Bad input raises ValueError naming the problem and what is allowed; files round-trip."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import specdiff as sd


@pytest.mark.parametrize(
    "eigenvalues, match",
    [
        ([1.0, -0.1], ">= 0"),
        ([1.0, np.nan], "finite"),
        ([np.inf], "finite"),
        ([], "non-empty"),
        ([[1.0]], "1-D"),
    ],
)
def test_bad_eigenvalues(eigenvalues, match):
    with pytest.raises(ValueError, match=match):
        sd.Spectrum(eigenvalues)


def test_bad_mean_shape():
    with pytest.raises(ValueError, match="shape"):
        sd.Spectrum([1.0, 2.0], mean=[0.0])


@pytest.mark.parametrize(
    "levels, process, match",
    [
        ([0.5, 0.4], "vp", "strictly increasing"),
        ([0.0, 0.5], "vp", r"\(0, 1\)"),
        ([0.5, 1.0], "vp", r"\(0, 1\)"),
        ([1.0, 2.0], "ve", "strictly decreasing"),
        ([1.0, 0.0], "ve", "> 0"),
        ([], "vp", "empty"),
        ([0.5, np.nan], "vp", "finite"),
        ([0.5], "xx", "process"),
    ],
)
def test_bad_schedules(levels, process, match):
    with pytest.raises(ValueError, match=match):
        sd.Schedule(levels, process)


def test_bad_sampler_and_metric():
    spec = sd.Spectrum([1.0])
    sch = sd.schedules.cosine(3)
    with pytest.raises(ValueError, match="sampler"):
        sd.output_moments(spec, sch, "ddim")
    with pytest.raises(ValueError, match="eta"):
        sd.samplers.DDIM(eta=1.5)
    with pytest.raises(ValueError, match="sampler"):
        sd.samplers.from_name("heun_pp")
    mom = sd.output_moments(spec, sch, sd.samplers.DDIM())
    with pytest.raises(ValueError, match="metric.*allowed"):
        sd.divergence(spec, mom, "tv")
    with pytest.raises(ValueError, match="steps"):
        sd.schedules.cosine(0)


def test_constructible_inside_jit_and_grad():
    @jax.jit
    def f(lam, levels):
        spec = sd.Spectrum(lam)
        sch = sd.Schedule(levels, "vp")
        return sd.divergence(spec, sd.output_moments(spec, sch, sd.samplers.DDIM()), "w2")

    lam = jnp.array([1.0, 0.5])
    levels = jnp.array([0.01, 0.5, 0.9])
    assert np.isfinite(float(f(lam, levels)))
    assert np.all(np.isfinite(jax.grad(f, argnums=1)(lam, levels)))


def test_spectrum_file_round_trip(tmp_path):
    spec = sd.Spectrum(np.array([3.0, 1.0, 1e-9]), mean=np.array([0.5, -0.25, 1e-7]), name="x")
    p = tmp_path / "s.npz"
    sd.save_spectrum(p, spec)
    back = sd.load_spectrum(p)
    assert np.array_equal(back.eigenvalues, spec.eigenvalues)
    assert np.array_equal(back.mean, spec.mean)
    assert back.name == "x"
    assert list(tmp_path.iterdir()) == [p]  # no temporary file left behind


def test_spectrum_file_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        sd.load_spectrum(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", values=np.ones(3))
    with pytest.raises(ValueError, match="no 'eigenvalues'"):
        sd.load_spectrum(tmp_path / "bad.npz")
    (tmp_path / "corrupt.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="corrupt.npz"):
        sd.load_spectrum(tmp_path / "corrupt.npz")


@pytest.mark.parametrize(
    "make",
    [
        lambda: sd.schedules.edm(17),
        lambda: sd.schedules.cosine(33),
        lambda: sd.Schedule.from_log_snr(np.linspace(-20, 25, 9)),
    ],
)
def test_schedule_file_round_trip(tmp_path, make):
    sch = make()
    spec = sd.Spectrum([1.0, 2.0], name="toy")
    p = tmp_path / "sch.json"
    sd.save_schedule(
        p, sch, sampler=sd.samplers.DDIM(0.3), objective="w2", value=0.25, spectrum=spec
    )
    back, rec = sd.load_schedule(p, with_metadata=True)
    assert back.process == sch.process
    assert np.array_equal(np.asarray(back.levels), np.asarray(sch.levels))
    assert np.array_equal(np.asarray(back.log_snr), np.asarray(sch.log_snr))
    for field in (
        "process",
        "levels",
        "sampler",
        "objective",
        "value",
        "spectrum",
        "specdiff_version",
    ):
        assert field in rec
    assert rec["sampler"] == {"name": "ddim", "eta": 0.3}
    assert rec["spectrum"]["d"] == 2 and rec["spectrum"]["sha256"] == spec.digest()


def test_schedule_file_rejects_non_monotone(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps({"process": "vp", "levels": [0.5, 0.2]}))
    with pytest.raises(ValueError, match="bad.json.*strictly increasing"):
        sd.load_schedule(p)


def test_float32_schedule_near_clean_round_trips(tmp_path):
    """ᾱ = sigmoid(20) rounds to 1.0 in float32; the file must still load."""
    sch = sd.Schedule.from_log_snr(jnp.asarray([-5.0, 3.0, 20.0], jnp.float32), "vp")
    assert float(sch.levels[-1]) == 1.0
    sd.save_schedule(tmp_path / "s.json", sch)
    back = sd.load_schedule(tmp_path / "s.json")
    np.testing.assert_allclose(back.log_snr, sch.log_snr, rtol=1e-6)
    assert float(back.levels[-1]) < 1.0
