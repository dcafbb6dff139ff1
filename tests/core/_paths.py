"""Shared check of the path tests: one W2 objective evaluated two ways agrees to float64
round-off (moments, value and gradient with respect to the log-SNR levels)."""

import jax
import jax.numpy as jnp
import numpy as np


def assert_same_w2(loss, rho, ref_arg, arg, *, var_atol=0.0, grad_rtol=1e-9, grad_atol=1e-12):
    """``loss(rho, x) -> (w2, Moments)``: ``x = arg`` against ``x = ref_arg``. Returns the
    reference's (value, moments, gradient)."""
    (v_ref, ref), g_ref = jax.value_and_grad(loss, has_aux=True)(rho, ref_arg)
    (v, mom), g = jax.value_and_grad(loss, has_aux=True)(rho, arg)
    np.testing.assert_allclose(mom.mean, ref.mean, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(mom.var, ref.var, rtol=1e-12, atol=var_atol)
    np.testing.assert_allclose(v, v_ref, rtol=1e-12)
    scale = float(jnp.abs(g_ref).max())
    np.testing.assert_allclose(g, g_ref, rtol=grad_rtol, atol=grad_atol * scale)
    return v_ref, ref, g_ref
