"""The spectrum's eigenvalue axis sharded over the devices of ``mesh.current_mesh()`` (issue 14).

Eigenvalues are independent (SPEC §3–4): the output moments of each are a function of its
own λ, m and the schedule. So the engine runs unchanged on each device, on a slice of the
spectrum, with the schedule replicated:

    devices p = 0 … n−1:   (mean, var)[shard p] = _blocked_output(λ[shard p], m[shard p], …)

and a divergence, a sum over eigenvalues (SPEC §5), is one partial sum per device and one
``psum``:

    D = Σ_p Σ_{i ∈ shard p} w_i·t_i(λ_i, mean_i, var_i).

The spectrum is padded to a multiple of the device count with λ = 1, m = 0 (a harmless
eigenvalue: its terms are finite) and the padded entries are masked out of every sum
(weight 0 by position, not by value) and sliced off every output. The gradient with respect
to the replicated schedule is the ``psum`` of the per-device gradients, which ``shard_map``'s
transpose inserts by itself.

Selection: ``active_mesh()`` is None for a single device, and every entry point then runs
the unsharded code, the same compiled program as before sharding existed. The mesh is
resolved outside ``jit`` and passed as a static argument (a ``Mesh`` is hashable), so
changing the selection compiles anew instead of reusing a program for other devices.

Placement (``place``/``replicate``, outside ``jit``): concrete inputs become global arrays
on the mesh, built from the same host values on every process (``make_array_from_callback``),
so a mesh that spans processes works too: the eigenvalue axis sharded where its length is a
multiple of the device count, replicated otherwise (a ``NamedSharding`` cannot split 7 over 4
devices; each device then slices its part locally, without communication).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from specdiff.core import mesh as _mesh
from specdiff.core.checks import is_concrete
from specdiff.core.divergence import divergence_terms
from specdiff.core.spectrum import Spectrum

__all__ = ["active_mesh", "place", "replicate", "blocked_output", "weighted_divergence"]


_ACTIVE: dict = {}  # (spec, innermost use_devices spec, environment) → mesh or None


def active_mesh(spec=None):
    """The selected mesh (``mesh.current_mesh``), or None when it has a single device.

    Remembered per selection (the devices of a process do not change), so the unsharded
    entry points pay a dictionary look-up for it, not a new device query on every call.
    """
    key = _mesh.selection_key(spec)
    if key not in _ACTIVE:
        m = _mesh.current_mesh(spec)
        _ACTIVE[key] = None if m.devices.size == 1 else m
    return _ACTIVE[key]


def _global(x, sharding):
    """``x`` as a global array with ``sharding`` (tracers and arrays already there pass)."""
    if not is_concrete(x):
        return x
    if isinstance(x, jax.Array):
        if x.sharding == sharding:
            return x
        if not x.is_fully_addressable or sharding.is_fully_addressable:
            return jax.device_put(x, sharding)  # device to device (or a global reshard)
    host = np.asarray(x)  # the same host values on every process
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def replicate(tree, mesh):
    """Every array leaf of ``tree`` replicated over ``mesh`` (None: unchanged)."""
    if mesh is None:
        return tree
    sharding = NamedSharding(mesh, P())
    return jax.tree.map(lambda x: _global(x, sharding), tree)


def place(tree, mesh):
    """Leaves of ``tree`` with the eigenvalue axis (axis 0) on ``mesh`` (None: unchanged).

    Sharded over the devices where the length is a multiple of their count, replicated
    otherwise (padding happens inside the compiled function, see ``blocked_output``).
    """
    if mesh is None:
        return tree
    n = mesh.devices.size

    def one(x):
        split = np.ndim(x) >= 1 and np.shape(x)[0] % n == 0
        return _global(x, NamedSharding(mesh, P(_mesh.AXIS) if split else P()))

    return jax.tree.map(one, tree)


def _padded(lam, m, n):
    """(λ, m) padded to a multiple of n with λ = 1, m = 0; and the true length d."""
    lam_p, _ = _mesh.pad_to_multiple(lam, n, 1.0)
    m_p, _ = _mesh.pad_to_multiple(m, n, 0.0)
    return lam_p, m_p, lam.shape[0]


def _shard_map(body, mesh, in_specs, out_specs):
    """``jax.shard_map`` without the varying-manual-axes type check.

    The engine builds constants (scan carries, start states) that are the same on every
    device and combines them with per-device eigenvalues, and its custom VJPs return
    per-device cotangents for the replicated schedule; the check would reject both unless
    every such value inside the engine were cast explicitly. Unchecked, ``shard_map``'s
    transpose adds the per-device cotangents of a replicated input with a ``psum``, which
    is the gradient with respect to the schedule (the tests compare it with one device).
    """
    return jax.shard_map(body, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)


def blocked_output(lam, m, schedule, sampler, block=None, transfer=False, mesh=None):
    """``engine._blocked_output`` with the eigenvalues sharded over ``mesh``.

    Args:
      lam, m: (d,) eigenvalues and means (traced; any sharding).
      schedule, sampler, block, transfer: as for ``engine._blocked_output`` (the schedule
        is replicated: every device runs every step on its own eigenvalues).
      mesh: a 1-D mesh with axis ``mesh.AXIS``, or None (the unsharded engine, unchanged).

    Returns:
      (mean, var) of shape (d,), or (H,) with ``transfer``; padding removed. Sharded over
      the devices when d is a multiple of their count, else gathered (replicated).
    """
    from specdiff.core.engine import _blocked_output  # engine imports this module

    if mesh is None or mesh.devices.size == 1:
        return _blocked_output(lam, m, schedule, sampler, block, transfer)
    lam_p, m_p, d = _padded(lam, m, mesh.devices.size)
    nout = 1 if transfer else 2

    def body(lam_s, m_s, sch):
        return tuple(_blocked_output(lam_s, m_s, sch, sampler, block, transfer))

    ax = P(_mesh.AXIS)
    out = _shard_map(body, mesh, (ax, ax, P()), (ax,) * nout)(lam_p, m_p, schedule)
    return tuple(o[:d] for o in out)


def weighted_divergence(
    spectrum, schedule, sampler, metric="w2", floor=None, weights=None, mesh=None, block=None
):
    """Σ_i w_i·t_i: the divergence terms of one schedule, weighted and summed (W2² for "w2").

    Each device sums the terms of its own eigenvalues, the padded entries masked out by
    position; one ``psum`` adds the partial sums. With ``mesh`` None this is the unsharded
    ``Σ divergence_terms(spectrum, output moments)·w``.

    Args:
      spectrum: the data ``Spectrum`` (traced or concrete; any sharding).
      schedule, sampler: as for ``output_moments``; the schedule is replicated.
      metric, floor: as for ``divergence_terms``.
      weights: (d,) per-eigenvalue weights, or None (all 1).
      mesh: a 1-D mesh (``active_mesh()``), or None.
      block: eigenvalues per block of the engine (None: its default).

    Returns:
      A scalar (replicated over the mesh).
    """
    from specdiff.core.engine import Moments, _blocked_output

    lam, m = spectrum.eigenvalues, spectrum.mean
    w = jnp.ones_like(lam) if weights is None else jnp.asarray(weights, lam.dtype)

    def partial(lam_s, m_s, w_s, sch, valid=None):
        mean, var = _blocked_output(lam_s, m_s, sch, sampler, block)
        spec_s = Spectrum.tree_unflatten(None, (lam_s, m_s))
        terms = divergence_terms(spec_s, Moments(mean, var), metric, floor) * w_s
        return jnp.sum(terms if valid is None else jnp.where(valid, terms, 0.0))

    if mesh is None or mesh.devices.size == 1:
        return partial(lam, m, w, schedule)
    n = mesh.devices.size
    lam_p, m_p, d = _padded(lam, m, n)
    w_p, _ = _mesh.pad_to_multiple(w, n, 0.0)

    def body(lam_s, m_s, w_s, sch):
        local = lam_s.shape[0]
        index = jax.lax.axis_index(_mesh.AXIS) * local + jnp.arange(local)
        return jax.lax.psum(partial(lam_s, m_s, w_s, sch, index < d), _mesh.AXIS)

    ax = P(_mesh.AXIS)
    return _shard_map(body, mesh, (ax, ax, ax, P()), P())(lam_p, m_p, w_p, schedule)
