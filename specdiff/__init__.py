"""specdiff: exact spectral analysis of diffusion samplers and design of noise schedules.

Under a Gaussian data assumption a DDIM/DDPM sampler acts on each eigen-direction of the
data covariance independently; specdiff computes that spectral transfer function, the exact
generated distribution and its W2/KL distance to the data, and designs schedules that
minimise it.

Example:
  >>> import specdiff as sd
  >>> spec = sd.Spectrum([4.0, 1.0, 0.25], name="toy")
  >>> mom = sd.output_moments(spec, sd.schedules.cosine(20), sd.samplers.DDIM())
  >>> w2 = sd.divergence(spec, mom, "w2")
"""

__version__ = "0.1.0"

from specdiff import (
    datasets,
    denoisers,
    export,
    linear,
    metrics,
    reference,
    samplers,
    sampling,
    schedules,
    spectra,
    spiked,
)
from specdiff._design import (
    DesignResult,
    PerEigenvalueResult,
    design_per_eigenvalue,
    design_schedule,
)
from specdiff._divergence import METRICS, divergence, divergence_terms
from specdiff._engine import Moments, forward_marginals, output_moments, transfer_function
from specdiff._fit import FitResult, fit_family
from specdiff._io import load_schedule, load_spectrum, save_schedule, save_spectrum
from specdiff._schedule import Schedule
from specdiff._spectrum import Spectrum
from specdiff.sampling import sample

__all__ = [
    "METRICS",
    "DesignResult",
    "FitResult",
    "Moments",
    "PerEigenvalueResult",
    "Schedule",
    "Spectrum",
    "datasets",
    "denoisers",
    "design_per_eigenvalue",
    "design_schedule",
    "divergence",
    "divergence_terms",
    "export",
    "fit_family",
    "forward_marginals",
    "linear",
    "metrics",
    "load_schedule",
    "load_spectrum",
    "output_moments",
    "reference",
    "sample",
    "samplers",
    "sampling",
    "save_schedule",
    "save_spectrum",
    "schedules",
    "spectra",
    "spiked",
    "transfer_function",
]
