"""Samplers, each defined once by its step (SPEC §3, §11).

Holds the step interface and the affine map derived from it (``base``), one module per
family (``ddim``; ``euler``: Euler, Heun, DPM-2 with churn; ``ancestral``; ``dpmpp``:
DPM-Solver++ 2M, 2M SDE, 3M SDE; ``lms``) and the registry behind ``from_name``.

Imports: ``specdiff.core`` only.
"""

from specdiff.core.schedule import log_alpha_sigma
from specdiff.samplers.ancestral import DPM2Ancestral, DPMPP2SAncestral, EulerAncestral
from specdiff.samplers.base import Sampler
from specdiff.samplers.ddim import DDIM, DDPM, LinearStep
from specdiff.samplers.dpmpp import DPMPP2M, DPMPP2MSDE, DPMPP3MSDE
from specdiff.samplers.euler import DPM2, Euler, Heun
from specdiff.samplers.lms import LMS
from specdiff.samplers.registry import SAMPLERS, from_dict, from_name, parameters

__all__ = [
    "DDIM",
    "DDPM",
    "DPM2",
    "DPM2Ancestral",
    "DPMPP2M",
    "DPMPP2MSDE",
    "DPMPP2SAncestral",
    "DPMPP3MSDE",
    "LMS",
    "SAMPLERS",
    "Euler",
    "EulerAncestral",
    "Heun",
    "LinearStep",
    "Sampler",
    "from_dict",
    "from_name",
    "log_alpha_sigma",
    "parameters",
]
