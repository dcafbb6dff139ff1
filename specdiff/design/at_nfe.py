"""Designs at an equal cost: ``design_at_nfe``, one designed schedule per sampler, each with
as many steps as ``nfe`` denoiser evaluations allow it (a sampler's cost is
``sampler.nfe(S)``, k-diffusion's count), and ``sampler_labels``, the keys that tell the
samplers apart in its result.
"""

from __future__ import annotations

import dataclasses

from specdiff.core.spectrum import Spectrum
from specdiff.design.optimise import DesignResult, design_schedule


def design_at_nfe(spectrum: Spectrum, nfe: int, samplers, **kwargs) -> dict[str, DesignResult]:
    """One designed schedule per sampler, all at (at most) the same denoiser evaluations.

    For each sampler, S = ``sampler.steps_for_nfe(nfe)`` (the most steps whose run costs at
    most ``nfe`` evaluations: Heun at nfe = 9 gets S = 5, DPM++ 2M gets S = 9), then
    ``design_schedule(spectrum, S, sampler, **kwargs)``.

    Args:
      spectrum: the data ``Spectrum``.
      nfe: the evaluation budget, an integer ≥ every sampler's one-step cost.
      samplers: a sequence of distinct ``specdiff.samplers`` objects.
      **kwargs: passed to ``design_schedule`` (all but ``steps`` and ``sampler``).

    Returns:
      {label: ``DesignResult``} in the order given; a label is the sampler's name, with its
      non-default parameters added where two samplers share a name (``"ddim"``,
      ``"ddim(eta=0.5)"``).

    Example:
      >>> import specdiff as sd
      >>> spec = sd.Spectrum([4.0, 1.0, 0.25])
      >>> heun, dpm = sd.samplers.from_name("heun"), sd.samplers.from_name("dpmpp_2m")
      >>> res = sd.design_at_nfe(spec, 9, [heun, dpm])
      >>> [r.schedule.num_steps for r in res.values()]
      [5, 9]
    """
    clash = sorted({"steps", "sampler"} & set(kwargs))
    if clash:
        raise ValueError(
            f"design_at_nfe sets {', '.join(clash)} itself (from nfe and samplers); "
            "pass only design_schedule's other arguments"
        )
    samplers = _check_samplers(samplers)
    steps = [s.steps_for_nfe(nfe) for s in samplers]  # every nfe error before any design
    return {
        label: design_schedule(spectrum, S, s, **kwargs)
        for label, S, s in zip(sampler_labels(samplers), steps, samplers)
    }


def _check_samplers(samplers) -> list:
    if isinstance(samplers, (str, bytes)) or not hasattr(samplers, "__iter__"):
        raise ValueError(f"samplers must be a sequence of sampler objects, got {samplers!r}")
    samplers = list(samplers)
    if not samplers:
        raise ValueError("samplers must hold at least one sampler")
    for s in samplers:
        if not (hasattr(s, "steps_for_nfe") and hasattr(s, "name")):
            raise ValueError(
                f"unknown sampler {s!r}; allowed: specdiff.samplers objects, e.g. "
                "specdiff.samplers.from_name('heun')"
            )
    return samplers


def sampler_labels(samplers) -> list[str]:
    """A distinct label per sampler: its name, plus its non-default parameters where two
    samplers share a name (``"dpmpp_2m_sde(eta=0.5)"``). ValueError for equal samplers."""
    names = [s.name for s in samplers]
    labels = []
    for s in samplers:
        if names.count(s.name) == 1:
            labels.append(s.name)
            continue
        params = ", ".join(f"{k}={v}" for k, v in _non_default_parameters(s))
        labels.append(f"{s.name}({params})" if params else s.name)
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ValueError(f"samplers must differ; given more than once: {', '.join(dup)}")
    return labels


def _non_default_parameters(sampler) -> list[tuple[str, object]]:
    if not dataclasses.is_dataclass(sampler):
        return []
    out = []
    for f in dataclasses.fields(sampler):
        default = f.default
        if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        value = getattr(sampler, f.name)
        if default is dataclasses.MISSING or value != default:
            out.append((f.name, value))
    return out
