"""In-project feature classifiers: the feature extractors of FD-classifier and KID-classifier.

Holds ``ClassifierConfig``, ``Classifier`` (flax NNX), the per-dataset configs, the labels
they are trained on (``classifier_data``), ``train_classifier``, ``extract_features`` and
``save_classifier``/``load_classifier`` (shipped in ``specdiff/nn/weights/classifiers/
<dataset>/``). Re-exported by ``metrics``.

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

from specdiff.core.io import write_json

__all__ = [
    "ClassifierConfig",
    "Classifier",
    "CLASSIFIER_CONFIGS",
    "CLASSIFIER_DIR",
    "classifier_data",
    "train_classifier",
    "save_classifier",
    "load_classifier",
    "extract_features",
]

CLASSIFIER_DIR = Path(__file__).parent / "weights" / "classifiers"
CLASSIFIER_FORMAT = "specdiff.classifier/1"


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
