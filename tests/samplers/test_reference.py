"""Every sampler: the engine (eigenbasis, composed affine maps) against full-covariance
propagation of the sampler's own step with the matrix denoiser (SPEC §7, §11)."""

import numpy as np
import pytest

import specdiff as sd
from specdiff import reference
from tests.samplers.cases import (
    DEFAULTS,
    STEPS,
    case_process_params,
    karras,
    product_params,
    random_problem,
    sampler_of,
)

TOL = 1e-10  # float64 round-off through S = 8 steps, relative to the largest entry


@pytest.mark.parametrize(("case", "process"), product_params())
def test_engine_equals_full_covariance_propagation(case, process):
    lam, u, mu0, cov0 = random_problem(seed=1)
    sch = karras(STEPS, process)
    sampler = sampler_of(case)
    spec = sd.Spectrum(lam, mean=u.T @ mu0)
    mom = sd.output_moments(spec, sch, sampler)
    mean, cov = u @ np.asarray(mom.mean), (u * np.asarray(mom.var)) @ u.T  # rotated back
    mean_ref, cov_ref = reference.propagate_sampler(mu0, cov0, sch, sampler)
    np.testing.assert_allclose(mean, mean_ref, rtol=0, atol=TOL * np.max(np.abs(mean_ref)))
    np.testing.assert_allclose(cov, cov_ref, rtol=0, atol=TOL * np.max(np.abs(cov_ref)))
    w2_ref = reference.w2_gaussians(mean_ref, cov_ref, mu0, cov0)
    assert abs(float(sd.divergence(spec, mom, "w2")) - w2_ref) < 1e-9 * w2_ref


@pytest.mark.parametrize(("case", "process"), case_process_params(DEFAULTS))
def test_trajectory_equals_full_covariance_propagation(case, process):
    """Every row (the start, then the state after each step, in the process's coordinates);
    the last row is the output of ``output_moments`` without the trajectory."""
    lam, u, mu0, cov0 = random_problem(seed=1)
    sch = karras(STEPS, process)
    sampler = sampler_of(case)
    spec = sd.Spectrum(lam, mean=u.T @ mu0)
    mom = sd.output_moments(spec, sch, sampler, trajectory=True)
    assert mom.trajectory_mean.shape == mom.trajectory_var.shape == (STEPS + 1, len(lam))
    means, covs = reference.propagate_sampler(mu0, cov0, sch, sampler, trajectory=True)
    for k in range(STEPS + 1):
        cov_eig = u.T @ covs[k] @ u
        scale = np.max(np.abs(cov_eig))
        np.testing.assert_allclose(mom.trajectory_var[k], np.diag(cov_eig), atol=TOL * scale)
        off = cov_eig - np.diag(np.diag(cov_eig))
        assert np.max(np.abs(off)) < TOL * scale  # diagonal in the data eigenbasis
        mean_scale = np.max(np.abs(means[k])) + np.max(np.abs(mu0))
        np.testing.assert_allclose(mom.trajectory_mean[k], u.T @ means[k], atol=TOL * mean_scale)
    out = sd.output_moments(spec, sch, sampler)
    np.testing.assert_allclose(mom.trajectory_var[-1], out.var, rtol=1e-13)
    np.testing.assert_allclose(mom.trajectory_mean[-1], out.mean, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(mom.var, out.var, rtol=1e-13)
    np.testing.assert_allclose(mom.mean, out.mean, rtol=1e-13, atol=1e-15)
