"""Built-in datasets (no download) and loaders for the data people have (issue 4, item 2–3).

Every loader returns a float32 array of shape (N, *sample_shape), scaled to roughly
[−1, 1]:

- 8-bit images (photographs, CIFAR-10, PNG/JPEG folders): x/127.5 − 1, exactly [−1, 1];
  float images already in [0, 1] (matplotlib's PNG reader, LFW): 2x − 1.
- ``digits`` (grey levels 0..16): x/8 − 1.
- ``mnist1d`` (centred and standardised to unit std by the ``mnist1d`` package): x/3, so
  about 99% of the values lie in [−1, 1].
- 16-bit PCM audio: x/32768, in [−1, 1); 8-bit PCM: (x − 128)/128; 32-bit PCM: x/2³¹.

Built-in datasets, in the registry ``DATASETS`` (name → ``DatasetInfo``):

==================  ==============  ==========================================================
name                sample shape    source
==================  ==============  ==========================================================
``digits``          (8, 8)          scikit-learn's bundled handwritten digits (1,797 images)
``patches_gray``    (32, 32)        patches cut from scikit-image's bundled photographs
``patches_color``   (32, 32, 3)     patches cut from scikit-image's bundled colour photographs
``lfw``             (25, 25)        scikit-image's bundled LFW face subset (200 faces)
``mnist1d``         (40,)           MNIST-1D generated locally by the ``mnist1d`` package
==================  ==============  ==========================================================

Splits (``split="train" | "test" | "all"``), deterministic and documented per dataset:

- ``digits``, ``lfw``: a fixed permutation ``np.random.default_rng(0).permutation(N)``;
  its first ⌈N/5⌉ indices (sorted) are the test set, the rest (sorted) the training set.
- ``patches_*``: split in space, so no pixel is shared between the two: in every photograph
  the left 80% of the columns gives training patches, the right 20% test patches.
- ``mnist1d``: the package's own split (4,000 train, 1,000 test, ``train_split=0.8``).
- ``"all"`` is train followed by test.

Nothing is downloaded: the photographs are read only if they ship inside the installed
scikit-image wheel (checked before reading), and MNIST-1D is generated, never fetched.

This module holds the built-in datasets, their registry, ``patches`` and
``dataset_spectrum``; the loaders of external formats (CIFAR-10 pickles, WAV and image
folders, ``.npy``) live in ``loaders`` and the split and scaling rules in ``conventions``,
both re-exported here.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np

from specdiff.core.checks import check_choice
from specdiff.core.spectrum import Spectrum
from specdiff.data.conventions import (
    LUMA,
    SPLIT_SEED,
    SPLITS,
    TEST_FRACTION,
    _check_split,
    _permutation_split,
    _scale_uint8,
)
from specdiff.data.loaders import (
    CIFAR_TEST,
    CIFAR_TRAIN,
    IMAGE_SUFFIXES,
    iter_cifar10,
    load_cifar10,
    load_image_folder,
    load_npy,
    load_wav_folder,
)

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "SPLITS",
    "PHOTOS_GRAY",
    "PHOTOS_COLOR",
    "load_dataset",
    "dataset_spectrum",
    "patches",
    "load_cifar10",
    "iter_cifar10",
    "load_wav_folder",
    "load_image_folder",
    "load_npy",
    "CIFAR_TRAIN",
    "CIFAR_TEST",
    "IMAGE_SUFFIXES",
    "SPLIT_SEED",
    "TEST_FRACTION",
    "LUMA",
]

# Photographs shipped inside the scikit-image wheel: skimage.data function → file name.
PHOTOS_COLOR = {
    "astronaut": "astronaut.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "rocket": "rocket.jpg",
    "stereo_motorcycle": "motorcycle_left.png",
}
PHOTOS_GRAY = {
    "camera": "camera.png",
    "moon": "moon.png",
    "coins": "coins.png",
    "brick": "brick.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
}


# --------------------------------------------------------------------------- built-ins


def _digits(split: str = "train") -> np.ndarray:
    from sklearn.datasets import load_digits

    x = load_digits().images  # (1797, 8, 8), grey levels 0..16
    x = (x / 8.0 - 1.0).astype(np.float32)
    return x[_permutation_split(len(x), _check_split(split))]


def _lfw(split: str = "train") -> np.ndarray:
    import skimage.data

    _require_bundled("lfw_subset.npy")
    x = np.asarray(skimage.data.lfw_subset(), dtype=np.float64)  # (200, 25, 25) in [0, 1]
    x = (2.0 * x - 1.0).astype(np.float32)
    return x[_permutation_split(len(x), _check_split(split))]


def _mnist1d(split: str = "train", seed: int = 42, num_samples: int = 5000) -> np.ndarray:
    """MNIST-1D via ``mnist1d.data.make_dataset`` (never ``get_dataset``, which downloads).

    The package seeds Python's and NumPy's global generators itself; we save and restore
    both around the call, so loading leaves no global state changed.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    _check_split(split)
    args = get_dataset_args()
    args.seed = int(seed)
    args.num_samples = int(num_samples)
    np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)
    parts = {"train": [data["x"]], "test": [data["x_test"]], "all": [data["x"], data["x_test"]]}
    return (np.concatenate(parts[split], 0) / 3.0).astype(np.float32)


def _skimage_dir() -> Path:
    import skimage.data

    return Path(skimage.data.__file__).parent


def _require_bundled(filename: str) -> None:
    path = _skimage_dir() / filename
    if not path.is_file():
        raise ValueError(
            f"scikit-image's bundled file {str(path)!r} is missing from this installation; "
            "specdiff reads only files shipped in the wheel and never downloads"
        )


def _photo(name: str, filename: str) -> np.ndarray:
    import skimage.data

    _require_bundled(filename)
    img = getattr(skimage.data, name)()
    if isinstance(img, tuple):  # stereo_motorcycle → (left, right, disparity)
        img = img[0]
    return np.asarray(img)


def _to_gray(img: np.ndarray) -> np.ndarray:
    """uint8 RGB → float luma in [0, 255] (Rec. 709 weights); gray images pass through."""
    img = np.asarray(img, dtype=np.float64)
    return img[..., :3] @ LUMA if img.ndim == 3 else img


def patches(
    image: np.ndarray, size: int, count: int, region: str, rng: np.random.Generator
) -> np.ndarray:
    """``count`` size×size patches at uniform random positions inside one region of ``image``.

    ``region="train"`` is the left 80% of the columns (c < ⌊0.8·W⌋), ``"test"`` the right
    20%; a patch lies entirely inside its region, so the two never share a pixel. Positions
    come from ``rng`` (top-left corner (r, c) uniform over the valid range).
    """
    h, w = image.shape[:2]
    cut = int(math.floor((1 - TEST_FRACTION) * w))
    c_lo, c_hi = (0, cut) if region == "train" else (cut, w)
    if h < size or c_hi - c_lo < size:
        raise ValueError(f"image of shape {image.shape} too small for {size}×{size} patches")
    r = rng.integers(0, h - size + 1, count)
    c = rng.integers(c_lo, c_hi - size + 1, count)
    return np.stack([image[i : i + size, j : j + size] for i, j in zip(r, c)])


def _patches(
    photos: dict[str, str],
    gray: bool,
    split: str,
    size: int,
    per_image: int,
    seed: int,
) -> np.ndarray:
    _check_split(split)
    if not (isinstance(size, int) and size >= 1) or not (
        isinstance(per_image, int) and per_image >= 1
    ):
        raise ValueError(f"size and per_image must be positive integers, got {size}, {per_image}")
    regions = ("train", "test") if split == "all" else (split,)
    out = []
    for region in regions:
        # Training regions hold 4× the columns of test regions: draw counts in proportion.
        count = per_image if region == "train" else max(1, per_image // 4)
        for i, (name, filename) in enumerate(photos.items()):
            img = _photo(name, filename)
            img = _to_gray(img) if gray else np.asarray(img)[..., :3]
            rng = np.random.default_rng([seed, i, 0 if region == "train" else 1])
            out.append(patches(img, size, count, region, rng))
    return _scale_uint8(np.concatenate(out, 0))


def _patches_gray(
    split: str = "train", size: int = 32, per_image: int = 1000, seed: int = 0
) -> np.ndarray:
    photos = {**PHOTOS_GRAY, **PHOTOS_COLOR}
    return _patches(photos, True, split, size, per_image, seed)


def _patches_color(
    split: str = "train", size: int = 32, per_image: int = 1000, seed: int = 0
) -> np.ndarray:
    return _patches(PHOTOS_COLOR, False, split, size, per_image, seed)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """A built-in dataset: its loader ``loader(split=..., **options)`` and what it holds."""

    name: str
    sample_shape: tuple[int, ...]
    description: str
    loader: Callable[..., np.ndarray]


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(
        "digits",
        (8, 8),
        "scikit-learn's bundled 8×8 handwritten digits (1,797); x/8 − 1; permutation split.",
        _digits,
    ),
    "patches_gray": DatasetInfo(
        "patches_gray",
        (32, 32),
        "32×32 grey patches at seeded random positions in 11 bundled scikit-image "
        "photographs (camera, moon, coins, brick, grass, gravel and the luma of astronaut, "
        "chelsea, coffee, rocket, motorcycle_left); per_image=1000 train / 250 test patches "
        "per photograph; x/127.5 − 1; spatial split (left 80% / right 20% of columns).",
        _patches_gray,
    ),
    "patches_color": DatasetInfo(
        "patches_color",
        (32, 32, 3),
        "32×32 RGB patches (channels last) from 5 bundled colour photographs (astronaut, "
        "chelsea, coffee, rocket, motorcycle_left); as patches_gray otherwise.",
        _patches_color,
    ),
    "lfw": DatasetInfo(
        "lfw",
        (25, 25),
        "scikit-image's bundled LFW subset (200 grey 25×25 faces); 2x − 1; permutation split.",
        _lfw,
    ),
    "mnist1d": DatasetInfo(
        "mnist1d",
        (40,),
        "MNIST-1D (5,000 signals of length 40) generated locally with mnist1d.make_dataset, "
        "seed 42; x/3; the package's 80/20 split.",
        _mnist1d,
    ),
}


def load_dataset(name: str, split: str = "train", **options) -> np.ndarray:
    """Load a built-in dataset as float32 (N, *sample_shape), scaled to about [−1, 1].

    Args:
      name: a key of ``DATASETS`` (``digits``, ``patches_gray``, ``patches_color``,
        ``lfw``, ``mnist1d``).
      split: ``"train"``, ``"test"`` or ``"all"`` (train then test); the split rule of each
        dataset is in the module docstring.
      **options: passed to the loader (``patches_*``: ``size``, ``per_image``, ``seed``;
        ``mnist1d``: ``seed``, ``num_samples``).

    Returns:
      A float32 array; the same call always returns the same array.

    Example:
      >>> import specdiff as sd
      >>> x = sd.datasets.load_dataset("digits", split="test")
      >>> x.shape, x.dtype
      ((360, 8, 8), dtype('float32'))
    """
    check_choice("dataset", name, tuple(DATASETS))
    _check_split(split)
    return DATASETS[name].loader(split=split, **options)


def dataset_spectrum(name: str, split: str = "train", **options) -> Spectrum:
    """PCA spectrum (``specdiff.spectra.pca``) of a built-in dataset, named after it.

    Computed on every call from the data in memory; nothing is cached on disk.
    """
    from specdiff.data import spectra

    x = load_dataset(name, split=split, **options)
    return spectra.pca(x).spectrum(name=name)
