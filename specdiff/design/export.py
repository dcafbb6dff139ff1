"""Schedules handed to other tools (SPEC §9, §11): k-diffusion, diffusers, other step counts.

Conventions: σ = √((1 − ᾱ)/ᾱ) (the VE / EDM noise level of the same log-SNR), listed
noisiest first with the final 0 appended, as k-diffusion's samplers and diffusers'
``EulerDiscreteScheduler.set_timesteps(sigmas=...)`` expect. With a sampler, the exports
say which function or scheduler runs it, with which settings, from which start, and, where
the tool can only take integer training timesteps, which levels it will really run and what
that costs. The diffusers facts were checked in the source of diffusers 0.42.1 and are held
by ``tests/design/test_interop.py``, which runs the real schedulers. See ``docs/exports.md``.

Why this module is long: the diffusers mapping is one table of facts about another
library; splitting it would scatter them.
"""

from __future__ import annotations

import math

import numpy as np

from specdiff.core.checks import check_choice, check_int
from specdiff.core.divergence import divergence
from specdiff.core.engine import output_moments
from specdiff.core.schedule import Schedule, ddpm_alphas_bar

__all__ = [
    "NotExportable",
    "DIFFUSERS_SAMPLERS",
    "interpolate",
    "nearest_timesteps",
    "start_std",
    "to_diffusers",
    "to_k_diffusion",
    "train_alphas_cumprod",
]

BETA_SCHEDULES = ("linear", "scaled_linear")


def _check(schedule):
    if not isinstance(schedule, Schedule):
        raise ValueError(f"schedule must be a specdiff.Schedule, got {type(schedule).__name__}")


def _check_sampler(sampler):
    if not (hasattr(sampler, "to_dict") and hasattr(sampler, "step")):
        raise ValueError(
            f"sampler must be a specdiff sampler (e.g. specdiff.samplers.from_name('euler')), "
            f"got {sampler!r}"
        )
    return sampler.to_dict()


def _sigmas(schedule: Schedule) -> np.ndarray:
    rho = np.asarray(schedule.log_snr, np.float64)
    return np.concatenate([np.exp(-0.5 * rho), [0.0]])


def start_std(schedule: Schedule) -> float:
    """Std of the start state in σ coordinates (SPEC §11), float64.

    VE: σ_0 (k-diffusion's ``randn * sigmas[0]``); VP: √(1 + σ_0²) (N(0, 1) in VP
    coordinates, x_σ = x_VP/√ᾱ); flow: 1 + σ_0 (N(0, 1) in flow coordinates, x_σ = x_t/(1 − t)).
    """
    _check(schedule)
    s0 = math.exp(-0.5 * float(np.asarray(schedule.log_snr, np.float64)[0]))
    return {"ve": s0, "vp": math.sqrt(1.0 + s0 * s0), "flow": 1.0 + s0}[schedule.process]


# --------------------------------------------------------------------------------------
# k-diffusion
# --------------------------------------------------------------------------------------

_KD_MODEL = {
    "vp": "wrap an ε-model trained on discrete VP timesteps with k_diffusion.external."
    "CompVisDenoiser / DiscreteEpsDDPMDenoiser (quantize=False keeps these σ's; "
    "quantize=True rounds them to training timesteps)",
    "ve": "the model is a denoiser D(x; σ) in σ coordinates (EDM / k-diffusion Denoiser)",
    "flow": "k-diffusion has no flow wrapper: give it D(x; σ) = x_t − t·v(x_t, t) with "
    "t = σ/(1 + σ) and x_t = x/(1 + σ)",
}


def _k_diffusion_call(record: dict) -> tuple[str, dict]:
    """(k-diffusion function name, keyword arguments) of a sampler record.

    DDIM(η = 0) is ``sample_euler`` and DDIM(η > 0) is ``sample_euler_ancestral(eta=η)``
    (SPEC §11 identities). ``s_tmax`` is left out when infinite, k-diffusion's default.
    """
    params = {k: v for k, v in record.items() if k != "name"}
    name = record["name"]
    if name in ("ddim", "ddpm"):
        eta = float(params.get("eta", 1.0 if name == "ddpm" else 0.0))
        return ("sample_euler", {}) if eta == 0 else ("sample_euler_ancestral", {"eta": eta})
    if params.get("s_tmax") in ("inf", math.inf):
        del params["s_tmax"]
    return f"sample_{name}", params


def to_k_diffusion(schedule: Schedule, sampler=None):
    """What to hand k-diffusion: ``sample_*(model, x, sigmas, **kwargs)``.

    Without ``sampler`` (the old call): the σ levels, descending, with the final 0
    appended, shape (S + 1,), float64. With a sampler, a dict:
      ``sampler``: the k-diffusion function name (``"sample_dpmpp_2m_sde"``);
      ``kwargs``: its keyword parameters (from ``sampler.to_dict()``);
      ``sigmas``: the (S + 1,) array above;
      ``process``, ``start_std``, ``start``: the start the schedule was designed for,
        x = randn·``start_std`` in σ coordinates (VE σ_0, VP √(1 + σ_0²), flow 1 + σ_0;
        k-diffusion's own convention is randn·σ_0, the VE one);
      ``model``: how the network must be wrapped for this process.

    Example:
      >>> import specdiff as sd
      >>> out = sd.export.to_k_diffusion(sd.schedules.edm(10), sd.samplers.from_name("heun"))
      >>> out["sampler"], out["sigmas"].shape
      ('sample_heun', (11,))
    """
    _check(schedule)
    sig = _sigmas(schedule)
    if sampler is None:
        return sig
    name, kwargs = _k_diffusion_call(_check_sampler(sampler))
    std = start_std(schedule)
    factor = {"ve": "sigmas[0]", "vp": "sqrt(1 + sigmas[0]**2)", "flow": "(1 + sigmas[0])"}
    return {
        "sampler": name,
        "kwargs": kwargs,
        "sigmas": sig,
        "process": schedule.process,
        "start_std": std,
        "start": f"x = torch.randn(shape) * {factor[schedule.process]}  (= {std:.6g})",
        "model": _KD_MODEL[schedule.process],
    }


# --------------------------------------------------------------------------------------
# diffusers
# --------------------------------------------------------------------------------------


def train_alphas_cumprod(
    num_train_steps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    beta_schedule: str = "linear",
) -> np.ndarray:
    """ᾱ_t of a discrete training schedule, float64: ``"linear"`` β = linspace(β_0, β_1, T)
    (DDPM), ``"scaled_linear"`` β = linspace(√β_0, √β_1, T)² (LDM / Stable Diffusion)."""
    check_choice("beta_schedule", beta_schedule, BETA_SCHEDULES)
    if beta_schedule == "linear":
        return ddpm_alphas_bar(num_train_steps, beta_start, beta_end)
    check_int("num_train_steps", num_train_steps, 2)
    if not 0 < beta_start < beta_end < 1:
        raise ValueError(f"need 0 < beta_start < beta_end < 1, got {beta_start!r}, {beta_end!r}")
    betas = np.linspace(beta_start**0.5, beta_end**0.5, num_train_steps, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas)


def nearest_timesteps(log_snr, alphas_cumprod) -> np.ndarray:
    """Index of the training timestep whose log-SNR is nearest to each level's."""
    ac = np.asarray(alphas_cumprod, np.float64)
    train = np.log(ac) - np.log1p(-ac)  # decreasing in t
    rho = np.asarray(log_snr, np.float64)
    return np.argmin(np.abs(train[None, :] - rho[:, None]), axis=1)


def _model_time(sigma, alphas_cumprod) -> np.ndarray:
    """diffusers' ``_sigma_to_t``: the fractional training time of σ, log σ interpolated
    linearly between training timesteps (clipped to [0, T − 1])."""
    ac = np.asarray(alphas_cumprod, np.float64)
    log_sigmas = 0.5 * (np.log1p(-ac) - np.log(ac))  # increasing in t
    log_sigma = np.log(np.maximum(np.asarray(sigma, np.float64), 1e-10))
    return np.interp(log_sigma, log_sigmas, np.arange(ac.size, dtype=np.float64))


# name → (scheduler, how it takes the levels); the samplers with an exact diffusers twin.
DIFFUSERS_SAMPLERS = {
    "ddim": ("EulerDiscreteScheduler", "sigmas"),  # η = 0; VE DDIM is Euler (SPEC §11)
    "euler": ("EulerDiscreteScheduler", "sigmas"),
    "ddpm": ("EulerAncestralDiscreteScheduler", "override"),  # η = 1
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", "override"),
    "heun": ("HeunDiscreteScheduler", "timesteps"),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", "timesteps"),
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", "timesteps"),
    "lms": ("LMSDiscreteScheduler", "override"),
}
_NO_RESPACING = {
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
}
_SUPPORTED = (
    "ddim (eta=0), ddpm, euler and heun (s_churn=0), euler_ancestral (eta=1, s_noise=1), "
    "dpmpp_2m, dpmpp_2m_sde (eta=1, s_noise=1), lms; for a flow schedule: euler or ddim (eta=0)"
)


class NotExportable(ValueError):
    """diffusers cannot run this sampler or these levels (``to_k_diffusion`` can)."""


def _refuse(record: dict, why: str):
    raise NotExportable(
        f"sampler {record['name']!r} ({record}) cannot be exported to diffusers: {why}. "
        f"Exportable: {_SUPPORTED}; any sampler runs in k-diffusion (to_k_diffusion)"
    )


def _check_settings(record: dict) -> None:
    """Settings diffusers cannot express raise (the decision documented in docs/exports.md)."""
    name, eta = record["name"], record.get("eta")
    if record.get("s_churn", 0.0) > 0:
        _refuse(
            record,
            "diffusers applies churn after the model call (Euler) or not at all (Heun), "
            "so Karras' Algorithm 2 with s_churn > 0 has no diffusers equivalent",
        )
    if name == "ddim" and 0 < eta < 1:
        _refuse(record, "no diffusers scheduler takes a custom schedule with 0 < eta < 1")
    if name in ("euler_ancestral", "dpmpp_2m_sde") and (eta != 1.0 or record["s_noise"] != 1.0):
        _refuse(record, "diffusers fixes eta = 1 and s_noise = 1 for this sampler")


def _plan(schedule: Schedule, record: dict) -> tuple[str, str, dict, dict]:
    """(scheduler class, method, sampler-specific config, step kwargs)."""
    name = record["name"]
    if schedule.process == "flow":
        if name in ("euler", "ddim") and not record.get("s_churn") and not record.get("eta"):
            cfg = {"shift": 1.0, "use_dynamic_shifting": False, "shift_terminal": None}
            cfg.update(_NO_RESPACING, invert_sigmas=False, stochastic_sampling=False)
            return "FlowMatchEulerDiscreteScheduler", "sigmas", cfg, {}
        _refuse(record, "for a flow schedule diffusers has FlowMatchEulerDiscreteScheduler only")
    if name not in DIFFUSERS_SAMPLERS:
        _refuse(record, "diffusers has no scheduler with this update rule and a custom schedule")
    _check_settings(record)
    cls, method = DIFFUSERS_SAMPLERS[name]
    # timestep_spacing only sets init_noise_sigma here ("leading": √(σ_0² + 1), the VP start;
    # "linspace": σ_0, the VE start): the levels themselves come from the export.
    spacing = {"timestep_spacing": "leading" if schedule.process == "vp" else "linspace"}
    if cls == "EulerDiscreteScheduler":
        return cls, method, {**_NO_RESPACING, **spacing, "timestep_type": "discrete"}, {}
    if cls == "HeunDiscreteScheduler":
        return cls, method, {**_NO_RESPACING, **spacing, "clip_sample": False}, {}
    if cls == "DPMSolverMultistepScheduler":
        cfg = {
            "algorithm_type": "sde-dpmsolver++" if name == "dpmpp_2m_sde" else "dpmsolver++",
            "solver_order": 2,
            "solver_type": record.get("solver_type", "midpoint"),
            "final_sigmas_type": "zero",
            "euler_at_final": False,
            "use_lu_lambdas": False,
            "use_flow_sigmas": False,
            "thresholding": False,
            **_NO_RESPACING,
        }
        return cls, method, cfg, {}
    if cls == "LMSDiscreteScheduler":
        return cls, method, spacing, {"order": int(record["order"])}
    return cls, method, spacing, {}  # EulerAncestralDiscreteScheduler


def _train_config(num_train_steps, beta_start, beta_end, beta_schedule, alphas_cumprod):
    if alphas_cumprod is None:
        return {
            "num_train_timesteps": int(num_train_steps),
            "beta_start": float(beta_start),
            "beta_end": float(beta_end),
            "beta_schedule": beta_schedule,
        }
    ac = np.asarray(alphas_cumprod, np.float64)
    betas = 1.0 - ac / np.concatenate([[1.0], ac[:-1]])
    return {"num_train_timesteps": int(ac.size), "trained_betas": betas.tolist()}


def _quantised(schedule: Schedule, ac: np.ndarray) -> Schedule:
    """The levels a scheduler that takes integer timesteps runs (nearest in log-SNR)."""
    t = nearest_timesteps(schedule.log_snr, ac)
    if len(np.unique(t)) != t.size:
        raise NotExportable(
            f"two of the {t.size} levels round to the same training timestep ({t.tolist()}); "
            "diffusers needs strictly descending timesteps: use fewer steps, or a sampler "
            "exported with sigmas (euler, ddim)"
        )
    rho = np.log(ac[t]) - np.log1p(-ac[t])
    return Schedule.from_log_snr(rho, "vp").to_process(schedule.process)


def _divergences(spectrum, schedule, used, sampler, metric, floor) -> dict:
    def loss(s):
        return float(divergence(spectrum, output_moments(spectrum, s, sampler), metric, floor))

    return {"metric": metric, "designed": loss(schedule), "used": loss(used)}


def _start(schedule: Schedule, cls: str, config: dict) -> dict:
    """The start std in the scheduler's own sample coordinates and its init_noise_sigma."""
    std = start_std(schedule)
    s0 = float(np.exp(-0.5 * float(np.asarray(schedule.log_snr, np.float64)[0])))
    if cls == "FlowMatchEulerDiscreteScheduler":  # samples are x_t = x_σ/(1 + σ)
        return {"start_std": std / (1.0 + s0), "init_noise_sigma": 1.0}
    if cls == "DPMSolverMultistepScheduler":  # samples are x_VP = x_σ/√(1 + σ²)
        return {"start_std": std / math.sqrt(1.0 + s0 * s0), "init_noise_sigma": 1.0}
    leading = config.get("timestep_spacing") == "leading"
    return {"start_std": std, "init_noise_sigma": math.sqrt(s0 * s0 + 1) if leading else s0}


def _legacy(schedule: Schedule, ac: np.ndarray) -> dict:
    t = nearest_timesteps(schedule.log_snr, ac)
    rho = np.asarray(schedule.log_snr, np.float64)
    train = np.log(ac[t]) - np.log1p(-ac[t])
    return {
        "sigmas": _sigmas(schedule),
        "timesteps": t.astype(int),
        "alphas_cumprod": ac[t],
        "max_log_snr_error": float(np.max(np.abs(train - rho))),
        "timesteps_distinct": bool(len(np.unique(t)) == len(t)),
    }


def _levels_for(cls, method, schedule, sig_used, ac, legacy) -> tuple[dict, dict | None, list]:
    """(set_timesteps kwargs, override, notes) for the scheduler's way of taking levels."""
    if cls == "FlowMatchEulerDiscreteScheduler":  # flow t levels; it appends the final 0
        return {"sigmas": np.asarray(schedule.levels, np.float64).tolist()}, None, []
    if method == "timesteps":
        note = (
            f"{cls}.set_timesteps takes integer training timesteps only: the levels are "
            f"rounded to the nearest training log-SNR (largest shift "
            f"{legacy['max_log_snr_error']:.3g}); the scheduler runs sigmas_used, not the "
            "designed sigmas"
        )
        return {"timesteps": legacy["timesteps"].tolist()}, None, [note]
    # Model times as diffusers' _sigma_to_t gives them (the sigmas path computes the same):
    # its step-index lookup needs them distinct, which fails where levels leave the range.
    model_t = _model_time(sig_used[:-1], ac)
    sigma_train = np.sqrt((1.0 - ac) / ac)
    train_range = f"σ ∈ [{sigma_train[0]:.4g}, {sigma_train[-1]:.4g}]"
    if model_t.size > 1 and not np.all(np.diff(model_t) < 0):
        raise NotExportable(
            f"several levels lie outside the model's training range {train_range} and map to "
            "the same clipped timestep, which diffusers' step-index lookup cannot tell apart; "
            "design with endpoints inside that range"
        )
    notes = []
    if sig_used[0] > sigma_train[-1] * (1 + 1e-6) or sig_used[-2] < sigma_train[0] * (1 - 1e-6):
        notes.append(
            f"a level lies outside the training range {train_range}: the model is evaluated "
            "at the end timestep there"
        )
    if method == "sigmas":
        return {"sigmas": sig_used.tolist()}, None, notes
    notes.append(
        f"{cls}.set_timesteps takes neither sigmas nor timesteps (diffusers 0.42.1): call "
        "set_timesteps(**set_timesteps), then set scheduler.sigmas and scheduler.timesteps "
        "to float32 tensors of override['sigmas'] and override['timesteps']"
    )
    override = {"sigmas": sig_used.tolist(), "timesteps": model_t.tolist()}
    return {"num_inference_steps": schedule.num_steps}, override, notes


def to_diffusers(
    schedule: Schedule,
    sampler=None,
    *,
    spectrum=None,
    metric: str = "w2",
    floor=None,
    num_train_steps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    beta_schedule: str = "linear",
    alphas_cumprod=None,
) -> dict:
    """What to hand diffusers, for a model trained on the given discrete schedule.

    The training schedule (default: DDPM linear β 1e-4…0.02, T = 1000; SD is
    ``beta_schedule="scaled_linear"``, 0.00085…0.012; or ``alphas_cumprod``) only maps
    levels to model timesteps; σ's meaning does not depend on it. Always returned:
      ``sigmas``: (S + 1,) descending σ with the final 0;
      ``timesteps``: (S,) integer training timesteps nearest in log-SNR, descending;
      ``alphas_cumprod``: ᾱ at those timesteps; ``max_log_snr_error``: the largest
        |log-SNR| gap they leave; ``timesteps_distinct``: False when two levels round alike.
    With a ``sampler`` (a ``ValueError`` names the exportable ones when it has no diffusers
    twin, or uses a setting diffusers cannot express, such as churn), also:
      ``scheduler``, ``config``: ``getattr(diffusers, scheduler)(**config)`` or
        ``from_config(pipe.scheduler.config, **config)`` (the model's prediction_type stays);
      ``method``: ``"sigmas"`` (the levels exactly, float32), ``"timesteps"`` (integer
        timesteps only: the levels are rounded) or ``"override"`` (set_timesteps takes no
        schedule: assign ``override["sigmas"]``/``["timesteps"]`` after it);
      ``set_timesteps``: the keyword arguments for ``scheduler.set_timesteps``;
      ``override``, ``step_kwargs``: see above (``step_kwargs`` go to every ``step``);
      ``exact``: whether the scheduler runs the designed levels; ``sigmas_used``: the
        (S + 1,) σ's it really runs; ``levels_used``: the same in the schedule's process;
      ``start_std``: std of the initial noise in the scheduler's sample coordinates for
        the start the schedule was designed for; ``init_noise_sigma``: what the scheduler
        will report (pipelines multiply by it); ``notes``: what the user must know;
      ``divergence`` (with ``spectrum``): {metric, designed, used}, ``metric`` of the
        designed and of the really-run schedule under ``sampler``.
    """
    _check(schedule)
    check_choice("beta_schedule", beta_schedule, BETA_SCHEDULES)
    ac = (
        train_alphas_cumprod(num_train_steps, beta_start, beta_end, beta_schedule)
        if alphas_cumprod is None
        else np.asarray(alphas_cumprod, np.float64)
    )
    out = _legacy(schedule, ac)
    if sampler is None:
        return out
    train = (num_train_steps, beta_start, beta_end, beta_schedule, alphas_cumprod)
    plan, used = _scheduler_plan(schedule, sampler, ac, train, out)
    out.update(plan)
    if spectrum is not None:
        out["divergence"] = _divergences(spectrum, schedule, used, sampler, metric, floor)
    return out


def _scheduler_plan(schedule, sampler, ac, train, legacy) -> dict:
    """The sampler-specific part of ``to_diffusers`` (scheduler, config, levels, start) and
    the schedule the scheduler really runs."""
    record = _check_sampler(sampler)
    cls, method, cfg, step_kwargs = _plan(schedule, record)
    if cls == "FlowMatchEulerDiscreteScheduler":
        config = {"num_train_timesteps": int(ac.size), **cfg}
    else:
        config = {**_train_config(*train), **cfg}
    used = _quantised(schedule, ac) if method == "timesteps" else schedule
    sig_used = _sigmas(used)
    setts, override, notes = _levels_for(cls, method, schedule, sig_used, ac, legacy)
    start = _start(used, cls, config)
    if not math.isclose(start["start_std"], start["init_noise_sigma"], rel_tol=1e-6):
        notes.append(
            f"the schedule was designed for the {schedule.process.upper()} start: multiply the "
            f"initial noise by start_std = {start['start_std']:.6g}, not by the scheduler's "
            f"init_noise_sigma = {start['init_noise_sigma']:.6g}"
        )
    plan = dict(
        sampler=record,
        scheduler=cls,
        config=config,
        method=method,
        set_timesteps=setts,
        override=override,
        step_kwargs=step_kwargs,
        exact=method != "timesteps" or legacy["max_log_snr_error"] < 1e-9,
        sigmas_used=sig_used,
        levels_used=np.asarray(used.levels, np.float64),
        notes=notes,
        **start,
    )
    return plan, used


def interpolate(schedule: Schedule, steps: int) -> Schedule:
    """The schedule resampled to ``steps`` levels, log-linearly in σ (linearly in log-SNR)
    over the normalised position i/(S − 1), keeping both end levels.

    Example:
      >>> import specdiff as sd
      >>> sd.export.interpolate(sd.schedules.edm(10), 25).num_steps
      25
    """
    _check(schedule)
    check_int("steps", steps)
    rho = np.asarray(schedule.log_snr, np.float64)
    if rho.size == 1:
        raise ValueError("a 1-step schedule has no shape to interpolate; need >= 2 levels")
    if steps == 1:
        new = rho[:1]
    else:
        new = np.interp(np.linspace(0, 1, steps), np.linspace(0, 1, rho.size), rho)
    out = Schedule.from_log_snr(new, "vp")
    return out if schedule.process == "vp" else out.to_process(schedule.process)
