"""The exports run by the real diffusers schedulers give the moments specdiff computes.

Each export is used as ``docs/exports.md`` says: the scheduler is built from ``config``,
``set_timesteps`` is called with the exported arguments (then ``override`` applied), and
the scheduler's own ``scale_model_input``/``step`` loop runs with the exact Gaussian
denoiser as its model (ε prediction of a VP model; velocity for flow matching), per
eigen-direction (the data covariance is diagonal here). The run is exact, not Monte Carlo:
with the data mean m and a zero start the output is the mean; a unit start with m = 0 gives
the response H to the start noise; unit noise at step k alone (``variance_noise``, or the
scheduler's ``randn_tensor`` replaced) gives that step's noise response r_k; then
Var = (H·start_std)² + Σ_k r_k². diffusers computes in float32: agreement to ~1e-5.

Needs the ``interop`` extra (torch, diffusers); skipped without it.
"""

import numpy as np
import pytest

import specdiff as sd
from specdiff import export

diffusers = pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

LAM = np.array([9.0, 1.0, 0.2, 0.01])
MEAN = np.array([0.5, -1.0, 0.3, 0.1])
S = 6
SD_TRAIN = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}


def _model(flow, lam, m):
    """The exact model: ε̂ (VP input x/√(1 + σ²)) or, for flow, v̂ = ε̂ − x̂0 (input x_t)."""

    def model(inp, level):
        if flow:
            sigma = level / (1 - level)
            x = inp / (1 - level)
        else:
            sigma = level
            x = inp * torch.sqrt(1 + sigma**2)
        denoised = m + lam / (lam + sigma**2) * (x - m)
        eps = (x - denoised) / sigma
        return eps - denoised if flow else eps

    return model


def _build(exp):
    scheduler = getattr(diffusers, exp["scheduler"])(**exp["config"])
    scheduler.set_timesteps(**exp["set_timesteps"])
    if exp["override"] is not None:
        scheduler.sigmas = torch.tensor(exp["override"]["sigmas"], dtype=torch.float32)
        scheduler.timesteps = torch.tensor(exp["override"]["timesteps"], dtype=torch.float32)
    return scheduler


def run_diffusers(exp, monkeypatch):
    """(mean, var, H) of the scheduler's own loop on the exact model, per eigenvalue."""
    scheduler = _build(exp)
    flow = exp["scheduler"] == "FlowMatchEulerDiscreteScheduler"
    n = len(scheduler.timesteps) + 2  # rows: mean, start response, one per noise draw
    m = torch.zeros(n, LAM.size, dtype=torch.float64)
    m[0] = torch.tensor(MEAN)
    x = torch.zeros(n, LAM.size, dtype=torch.float64)
    x[1] = 1.0
    model = _model(flow, torch.tensor(LAM), m)
    draws = []

    def unit_noise(*args, **kwargs):
        z = torch.zeros(n, LAM.size, dtype=torch.float32)
        z[2 + len(draws)] = 1.0
        draws.append(1)
        return z

    mod = "diffusers.schedulers.scheduling_euler_ancestral_discrete.randn_tensor"
    monkeypatch.setattr(mod, unit_noise)
    sde = exp["config"].get("algorithm_type", "").startswith("sde")
    for t in scheduler.timesteps:
        inp = scheduler.scale_model_input(x, t) if hasattr(scheduler, "scale_model_input") else x
        i = scheduler.step_index
        i = scheduler.index_for_timestep(t) if i is None else i
        out = model(inp, scheduler.sigmas[i].double())
        kwargs = dict(exp["step_kwargs"], **({"variance_noise": unit_noise()} if sde else {}))
        x = scheduler.step(out, t, x, **kwargs).prev_sample.double()
    x = x.numpy()
    var = (x[1] * exp["start_std"]) ** 2 + np.sum(x[2:] ** 2, axis=0)
    return x[0], var, x[1]


CASES = [  # (sampler, params, process, schedule family, method)
    ("euler", {}, "vp", "karras", "sigmas"),
    ("ddim", {}, "ve", "ays_sd15", "sigmas"),
    ("heun", {}, "vp", "karras", "timesteps"),
    ("dpmpp_2m", {}, "vp", "exponential", "timesteps"),
    ("dpmpp_2m_sde", {}, "vp", "karras", "timesteps"),
    ("dpmpp_2m_sde", {"solver_type": "heun"}, "ve", "karras", "timesteps"),
    ("euler_ancestral", {}, "vp", "karras", "override"),
    ("ddpm", {}, "ve", "ays_sdxl", "override"),
    ("lms", {}, "vp", "karras", "override"),
    ("euler", {}, "flow", "flow_shift", "sigmas"),
    ("ddim", {}, "flow", "karras", "sigmas"),
]


@pytest.mark.parametrize("name, params, process, family, method", CASES)
def test_diffusers_runs_the_exported_sampler_exactly(
    name, params, process, family, method, monkeypatch
):
    sampler = sd.samplers.from_name(name, **params)
    schedule = sd.schedules.heuristic(family, S, process=process)
    spec = sd.Spectrum(LAM, MEAN)
    exp = export.to_diffusers(schedule, sampler, spectrum=spec, **SD_TRAIN)
    assert exp["method"] == method
    scheduler = _build(exp)
    # The levels the export says the scheduler runs (diffusers keeps ᾱ in float32: near
    # t = 0, 1 − ᾱ and so a quantised σ carry ~1e-5 relative error).
    np.testing.assert_allclose(
        scheduler.sigmas.unique_consecutive().numpy(),
        np.asarray(exp["levels_used"] if process == "flow" else exp["sigmas_used"][:-1]).tolist()
        + [0.0],
        rtol=3e-5 if method == "timesteps" else 2e-6,
    )
    if hasattr(scheduler, "init_noise_sigma"):
        np.testing.assert_allclose(float(scheduler.init_noise_sigma), exp["init_noise_sigma"], 2e-6)
    used = sd.Schedule(exp["levels_used"], process)
    mom = sd.output_moments(spec, used, sampler)
    mean, var, h = run_diffusers(exp, monkeypatch)
    np.testing.assert_allclose(mean, mom.mean, rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(var, mom.var, rtol=2e-5)
    if exp["scheduler"] not in ("DPMSolverMultistepScheduler", "FlowMatchEulerDiscreteScheduler"):
        # diffusers' start is in σ coordinates; H is in the process's own (SPEC §4):
        # x_σ = x_process/α_0, so the response to a unit σ-coordinate start is α_0·H.
        alpha0 = np.exp(float(sd.samplers.log_alpha_sigma(used.log_snr[0], used.process)[0]))
        h_sigma = alpha0 * np.asarray(sd.transfer_function(LAM, used, sampler))
        np.testing.assert_allclose(h, h_sigma, rtol=2e-5)
    w2 = float(sd.divergence(spec, mom, "w2"))
    np.testing.assert_allclose(exp["divergence"]["used"], w2, rtol=1e-9)
    assert exp["exact"] == (method != "timesteps")


def test_euler_model_time_is_the_designed_level():
    """EulerDiscreteScheduler maps each σ to a fractional training time; a model trained on
    that schedule sees the level σ(t), log-interpolated, which is the designed one."""
    schedule = sd.schedules.karras(8, process="vp")
    exp = export.to_diffusers(schedule, sd.samplers.from_name("euler"), **SD_TRAIN)
    scheduler = _build(exp)
    ac = export.train_alphas_cumprod(1000, 0.00085, 0.012, "scaled_linear")
    log_sig = 0.5 * np.log((1 - ac) / ac)
    seen = np.exp(np.interp(scheduler.timesteps.numpy(), np.arange(1000), log_sig))
    np.testing.assert_allclose(seen, exp["sigmas"][:-1], rtol=1e-5)


def test_flow_shift_is_flowmatch_default_grid():
    for steps, shift in [(10, 3.0), (28, 3.0), (7, 1.0)]:
        scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
        scheduler.set_timesteps(steps)
        ours = np.asarray(sd.schedules.flow_shift(steps, shift=shift).levels)
        theirs = scheduler.sigmas.numpy()[:-1].astype(np.float64)
        assert theirs[0] == 1.0 and ours[0] == sd.schedules.T_MAX
        np.testing.assert_allclose(ours[1:], theirs[1:], rtol=1e-6)


def test_ays_matches_diffusers_constants():
    from diffusers.schedulers.scheduling_utils import AysSchedules

    for model, key in [("sd15", "StableDiffusionSigmas"), ("sdxl", "StableDiffusionXLSigmas")]:
        ours = np.asarray(sd.schedules.ays(10, model).levels)
        np.testing.assert_allclose(ours, AysSchedules[key][:10], rtol=1e-12)
    svd = np.asarray(sd.schedules.ays(10, "svd").levels)
    np.testing.assert_allclose(svd, AysSchedules["StableDiffusionVideoSigmas"][:10], rtol=1e-12)


def test_k_diffusion_sigma_functions():
    """k-diffusion's get_sigmas_* (sampling.py), transcribed in torch float64."""
    f64 = dict(dtype=torch.float64)
    lo, hi = sd.schedules.SD_SIGMA_MIN, sd.schedules.SD_SIGMA_MAX
    for n in (1, 2, 10, 33):
        ramp = torch.linspace(0, 1, n, **f64)
        karras = (hi ** (1 / 7) + ramp * (lo ** (1 / 7) - hi ** (1 / 7))) ** 7
        expo = torch.linspace(np.log(hi), np.log(lo), n, **f64).exp()
        ramp2 = torch.linspace(1, 0, n, **f64) ** 2.0
        poly = torch.exp(ramp2 * (np.log(hi) - np.log(lo)) + np.log(lo))
        t = torch.linspace(1, 1e-3, n, **f64)
        vp = torch.sqrt(torch.exp(19.9 * t**2 / 2 + 0.1 * t) - 1)
        for ours, ref in [
            (sd.schedules.karras(n), karras),
            (sd.schedules.exponential(n), expo),
            (sd.schedules.polyexponential(n, rho=2.0), poly),
            (sd.schedules.vp_sde(n), vp),
        ]:
            np.testing.assert_allclose(ours.levels, ref.numpy(), rtol=1e-10)


def test_diffusers_third_order_sde_is_not_k_diffusions(monkeypatch):
    """Why dpmpp_3m_sde is not exported: diffusers' third-order SDE update (solver_order=3,
    sde-dpmsolver++) weights the second difference D2 by ((1 − e^{−2h} − 2h)/(2h)² − ½)
    where k-diffusion's sample_dpmpp_3m_sde has −φ₃ = (1 − e^{−2h} − 2h)/(2h)² + ½."""
    schedule = sd.schedules.karras(S, process="vp")
    spec = sd.Spectrum(LAM, MEAN)
    exp = export.to_diffusers(schedule, sd.samplers.from_name("dpmpp_2m_sde"), **SD_TRAIN)
    exp["config"].update(solver_order=3, lower_order_final=False)
    _, var, h = run_diffusers(exp, monkeypatch)
    used = sd.Schedule(exp["levels_used"], "vp")
    mom = sd.output_moments(spec, used, sd.samplers.from_name("dpmpp_3m_sde"))
    assert np.max(np.abs(var / np.asarray(mom.var) - 1)) > 0.05
    with pytest.raises(ValueError, match="dpmpp_3m_sde"):
        export.to_diffusers(schedule, sd.samplers.from_name("dpmpp_3m_sde"))
