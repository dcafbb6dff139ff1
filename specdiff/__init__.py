"""specdiff: exact spectral analysis of diffusion samplers and design of noise schedules.

Under a Gaussian data assumption a diffusion sampler acts on each eigen-direction of the
data covariance independently; specdiff computes that spectral transfer function, the exact
generated distribution and its W2/KL distance to the data, and designs schedules that
minimise it.

The package is layered (each subpackage's ``__init__`` says what it may import):
``core`` → ``samplers`` → ``design`` / ``data`` / ``nn`` / ``linear`` → ``cli``. This module
is the public API; the submodules below are re-exported under their historical names and,
like the design functions, loaded on first use, so ``import specdiff`` imports neither
flax, orbax nor optax.

Example:
  >>> import specdiff as sd
  >>> spec = sd.Spectrum([4.0, 1.0, 0.25], name="toy")
  >>> mom = sd.output_moments(spec, sd.schedules.cosine(20), sd.samplers.DDIM())
  >>> w2 = sd.divergence(spec, mom, "w2")
"""

__version__ = "0.1.0"

import importlib

from specdiff import samplers
from specdiff.core.divergence import METRICS, divergence, divergence_terms
from specdiff.core.engine import Moments, forward_marginals, output_moments, transfer_function
from specdiff.core.io import load_schedule, load_spectrum, save_schedule, save_spectrum
from specdiff.core.schedule import Schedule
from specdiff.core.spectrum import Spectrum

# Names loaded on first use: the design layer imports optax (and absl, 0.2 s), which
# analysis alone never needs.
_LAZY_NAMES = {
    "DesignResult": "specdiff.design.optimise",
    "design_schedule": "specdiff.design.optimise",
    "design_at_nfe": "specdiff.design.at_nfe",
    "FitResult": "specdiff.design.fit",
    "fit_family": "specdiff.design.fit",
    "PerEigenvalueResult": "specdiff.design.per_eigenvalue",
    "design_per_eigenvalue": "specdiff.design.per_eigenvalue",
    "sample": "specdiff.nn.sampling",
}

# Public submodules by their short names, imported on first attribute access.
_SUBMODULES = {
    "datasets": "specdiff.data.datasets",
    "denoisers": "specdiff.nn.denoisers",
    "export": "specdiff.design.export",
    "linear": "specdiff.linear",
    "metrics": "specdiff.nn.metrics",
    "reference": "specdiff.core.reference",
    "sampling": "specdiff.nn.sampling",
    "schedules": "specdiff.design.heuristics",
    "spectra": "specdiff.data.spectra",
    "spiked": "specdiff.linear.spiked",
}


def __getattr__(name):
    if name in _SUBMODULES:
        module = importlib.import_module(_SUBMODULES[name])
        globals()[name] = module
        return module
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(_LAZY_NAMES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'specdiff' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES) | set(_LAZY_NAMES))


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
    "design_at_nfe",
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
