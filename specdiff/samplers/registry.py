"""``from_name``: k-diffusion's sampler names and keyword parameters → sampler objects."""

from __future__ import annotations

import dataclasses

from specdiff.samplers.ancestral import DPM2Ancestral, DPMPP2SAncestral, EulerAncestral
from specdiff.samplers.base import Sampler
from specdiff.samplers.ddim import DDIM, DDPM
from specdiff.samplers.dpmpp import DPMPP2M, DPMPP2MSDE, DPMPP3MSDE
from specdiff.samplers.euler import DPM2, Euler, Heun
from specdiff.samplers.lms import LMS

__all__ = ["SAMPLERS", "from_name", "from_dict"]

_CLASSES = (
    DDIM,
    Euler,
    EulerAncestral,
    Heun,
    DPM2,
    DPM2Ancestral,
    DPMPP2SAncestral,
    DPMPP2M,
    DPMPP2MSDE,
    DPMPP3MSDE,
    LMS,
)
_BY_NAME = {c.name: c for c in _CLASSES if c is not DDIM}
SAMPLERS = ("ddim", "ddpm", *_BY_NAME)


def parameters(name: str) -> tuple[str, ...]:
    """The keyword parameters a sampler name accepts."""
    if name == "ddpm":
        return ()
    cls = DDIM if name == "ddim" else _BY_NAME[name]
    return tuple(f.name for f in dataclasses.fields(cls))


def from_name(name: str, **params) -> Sampler:
    """A sampler from its k-diffusion name (``"euler"``, ``"dpmpp_2m_sde"``, …) and parameters.

    ``None`` values are dropped (the default applies). Raises ``ValueError`` for an unknown
    name, an unknown parameter or a value out of range, naming what is allowed.

    Example:
      >>> import specdiff as sd
      >>> sd.samplers.from_name("dpmpp_2m_sde", eta=0.5, solver_type="heun").nfe(10)
      10
    """
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; allowed: {', '.join(SAMPLERS)}")
    params = {k: v for k, v in params.items() if v is not None}
    allowed = parameters(name)
    unknown = sorted(set(params) - set(allowed))
    if name == "ddpm" and set(params) <= {"eta"} and params.get("eta", 1.0) == 1.0:
        return DDPM()
    if unknown:
        hint = " (ddpm means eta=1; use ddim with eta)" if name == "ddpm" else ""
        raise ValueError(
            f"sampler {name!r} takes no parameter {', '.join(map(repr, unknown))}{hint}; "
            f"allowed: {', '.join(allowed) or 'none'}"
        )
    if name == "ddim":
        return DDIM(**params)
    return _BY_NAME[name](**params)


def from_dict(record: dict) -> Sampler:
    """Inverse of ``sampler.to_dict()`` (schedule files record the sampler this way)."""
    params = {k: v for k, v in record.items() if k != "name"}
    if params.get("s_tmax") == "inf":
        params["s_tmax"] = float("inf")
    return from_name(record["name"], **params)
