"""Schedules handed to other tools (SPEC §9): diffusers, k-diffusion, other step counts.

Conventions: σ = √((1 − ᾱ)/ᾱ) (the VE / EDM noise level of the same log-SNR), listed
noisiest first with the final 0 appended, as diffusers' ``set_timesteps(sigmas=...)`` and
k-diffusion's samplers expect. See ``docs/exports.md`` for how to use each array.
"""

from __future__ import annotations

import numpy as np

from specdiff.core.checks import check_int
from specdiff.core.schedule import Schedule, ddpm_alphas_bar

__all__ = ["to_k_diffusion", "to_diffusers", "interpolate", "nearest_timesteps"]


def _check(schedule):
    if not isinstance(schedule, Schedule):
        raise ValueError(f"schedule must be a specdiff.Schedule, got {type(schedule).__name__}")


def to_k_diffusion(schedule: Schedule) -> np.ndarray:
    """σ levels, descending, with the final 0 appended: shape (S + 1,), float64."""
    _check(schedule)
    rho = np.asarray(schedule.log_snr, np.float64)
    return np.concatenate([np.exp(-0.5 * rho), [0.0]])


def nearest_timesteps(log_snr, alphas_cumprod) -> np.ndarray:
    """Index of the training timestep whose log-SNR is nearest to each level's."""
    ac = np.asarray(alphas_cumprod, np.float64)
    train = np.log(ac) - np.log1p(-ac)  # decreasing in t
    rho = np.asarray(log_snr, np.float64)
    return np.argmin(np.abs(train[None, :] - rho[:, None]), axis=1)


def to_diffusers(
    schedule: Schedule,
    num_train_steps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    alphas_cumprod=None,
) -> dict:
    """Arrays for diffusers' schedulers.

    Returns a dict with
      ``sigmas``: (S + 1,) descending σ with the final 0 (``set_timesteps(sigmas=...)``);
      ``timesteps``: (S,) integer training timesteps, descending, nearest in log-SNR for a
        model trained on ``alphas_cumprod`` (default: linear betas ``beta_start..beta_end``,
        T = ``num_train_steps``) (``set_timesteps(timesteps=...)``);
      ``alphas_cumprod``: (S,) ᾱ of those timesteps (the levels the model will really see);
      ``max_log_snr_error``: the largest |log-SNR| gap between the schedule and the chosen
        timesteps; ``timesteps_distinct``: False when two levels map to the same timestep
        (diffusers needs them strictly descending: use ``sigmas`` or fewer steps then).
    """
    _check(schedule)
    ac = (
        ddpm_alphas_bar(num_train_steps, beta_start, beta_end)
        if alphas_cumprod is None
        else np.asarray(alphas_cumprod, np.float64)
    )
    t = nearest_timesteps(schedule.log_snr, ac)
    rho = np.asarray(schedule.log_snr, np.float64)
    train = np.log(ac[t]) - np.log1p(-ac[t])
    return {
        "sigmas": to_k_diffusion(schedule),
        "timesteps": t.astype(int),
        "alphas_cumprod": ac[t],
        "max_log_snr_error": float(np.max(np.abs(train - rho))),
        "timesteps_distinct": bool(len(np.unique(t)) == len(t)),
    }


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
    return out.to_ve() if schedule.process == "ve" else out
