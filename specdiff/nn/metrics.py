"""Sample-quality metrics: Fréchet distance, KID, feature statistics and in-project features.

Names are kept honest: **FD-pixel** is the Fréchet distance between Gaussian fits of the
raw pixels, **FD-classifier** the same in the feature space of a small classifier trained in
this project (below), **KID-classifier** the kernel inception distance formula (Bińkowski et
al. 2018) in that feature space. "FID" means Inception-v3 pool features only; specdiff cannot
download them, but ``save_feature_stats``/``load_feature_stats`` read and write the usual
``.npz`` with ``mu`` and ``sigma``, so statistics from any external feature extractor plug
into ``frechet_distance``.

Fréchet distance between N(μ1, C1) and N(μ2, C2):

    FD = |μ1 − μ2|² + tr(C1 + C2 − 2·(C1^½ C2 C1^½)^½)

computed in float64 with symmetric eigendecompositions (negative round-off eigenvalues
clipped), which is stable for the singular covariances that few samples give and never
returns the complex values that a general ``sqrtm`` can.

Feature extractors (``train_classifier``/``load_classifier``, shipped in
``specdiff/nn/weights/classifiers/<dataset>/``):

- ``digits``: the label classifier (an MLP on the 64 pixels, 10 digit classes); features are
  its last hidden layer.
- ``patches_gray``: a small CNN trained to tell which of the 11 source photographs a 32×32
  patch was cut from. Why this task: natural-image patches have no labels, and a metric
  in pixel space mostly sees second-order statistics, which is exactly what the Gaussian
  analysis already models. Telling grass from gravel, brick from the smooth sky of the moon
  or astronaut photographs needs texture, edge and contrast cues — the higher-order
  structure a generator must reproduce and a Gaussian cannot — so its features measure
  what pixel FD misses. It is supervised (as Inception features are), needs only the
  provenance that ``specdiff.datasets`` already fixes, and trains in about a minute. A
  random-weight network was the alternative; its features are less tied to perceptual
  structure and their scale is arbitrary.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from specdiff.core.io import atomic_write, write_json

__all__ = [
    "FeatureStats",
    "feature_stats",
    "frechet_distance",
    "kid",
    "save_feature_stats",
    "load_feature_stats",
    "ClassifierConfig",
    "Classifier",
    "CLASSIFIER_CONFIGS",
    "classifier_data",
    "train_classifier",
    "save_classifier",
    "load_classifier",
    "extract_features",
]

CLASSIFIER_DIR = Path(__file__).parent / "weights" / "classifiers"
CLASSIFIER_FORMAT = "specdiff.classifier/1"


# ---------------------------------------------------------------------------------------------
# Fréchet distance and feature statistics
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FeatureStats:
    """Gaussian fit of a feature set: ``mu`` (d,), ``sigma`` (d, d), ``n`` samples (or None)."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int | None = None

    def __post_init__(self):
        mu = np.asarray(self.mu, dtype=np.float64)
        sigma = np.asarray(self.sigma, dtype=np.float64)
        if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
            raise ValueError(
                f"feature statistics need mu of shape (d,) and sigma of shape (d, d); got "
                f"{mu.shape} and {sigma.shape}"
            )
        if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
            raise ValueError("feature statistics mu and sigma must be finite")
        if not np.allclose(sigma, sigma.T, rtol=1e-6, atol=1e-10 * max(1.0, np.abs(sigma).max())):
            raise ValueError("sigma must be a symmetric covariance matrix")
        object.__setattr__(self, "mu", mu)
        object.__setattr__(self, "sigma", sigma)


def feature_stats(features) -> FeatureStats:
    """Mean and (unbiased, ddof=1) covariance of an (n, d) feature array, in float64.

    Samples of any shape (n, ...) are flattened to (n, d).
    """
    f = np.asarray(features, dtype=np.float64)
    if f.ndim < 2 or f.shape[0] < 2:
        raise ValueError(f"features must have shape (n >= 2, d, ...), got {f.shape}")
    f = f.reshape(f.shape[0], -1)
    if not np.isfinite(f).all():
        raise ValueError("features contain NaN or inf (did sampling diverge?)")
    return FeatureStats(f.mean(0), np.cov(f, rowvar=False, ddof=1).reshape(f.shape[1], -1), len(f))


def _as_stats(x, name: str) -> FeatureStats:
    if isinstance(x, FeatureStats):
        return x
    if isinstance(x, (str, Path)):
        return load_feature_stats(x)
    if isinstance(x, tuple) and len(x) == 2:
        return FeatureStats(*x)
    try:
        return feature_stats(x)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None


def _psd_sqrt(c: np.ndarray) -> np.ndarray:
    w, u = np.linalg.eigh((c + c.T) / 2)
    return (u * np.sqrt(np.clip(w, 0.0, None))) @ u.T


def frechet_distance(a, b) -> float:
    """FD = |μ1 − μ2|² + tr(C1 + C2 − 2(C1^½ C2 C1^½)^½), the squared W2 of the Gaussian fits.

    Args:
      a, b: each a ``FeatureStats``, a ``(mu, sigma)`` tuple, a path to a ``.npz`` with
        ``mu`` and ``sigma``, or an (n, d, ...) array of samples/features.

    Returns:
      The Fréchet distance (a float ≥ 0; tiny negative round-off is clipped to 0).

    Example:
      >>> import numpy as np
      >>> float(round(frechet_distance((np.zeros(2), np.eye(2)), (np.ones(2), 4 * np.eye(2))), 6))
      4.0
    """
    s1, s2 = _as_stats(a, "a"), _as_stats(b, "b")
    if s1.mu.shape != s2.mu.shape:
        raise ValueError(f"feature dimensions differ: {s1.mu.size} vs {s2.mu.size}")
    r1 = _psd_sqrt(s1.sigma)
    cross = np.linalg.eigvalsh(r1 @ s2.sigma @ r1)
    tr_cross = np.sqrt(np.clip(cross, 0.0, None)).sum()
    fd = np.sum((s1.mu - s2.mu) ** 2) + np.trace(s1.sigma) + np.trace(s2.sigma) - 2 * tr_cross
    return float(max(fd, 0.0))


def save_feature_stats(path, stats: FeatureStats) -> None:
    """Write ``mu`` and ``sigma`` (and ``n``) to an ``.npz`` file, atomically."""
    arrays = {"mu": stats.mu, "sigma": stats.sigma}
    if stats.n is not None:
        arrays["n"] = np.asarray(stats.n)
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)


def load_feature_stats(path) -> FeatureStats:
    """Read precomputed statistics from an ``.npz`` with arrays ``mu`` (d,) and ``sigma`` (d, d)
    (the format of pytorch-fid/clean-fid statistics files)."""
    from specdiff.core.io import read_npz

    path = Path(path)
    data = read_npz(path, "feature statistics file", required=("mu", "sigma"))
    n = int(data["n"]) if "n" in data else None
    try:
        return FeatureStats(data["mu"], data["sigma"], n)
    except ValueError as e:
        raise ValueError(f"{str(path)!r}: {e}") from None


# ---------------------------------------------------------------------------------------------
# KID
# ---------------------------------------------------------------------------------------------


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    kxx = (x @ x.T / d + 1.0) ** 3
    kyy = (y @ y.T / d + 1.0) ** 3
    kxy = (x @ y.T / d + 1.0) ** 3
    m, n = len(x), len(y)
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def kid(
    x, y, key: jax.Array, num_subsets: int = 100, subset_size: int = 1000
) -> tuple[float, float]:
    """Kernel inception distance formula: unbiased MMD² with k(a, b) = (aᵀb/d + 1)³.

    Averaged over ``num_subsets`` random subsets of ``min(subset_size, n_x, n_y)`` rows
    drawn without replacement from each set (subset j from ``fold_in(key, j)``), as in
    Bińkowski et al. (2018).

    Args:
      x, y: (n, d, ...) feature arrays (flattened per row).
      key: typed ``jax.random.key``.
      num_subsets, subset_size: as above.

    Returns:
      (mean, std) of the subset estimates. The estimator is unbiased: for two sets from one
      distribution the mean is 0 up to its standard error std/√num_subsets.
    """
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("features contain NaN or inf (did sampling diverge?)")
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(x)} and {len(y)}")
    vals = []
    for j in range(num_subsets):
        kx, ky = jax.random.split(jax.random.fold_in(key, j))
        ix = np.asarray(jax.random.permutation(kx, len(x)))[:m]
        iy = np.asarray(jax.random.permutation(ky, len(y)))[:m]
        vals.append(_mmd2_unbiased(x[ix], y[iy]))
    vals = np.asarray(vals)
    return float(vals.mean()), float(vals.std(ddof=1) if len(vals) > 1 else 0.0)


# ---------------------------------------------------------------------------------------------
# In-project classifiers (feature extractors)
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    """``kind="mlp"``: two hidden layers (width, features); ``"cnn"``: three 3×3 conv stages
    (width, 2·width, features) with 2× average pooling, then global mean pooling."""

    kind: str = "mlp"
    shape: tuple[int, ...] = (8, 8)
    num_classes: int = 10
    width: int = 128
    features: int = 64

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(self.shape))
        if self.kind not in ("mlp", "cnn"):
            raise ValueError(f"unknown classifier kind {self.kind!r}; allowed: 'mlp', 'cnn'")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self).items()}


CLASSIFIER_CONFIGS = {
    "digits": ClassifierConfig("mlp", (8, 8), 10, 128, 64),
    "patches_gray": ClassifierConfig("cnn", (32, 32), 11, 16, 64),
}


class Classifier(nnx.Module):
    """Small classifier whose last hidden layer gives the features (``.features(x)``)."""

    def __init__(self, config: ClassifierConfig, rngs: nnx.Rngs):
        self.config = config
        w, f = config.width, config.features
        if config.kind == "mlp":
            d = int(np.prod(config.shape))
            self.l1 = nnx.Linear(d, w, rngs=rngs)
            self.l2 = nnx.Linear(w, f, rngs=rngs)
        else:
            self.l1 = nnx.Conv(1, w, (3, 3), rngs=rngs)
            self.l2 = nnx.Conv(w, 2 * w, (3, 3), rngs=rngs)
            self.l3 = nnx.Conv(2 * w, f, (3, 3), rngs=rngs)
        self.head = nnx.Linear(f, config.num_classes, rngs=rngs)

    def features(self, x):
        x = jnp.asarray(x)
        n = x.shape[0]
        if self.config.kind == "mlp":
            h = jax.nn.silu(self.l1(x.reshape(n, -1)))
            return jax.nn.silu(self.l2(h))
        pool = lambda h: nnx.avg_pool(h, (2, 2), strides=(2, 2))  # noqa: E731
        h = x.reshape(n, *self.config.shape, 1)
        h = pool(jax.nn.silu(self.l1(h)))
        h = pool(jax.nn.silu(self.l2(h)))
        h = jax.nn.silu(self.l3(h))
        return h.mean(axis=(1, 2))

    def __call__(self, x):
        return self.head(self.features(x))


def classifier_data(dataset: str, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of a built-in dataset for its feature classifier.

    ``digits``: the digit labels of scikit-learn, in the row order of
    ``specdiff.datasets.load_dataset("digits", split)``. ``patches_gray``: the index of the
    source photograph; ``load_dataset`` concatenates equally many patches per photograph in
    the order of its photo list, so the label of row r is r // (N / 11).
    """
    from specdiff.data import datasets

    x = datasets.load_dataset(dataset, split=split)
    if dataset == "digits":
        from sklearn.datasets import load_digits

        raw = load_digits()
        idx = datasets._permutation_split(len(raw.target), split)
        if not np.allclose(raw.images[idx] / 8.0 - 1.0, x):
            raise ValueError("digits labels could not be aligned with load_dataset('digits')")
        return x, raw.target[idx].astype(np.int32)
    if dataset == "patches_gray":
        k = len({**datasets.PHOTOS_GRAY, **datasets.PHOTOS_COLOR})
        if len(x) % k:
            raise ValueError(f"patches_gray has {len(x)} rows, not a multiple of {k} photographs")
        return x, np.repeat(np.arange(k, dtype=np.int32), len(x) // k)
    raise ValueError(
        f"no feature classifier for {dataset!r}; allowed: {sorted(CLASSIFIER_CONFIGS)}"
    )


@functools.partial(jax.jit, static_argnames=("graphdef", "opt"), donate_argnums=(1, 2))
def _clf_step(graphdef, params, opt_state, x, y, *, opt):
    def loss_fn(p):
        logits = nnx.merge(graphdef, p)(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _clf_apply(graphdef, params, x):
    model = nnx.merge(graphdef, params)
    return model.features(x), model.head(model.features(x))


_CLF_OPT = optax.adamw(1e-3, weight_decay=1e-4)


def train_classifier(
    dataset: str, key: jax.Array, steps: int = 2000, batch_size: int = 128, data=None
) -> tuple[Classifier, dict]:
    """Train the feature classifier of ``dataset`` (AdamW 1e-3, cross-entropy).

    Args:
      dataset: ``"digits"`` or ``"patches_gray"``.
      key: typed key; initialisation from ``fold_in(key, 2**31 − 1)``, batch k from
        ``fold_in(key, k)``.
      steps, batch_size: optimisation length.
      data: optional ((x_train, y_train), (x_test, y_test)); default ``classifier_data``.

    Returns:
      (classifier, info with ``test_accuracy`` and ``train_accuracy``).
    """
    if dataset not in CLASSIFIER_CONFIGS:
        raise ValueError(
            f"no feature classifier for {dataset!r}; allowed: {sorted(CLASSIFIER_CONFIGS)}"
        )
    (xtr, ytr), (xte, yte) = data or (
        classifier_data(dataset, "train"),
        classifier_data(dataset, "test"),
    )
    cfg = CLASSIFIER_CONFIGS[dataset]
    model = Classifier(cfg, rngs=nnx.Rngs(params=jax.random.fold_in(key, 2**31 - 1)))
    graphdef, params = nnx.split(model)
    opt_state = _CLF_OPT.init(params)
    xtr_j, ytr_j = jnp.asarray(xtr, jnp.float32), jnp.asarray(ytr)
    for k in range(steps):
        idx = jax.random.randint(jax.random.fold_in(key, k), (batch_size,), 0, len(xtr))
        params, opt_state, _ = _clf_step(
            graphdef, params, opt_state, xtr_j[idx], ytr_j[idx], opt=_CLF_OPT
        )
    model = nnx.merge(graphdef, params)

    def acc(x, y):
        logits = _batched(lambda b: _clf_apply(graphdef, params, b)[1], x)
        return float(np.mean(np.argmax(logits, -1) == np.asarray(y)))

    info = {"train_accuracy": acc(xtr, ytr), "test_accuracy": acc(xte, yte), "steps": steps}
    return model, info


def _batched(fn, x, batch: int = 1024) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return np.concatenate(
        [np.asarray(fn(jnp.asarray(x[i : i + batch]))) for i in range(0, len(x), batch)]
    )


def extract_features(classifier: Classifier, x, batch: int = 1024) -> np.ndarray:
    """Features (n, features) of images x (n, *shape), computed in batches under ``jit``."""
    x = np.asarray(x, dtype=np.float32)
    if tuple(x.shape[1:]) != classifier.config.shape:
        raise ValueError(
            f"images have shape {tuple(x.shape[1:])}; the classifier expects "
            f"{classifier.config.shape}"
        )
    graphdef, params = nnx.split(classifier)
    return _batched(lambda b: _clf_apply(graphdef, params, b)[0], x, batch)


def save_classifier(classifier: Classifier, path, metadata: dict | None = None) -> Path:
    """Write ``classifier.json`` and the orbax ``params/`` into ``path`` (assembled beside it
    and moved into place)."""
    import orbax.checkpoint as ocp

    path = Path(path).absolute()
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _, params = nnx.split(classifier)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(tmp / "params", params, force=True)
        ckptr.wait_until_finished()
    rec = {
        "format": CLASSIFIER_FORMAT,
        "config": classifier.config.to_dict(),
        "metadata": metadata or {},
    }
    write_json(tmp / "classifier.json", rec)
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    return path


def load_classifier(name_or_path) -> Classifier:
    """Restore a feature classifier: a shipped dataset name or a folder from ``save_classifier``.

    Raises:
      ValueError: missing folder/files or parameters that do not fit the stored config.
    """
    import orbax.checkpoint as ocp

    p = Path(name_or_path)
    if not p.exists() and (CLASSIFIER_DIR / str(name_or_path)).exists():
        p = CLASSIFIER_DIR / str(name_or_path)
    meta_path = p / "classifier.json"
    if not meta_path.is_file() or not (p / "params").is_dir():
        shipped = sorted(
            q.name for q in CLASSIFIER_DIR.glob("*") if (q / "classifier.json").is_file()
        )
        raise ValueError(
            f"no classifier checkpoint at {str(name_or_path)!r} (needs classifier.json and "
            f"params/); shipped: {', '.join(shipped) or 'none'}"
        )
    rec = json.loads(meta_path.read_text())
    if rec.get("format") != CLASSIFIER_FORMAT:
        raise ValueError(f"{str(meta_path)!r} is not a {CLASSIFIER_FORMAT!r} record")
    cfg = ClassifierConfig(**rec["config"])
    abstract = nnx.eval_shape(lambda: Classifier(cfg, rngs=nnx.Rngs(0)))
    graphdef, abstract_state = nnx.split(abstract)
    try:
        with ocp.StandardCheckpointer() as ckptr:
            params = ckptr.restore((p / "params").absolute(), abstract_state)
    except Exception as e:
        raise ValueError(
            f"classifier checkpoint {str(p)!r} does not match its config {cfg}: {e}"
        ) from None
    return nnx.merge(graphdef, params)
