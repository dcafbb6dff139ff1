"""Every sampler: the engine against Monte Carlo of its own step with the matrix denoiser.

n = 50 000 samples: the standard error of a variance is v·√(2/(n−1)) ≈ 0.63 % of v, so at
|z| < 4.5 a variance wrong by 4 % or more fails (the test checks that it would), while over
the ~600 z-scores here a false alarm has probability ≈ 0.4 % (the keys are fixed, so the
outcome is reproducible).
"""

import jax
import numpy as np
import pytest

import specdiff as sd
from specdiff import reference
from tests.samplers.cases import (
    CASES,
    STEPS,
    case_process_params,
    karras,
    random_problem,
    sampler_of,
)

N = 50_000
Z_MAX = 4.5


def z_scores(y, mean, var):
    """z of the sample means, variances and off-diagonal covariances (eigenbasis samples y)."""
    n = y.shape[0]
    z_mean = (y.mean(0) - mean) / np.sqrt(var / n)
    z_var = (y.var(0, ddof=1) - var) / (var * np.sqrt(2.0 / (n - 1)))
    c = np.cov(y, rowvar=False)
    iu = np.triu_indices(len(var), 1)
    z_off = c[iu] / np.sqrt(np.outer(var, var)[iu] / n)
    return z_mean, z_var, z_off


@pytest.mark.parametrize(("case", "process"), case_process_params())
def test_monte_carlo_within_standard_error(case, process):
    lam, u, mu0, cov0 = random_problem(seed=1)
    sch = karras(STEPS, process)
    sampler = sampler_of(case)
    mom = sd.output_moments(sd.Spectrum(lam, mean=u.T @ mu0), sch, sampler)
    key = jax.random.fold_in(jax.random.key(7), CASES.index(case))
    y = reference.sample_sampler(mu0, cov0, sch, sampler, key, N) @ u  # eigenbasis coordinates
    mean, var = np.asarray(mom.mean), np.asarray(mom.var)
    z_mean, z_var, z_off = z_scores(y, mean, var)
    assert np.max(np.abs(z_mean)) < Z_MAX, z_mean
    assert np.max(np.abs(z_var)) < Z_MAX, z_var
    assert np.max(np.abs(z_off)) < Z_MAX, z_off
    # The test has the power it claims: variances 4 % off would fail it.
    for wrong in (1.04, 0.96):
        assert np.max(np.abs(z_scores(y, mean, wrong * var)[1])) > Z_MAX
