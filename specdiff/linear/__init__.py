"""Linear diffusion: finite-sample linear denoisers, the spiked model, power iteration, Jacobians.

Holds ``finite_sample`` (linear/Wiener denoisers fitted to N samples), ``power`` (the linear
reverse process, its exact moments and samples, power iteration), ``jacobians`` (matrix-free
singular vectors of a denoiser's Jacobian) and ``spiked`` (BBP theory, SPEC §8).

Imports: ``specdiff.core`` and ``specdiff.samplers``.
"""

from specdiff.linear.finite_sample import (
    LinearModel,
    denoise,
    denoiser_gains,
    denoiser_matrix,
    eigenvector_overlaps,
    fit,
    fit_noisy,
)
from specdiff.linear.jacobians import SingularTriplets, top_singular_vectors
from specdiff.linear.power import (
    LinearMoments,
    SampleTrajectory,
    power_iteration,
    reverse_moments,
    reverse_sample,
)

__all__ = [
    "LinearModel",
    "LinearMoments",
    "SampleTrajectory",
    "SingularTriplets",
    "denoise",
    "denoiser_gains",
    "denoiser_matrix",
    "eigenvector_overlaps",
    "fit",
    "fit_noisy",
    "power_iteration",
    "reverse_moments",
    "reverse_sample",
    "top_singular_vectors",
]
