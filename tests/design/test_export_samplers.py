"""Exports that record a sampler (SPEC §9, §11): k-diffusion calls and diffusers plans.

The real diffusers schedulers run these exports in ``test_interop.py``; here the exports
are checked against specdiff itself (no torch needed).
"""

import math

import numpy as np
import pytest

import specdiff as sd
from specdiff import export
from specdiff.core.engine import start_variance

SPEC = sd.Spectrum([6.0, 1.5, 0.3, 0.02], mean=[0.4, -0.2, 0.1, 0.0])
SD_TRAIN = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
SAMPLERS = [
    ("ddim", {}),
    ("ddim", {"eta": 0.5}),
    ("ddpm", {}),
    ("euler", {"s_churn": 1.0, "s_tmin": 0.1}),
    ("euler_ancestral", {"eta": 0.7, "s_noise": 1.1}),
    ("heun", {}),
    ("dpm_2", {}),
    ("dpm_2_ancestral", {}),
    ("dpmpp_2s_ancestral", {}),
    ("dpmpp_2m", {}),
    ("dpmpp_2m_sde", {"solver_type": "heun", "eta": 0.5}),
    ("dpmpp_3m_sde", {}),
    ("lms", {"order": 3}),
]


@pytest.mark.parametrize("name, params", SAMPLERS)
@pytest.mark.parametrize("process", ["vp", "flow"])
def test_k_diffusion_call_is_the_same_sampler(name, params, process):
    """The exported function name and kwargs rebuild a sampler with the same moments."""
    sampler = sd.samplers.from_name(name, **params)
    sch = sd.schedules.karras(5, process=process)
    out = export.to_k_diffusion(sch, sampler)
    assert out["sampler"].startswith("sample_") and out["process"] == process
    rebuilt = sd.samplers.from_name(out["sampler"][len("sample_") :], **out["kwargs"])
    a, b = sd.output_moments(SPEC, sch, sampler), sd.output_moments(SPEC, sch, rebuilt)
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(a.var, b.var, rtol=1e-10)
    np.testing.assert_array_equal(out["sigmas"], export.to_k_diffusion(sch))
    assert all(np.isfinite(v) for v in out["kwargs"].values() if isinstance(v, float))


@pytest.mark.parametrize("process", ["vp", "ve", "flow"])
def test_k_diffusion_start(process):
    sch = sd.schedules.ays(6, "sd15", process=process)
    out = export.to_k_diffusion(sch, sd.samplers.from_name("euler"))
    s0 = out["sigmas"][0]
    want = {"ve": s0, "vp": math.sqrt(1 + s0**2), "flow": 1 + s0}[process]
    np.testing.assert_allclose(out["start_std"], want, rtol=1e-12)
    np.testing.assert_allclose(out["start_std"] ** 2, float(start_variance(sch)), rtol=1e-9)
    assert ("CompVisDenoiser" in out["model"]) == (process == "vp")


EXPORTABLE = [  # (name, params, process, scheduler, method)
    ("ddim", {}, "vp", "EulerDiscreteScheduler", "sigmas"),
    ("euler", {}, "ve", "EulerDiscreteScheduler", "sigmas"),
    ("ddpm", {}, "vp", "EulerAncestralDiscreteScheduler", "override"),
    ("euler_ancestral", {}, "ve", "EulerAncestralDiscreteScheduler", "override"),
    ("heun", {}, "vp", "HeunDiscreteScheduler", "timesteps"),
    ("dpmpp_2m", {}, "vp", "DPMSolverMultistepScheduler", "timesteps"),
    ("dpmpp_2m_sde", {}, "ve", "DPMSolverMultistepScheduler", "timesteps"),
    ("lms", {"order": 3}, "vp", "LMSDiscreteScheduler", "override"),
    ("euler", {}, "flow", "FlowMatchEulerDiscreteScheduler", "sigmas"),
    ("ddim", {}, "flow", "FlowMatchEulerDiscreteScheduler", "sigmas"),
]


@pytest.mark.parametrize("name, params, process, scheduler, method", EXPORTABLE)
def test_diffusers_plan(name, params, process, scheduler, method):
    sampler = sd.samplers.from_name(name, **params)
    sch = sd.schedules.karras(8, process=process)
    out = export.to_diffusers(sch, sampler, spectrum=SPEC, **SD_TRAIN)
    assert (out["scheduler"], out["method"]) == (scheduler, method)
    assert out["sampler"] == sampler.to_dict()
    # The levels it runs: the designed ones, or the nearest training timesteps.
    if method == "timesteps":
        ac = export.train_alphas_cumprod(1000, 0.00085, 0.012, "scaled_linear")
        t = np.asarray(out["set_timesteps"]["timesteps"])
        assert np.all(np.diff(t) < 0) and t.dtype.kind == "i"
        np.testing.assert_allclose(out["sigmas_used"][:-1], np.sqrt((1 - ac[t]) / ac[t]), 1e-12)
        assert any("integer training timesteps" in n for n in out["notes"])
    else:
        np.testing.assert_allclose(out["sigmas_used"], out["sigmas"], rtol=1e-12)
        assert out["exact"]
    used = sd.Schedule(out["levels_used"], process)
    for key, s in (("designed", sch), ("used", used)):
        w2 = float(sd.divergence(SPEC, sd.output_moments(SPEC, s, sampler), "w2"))
        np.testing.assert_allclose(out["divergence"][key], w2, rtol=1e-9)
    # The start: in the scheduler's own coordinates, and said when init_noise_sigma differs.
    s0 = out["sigmas_used"][0]
    coords = {"DPMSolverMultistepScheduler": 1 / math.sqrt(1 + s0**2)}
    coords["FlowMatchEulerDiscreteScheduler"] = 1 / (1 + s0)
    np.testing.assert_allclose(
        out["start_std"], export.start_std(used) * coords.get(scheduler, 1.0), rtol=1e-12
    )
    mismatch = not math.isclose(out["start_std"], out["init_noise_sigma"], rel_tol=1e-6)
    assert mismatch == any("init_noise_sigma" in n for n in out["notes"])
    assert mismatch == (scheduler == "DPMSolverMultistepScheduler" and process == "ve")


def test_diffusers_plan_settings():
    sch = sd.schedules.karras(8, process="vp")
    out = export.to_diffusers(sch, sd.samplers.from_name("dpmpp_2m_sde", solver_type="heun"))
    cfg = out["config"]
    assert cfg["algorithm_type"] == "sde-dpmsolver++" and cfg["solver_type"] == "heun"
    assert cfg["final_sigmas_type"] == "zero" and cfg["use_karras_sigmas"] is False
    assert cfg["beta_schedule"] == "linear" and cfg["num_train_timesteps"] == 1000
    out = export.to_diffusers(sch, sd.samplers.from_name("lms", order=3))
    assert out["step_kwargs"] == {"order": 3}
    assert out["set_timesteps"] == {"num_inference_steps": 8}
    assert len(out["override"]["sigmas"]) == 9 and np.all(np.diff(out["override"]["timesteps"]) < 0)
    ac = export.train_alphas_cumprod()
    out = export.to_diffusers(sch, sd.samplers.from_name("euler"), alphas_cumprod=ac)
    betas = np.asarray(out["config"]["trained_betas"])
    np.testing.assert_allclose(np.cumprod(1 - betas), ac, rtol=1e-12)
    flow = export.to_diffusers(sch.to_flow(), sd.samplers.from_name("euler"))
    assert flow["config"]["shift"] == 1.0 and flow["config"]["use_dynamic_shifting"] is False
    np.testing.assert_allclose(flow["set_timesteps"]["sigmas"], sch.to_flow().levels, 1e-12)


@pytest.mark.parametrize(
    "name, params, process, match",
    [
        ("euler", {"s_churn": 2.0}, "vp", "churn"),
        ("heun", {"s_churn": 2.0}, "vp", "churn"),
        ("ddim", {"eta": 0.5}, "vp", "0 < eta < 1"),
        ("euler_ancestral", {"eta": 0.5}, "vp", "eta = 1"),
        ("dpmpp_2m_sde", {"s_noise": 1.2}, "vp", "s_noise = 1"),
        ("dpm_2", {}, "vp", "no scheduler"),
        ("dpmpp_2s_ancestral", {}, "ve", "no scheduler"),
        ("dpmpp_3m_sde", {}, "vp", "no scheduler"),
        ("heun", {}, "flow", "FlowMatchEulerDiscreteScheduler only"),
    ],
)
def test_diffusers_refuses_what_it_cannot_run(name, params, process, match):
    sch = sd.schedules.karras(6, process=process)
    with pytest.raises(ValueError, match=match) as err:
        export.to_diffusers(sch, sd.samplers.from_name(name, **params))
    assert "Exportable: ddim" in str(err.value) and "k-diffusion" in str(err.value)


def test_quantisation_that_collides_is_refused():
    sch = sd.Schedule(np.array([5.0, 4.999, 1.0]), "ve")
    with pytest.raises(ValueError, match="same training timestep"):
        export.to_diffusers(sch, sd.samplers.from_name("heun"))
    assert not export.to_diffusers(sch)["timesteps_distinct"]  # the old call only reports it
    edm = sd.schedules.edm(10, process="vp")  # σ up to 80: above SD's 14.6 more than once
    with pytest.raises(ValueError, match="training range"):
        export.to_diffusers(edm, sd.samplers.from_name("euler"), **SD_TRAIN)
    one_below = sd.Schedule(np.array([10.0, 1.0, 0.1, 0.01]), "ve")  # 0.01 < SD's 0.029
    out = export.to_diffusers(one_below, sd.samplers.DDIM(), **SD_TRAIN)
    assert any("outside the training range" in n for n in out["notes"])
    with pytest.raises(ValueError, match="beta_schedule"):
        export.to_diffusers(sch, beta_schedule="cosine")
    with pytest.raises(ValueError, match="sampler"):
        export.to_diffusers(sch, "heun")
