"""The data spectrum: eigenvalues of Σ0 and the mean in the same eigenbasis (SPEC §1)."""

from __future__ import annotations

import hashlib

import jax
import jax.numpy as jnp
import numpy as np

from specdiff.core.checks import check_finite, is_concrete


@jax.tree_util.register_pytree_node_class
class Spectrum:
    """Eigenvalues λ_i ≥ 0 of the data covariance and the mean m_i = (Uᵀμ0)_i.

    A pytree: ``eigenvalues`` and ``mean`` are leaves, ``name`` is static metadata, so a
    ``Spectrum`` passes through ``jit``/``vmap``/``grad`` and can be built from tracers
    (validation then runs only on concrete inputs).

    Args:
      eigenvalues: shape (d,), finite and ≥ 0.
      mean: shape (d,) or None (zero mean).
      name: optional label, recorded in schedule files.

    Example:
      >>> import specdiff as sd
      >>> spec = sd.Spectrum([4.0, 1.0, 0.25], name="toy")
      >>> spec.dim
      3
    """

    def __init__(self, eigenvalues, mean=None, name: str | None = None):
        if is_concrete(eigenvalues):
            ev = np.asarray(eigenvalues)
            if ev.ndim != 1 or ev.size == 0:
                raise ValueError(f"eigenvalues must be a non-empty 1-D array, got shape {ev.shape}")
            if not np.issubdtype(ev.dtype, np.number) or np.iscomplexobj(ev):
                raise ValueError(f"eigenvalues must be real numbers, got dtype {ev.dtype}")
            check_finite("eigenvalues", ev)
            if (ev < 0).any():
                i = int(np.flatnonzero(ev < 0)[0])
                raise ValueError(
                    f"eigenvalues must be >= 0 (a covariance is positive semi-definite); "
                    f"entry {i} is {float(ev[i])!r}"
                )
            if not np.issubdtype(ev.dtype, np.floating):
                ev = ev.astype(float)
            eigenvalues = jnp.asarray(ev)
        if mean is None:
            mean = jnp.zeros_like(eigenvalues)
        elif is_concrete(mean):
            mu = np.asarray(mean)
            if mu.shape != tuple(np.shape(eigenvalues)):
                raise ValueError(
                    f"mean must have the shape of eigenvalues {tuple(np.shape(eigenvalues))}, "
                    f"got {mu.shape}"
                )
            check_finite("mean", mu)
            mean = jnp.asarray(mu, dtype=jnp.result_type(eigenvalues))
        self.eigenvalues = eigenvalues
        self.mean = mean
        self.name = name

    @property
    def dim(self) -> int:
        return int(np.shape(self.eigenvalues)[-1])

    def digest(self) -> str:
        """Short SHA-256 of eigenvalues and mean (float64 bytes), recorded in schedule files."""
        h = hashlib.sha256()
        h.update(np.asarray(self.eigenvalues, dtype=np.float64).tobytes())
        h.update(np.asarray(self.mean, dtype=np.float64).tobytes())
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        return f"Spectrum(d={np.shape(self.eigenvalues)}, name={self.name!r})"

    def anonymous(self) -> Spectrum:
        """The same arrays without the name (the name is static under jit: dropping it
        before compiled calls avoids one compilation per differently named spectrum)."""
        if self.name is None:
            return self
        return Spectrum.tree_unflatten(None, (self.eigenvalues, self.mean))

    def tree_flatten(self):
        return (self.eigenvalues, self.mean), self.name

    @classmethod
    def tree_unflatten(cls, name, children):
        obj = object.__new__(cls)
        obj.eigenvalues, obj.mean = children
        obj.name = name
        return obj
