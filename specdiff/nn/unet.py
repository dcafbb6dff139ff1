"""The U-Net denoiser: its architecture config, the flax (NNX) modules, init and apply.

Holds ``ModelConfig``, ``UNet`` (and its residual block), ``training_log_snr`` (the levels
it is trained on), ``init_unet`` and ``apply`` (compiled initialisation and forward pass).
Training is in ``training``; saving, loading and the exact Gaussian denoiser in
``denoisers``, the public face that re-exports all of these.

The call signature is ``unet(x, log_snr) -> eps_hat`` with x in VP units (x = α·x0 + σ·ε,
α² = sigmoid(ρ), σ² = sigmoid(−ρ)). The network is conditioned on the continuous ρ, so it
can be called at any level. Its output is the ε-prediction, parametrised as
ε̂ = σ·x + α·F(x, ρ) (F plays v = α·ε − σ·x0; EDM-style preconditioning): with a plain
ε̂ = F, the small ε-errors of the network at high noise are multiplied by σ/α ≈ 160 in x̂0
and the 32×32 model's samples diverged. Outside the trained range [ρ_999, ρ_0] ≈
[−10.1, 9.2] the network F is conditioned on the nearest end of the range while α, σ
follow the true ρ, so ε̂ → x as ᾱ → 0 and x̂0 → x as ᾱ → 1.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from specdiff.core.schedule import ddpm_alphas_bar

__all__ = ["ModelConfig", "UNet", "init_unet", "apply", "training_log_snr"]


def training_log_snr(num_train_steps: int = 1000) -> np.ndarray:
    """ρ_t = log(ᾱ_t/(1 − ᾱ_t)) of the DDPM linear-β schedule, t = 0..T−1 (float64).

    Index t = 0 is the cleanest level (ρ ≈ 9.2), t = 999 the noisiest (ρ ≈ −10.1).
    """
    ab = ddpm_alphas_bar(num_train_steps)
    return np.log(ab) - np.log1p(-ab)


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of the U-Net.

    Attributes:
      shape: (H, W) of one (single-channel) image.
      channels: feature channels at the two resolutions (full, half) after the stem.
      patch: space-to-depth factor of the stem (2: a 32×32 image is processed as 16×16×4,
        which makes the 32×32 model four times cheaper; 1: none).
      emb_dim: width of the log-SNR embedding.
      groups: GroupNorm groups.
      log_snr_range: (ρ_min, ρ_max) seen in training; outside it the model extrapolates as
        described in the module docstring.
      parametrization: ``"v"`` (default): the network output F is combined as
        ε̂ = σ·x + α·F (F ≈ v = α·ε − σ·x0, EDM-style preconditioning), which is exact in
        both limits; ``"eps"``: ε̂ = F (checkpoints without this field are ``"eps"``).
    """

    shape: tuple[int, int] = (8, 8)
    channels: tuple[int, int] = (32, 64)
    patch: int = 1
    emb_dim: int = 128
    groups: int = 8
    log_snr_range: tuple[float, float] = (
        float(training_log_snr()[-1]),
        float(training_log_snr()[0]),
    )
    parametrization: str = "v"

    def __post_init__(self):
        if self.parametrization not in ("v", "eps"):
            raise ValueError(
                f"unknown parametrization {self.parametrization!r}; allowed: 'v', 'eps'"
            )
        for f in ("shape", "channels", "log_snr_range"):
            object.__setattr__(self, f, tuple(getattr(self, f)))
        h, w = self.shape
        if len(self.shape) != 2 or h % (2 * self.patch) or w % (2 * self.patch):
            raise ValueError(
                f"shape {self.shape} must be (H, W) with H and W divisible by 2·patch "
                f"= {2 * self.patch} (the U-Net downsamples once after the stem)"
            )
        if len(self.channels) != 2 or any(c % self.groups for c in self.channels):
            raise ValueError(
                f"channels {self.channels} must be two numbers divisible by groups={self.groups}"
            )

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(
                f"unknown model config fields {sorted(unknown)}; allowed {sorted(names)}"
            )
        return cls(**{"parametrization": "eps", **d})  # records older than the field: "eps"


# ---------------------------------------------------------------------------------------------
# The U-Net
# ---------------------------------------------------------------------------------------------


class _ResBlock(nnx.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int, rngs: nnx.Rngs):
        self.norm1 = nnx.GroupNorm(cin, num_groups=groups, rngs=rngs)
        self.conv1 = nnx.Conv(cin, cout, (3, 3), rngs=rngs)
        self.emb = nnx.Linear(emb_dim, cout, rngs=rngs)
        self.norm2 = nnx.GroupNorm(cout, num_groups=groups, rngs=rngs)
        # Zero-initialised last conv: each block starts as the identity (stable early training).
        self.conv2 = nnx.Conv(cout, cout, (3, 3), kernel_init=nnx.initializers.zeros, rngs=rngs)
        self.skip = nnx.Conv(cin, cout, (1, 1), rngs=rngs) if cin != cout else None

    def __call__(self, x, emb):
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, None, None, :]
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        return h + (x if self.skip is None else self.skip(x))


class UNet(nnx.Module):
    """ε-prediction U-Net on single-channel images, conditioned on the log-SNR ρ.

    Stem (optional space-to-depth by ``patch``) → residual block at full resolution →
    strided-conv downsample → two residual blocks at half resolution → nearest upsample +
    conv → concatenate the skip → residual block → output conv → depth-to-space. ρ enters
    through Fourier features and an MLP added inside every residual block.

    Args:
      config: the ``ModelConfig``.
      rngs: ``nnx.Rngs`` for the initial parameters.

    Example:
      >>> from flax import nnx
      >>> from specdiff.nn.denoisers import ModelConfig, UNet
      >>> net = UNet(ModelConfig(shape=(8, 8)), rngs=nnx.Rngs(0))
      >>> net(jnp.zeros((2, 8, 8)), jnp.zeros(2)).shape
      (2, 8, 8)
    """

    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        self.config = config
        c0, c1 = config.channels
        e, g, p = config.emb_dim, config.groups, config.patch
        self.emb1 = nnx.Linear(e // 2 + 1, e, rngs=rngs)
        self.emb2 = nnx.Linear(e, e, rngs=rngs)
        self.stem = nnx.Conv(p * p, c0, (3, 3), rngs=rngs)
        self.enc0 = _ResBlock(c0, c0, e, g, rngs)
        self.down = nnx.Conv(c0, c1, (3, 3), strides=(2, 2), rngs=rngs)
        self.mid1 = _ResBlock(c1, c1, e, g, rngs)
        self.mid2 = _ResBlock(c1, c1, e, g, rngs)
        self.up = nnx.Conv(c1, c0, (3, 3), rngs=rngs)
        self.dec0 = _ResBlock(2 * c0, c0, e, g, rngs)
        self.out_norm = nnx.GroupNorm(c0, num_groups=g, rngs=rngs)
        self.out = nnx.Conv(c0, p * p, (3, 3), kernel_init=nnx.initializers.zeros, rngs=rngs)

    def _embed(self, rho):
        e = self.config.emb_dim
        freqs = jnp.exp(jnp.linspace(jnp.log(0.05), jnp.log(4.0), e // 4, dtype=rho.dtype))
        f = rho[:, None] * freqs[None, :]
        feats = jnp.concatenate([jnp.sin(f), jnp.cos(f), rho[:, None] / 10.0], axis=-1)
        return self.emb2(jax.nn.silu(self.emb1(feats)))

    def _eps(self, x, rho):
        n, (h, w), p = x.shape[0], self.config.shape, self.config.patch
        z = (
            x.reshape(n, h // p, p, w // p, p)
            .transpose(0, 1, 3, 2, 4)
            .reshape(n, h // p, w // p, -1)
        )
        emb = self._embed(rho)
        h0 = self.enc0(self.stem(z), emb)
        h1 = self.mid2(self.mid1(self.down(h0), emb), emb)
        h1 = jnp.repeat(jnp.repeat(h1, 2, axis=1), 2, axis=2)
        out = self.dec0(jnp.concatenate([self.up(h1), h0], axis=-1), emb)
        out = self.out(jax.nn.silu(self.out_norm(out)))
        return out.reshape(n, h // p, w // p, p, p).transpose(0, 1, 3, 2, 4).reshape(n, h, w)

    def __call__(self, x, log_snr):
        """ε̂(x, ρ) for x of shape (n, H, W) in VP units and ρ scalar or (n,)."""
        x = jnp.asarray(x)
        rho = jnp.broadcast_to(jnp.asarray(log_snr, x.dtype), x.shape[:1])
        lo, hi = self.config.log_snr_range
        rho_c = jnp.clip(rho, lo, hi)  # the network is conditioned inside its trained range
        out = self._eps(x, rho_c)
        b = (slice(None),) + (None,) * (x.ndim - 1)
        a, s = jnp.exp(0.5 * jax.nn.log_sigmoid(rho)), jnp.exp(0.5 * jax.nn.log_sigmoid(-rho))
        if self.config.parametrization == "v":
            # ε̂ = σ·x + α·F with F ≈ v = α·ε − σ·x0: exact limits ε̂ → x (α → 0) and
            # x̂0 = α·x − σ·F → x (σ → 0), so network errors are never amplified by σ/α.
            return s[b] * x + a[b] * out
        # "eps": F is ε̂ itself. Below the trained range hold x̂0 (stable at high noise), i.e.
        # recompute ε̂ from the x̂0 predicted at ρ_min; above it hold ε̂ (stable near clean).
        a_c = jnp.exp(0.5 * jax.nn.log_sigmoid(rho_c))
        s_c = jnp.exp(0.5 * jax.nn.log_sigmoid(-rho_c))
        x0_c = (x - s_c[b] * out) / a_c[b]
        eps_low = (x - a[b] * x0_c) / s[b]
        return jnp.where((rho < lo)[b], eps_low, out)


# ---------------------------------------------------------------------------------------------
# Compiled initialisation and forward pass
# ---------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("config",))
def _init_params(config: ModelConfig, key):
    return nnx.split(UNet(config, rngs=nnx.Rngs(params=key)))[1]


def init_unet(config: ModelConfig, key: jax.Array) -> UNet:
    """A freshly initialised ``UNet`` (initialisation compiled: much faster than eager on CPU)."""
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: UNet(config, rngs=nnx.Rngs(0))))
    return nnx.merge(graphdef, _init_params(config, key))


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _apply(graphdef, state, x, log_snr):
    return nnx.merge(graphdef, state)(x, log_snr)


def apply(model: nnx.Module, x, log_snr) -> jax.Array:
    """``model(x, log_snr)`` compiled (eager NNX calls dispatch op by op; this is one call)."""
    graphdef, state = nnx.split(model)
    return _apply(graphdef, state, jnp.asarray(x), jnp.asarray(log_snr))
