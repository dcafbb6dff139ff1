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
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import random
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np

from specdiff.core.checks import check_choice
from specdiff.core.spectrum import Spectrum

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
]

SPLITS = ("train", "test", "all")
TEST_FRACTION = 0.2
SPLIT_SEED = 0
# Rec. 709 luma, as skimage.color.rgb2gray.
LUMA = np.array([0.2125, 0.7154, 0.0721])

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


def _check_split(split: str) -> str:
    check_choice("split", split, SPLITS)
    return split


def _permutation_split(n: int, split: str) -> np.ndarray:
    """Indices of ``split`` under the fixed permutation split (first ⌈N/5⌉ are test)."""
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_test = math.ceil(TEST_FRACTION * n)
    test, train = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    return {"train": train, "test": test, "all": np.concatenate([train, test])}[split]


def _scale_uint8(x) -> np.ndarray:
    return (np.asarray(x, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)).astype(
        np.float32
    )


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


# --------------------------------------------------------------------------- external files


def _read_error(path, what: str, err: Exception | str) -> ValueError:
    return ValueError(f"{what} {str(path)!r} could not be read: {err}")


def _folder(folder, what: str) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{what} folder {str(folder)!r} does not exist or is not a folder")
    return folder


CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = ("test_batch",)


def _cifar_batch(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ValueError(f"CIFAR-10 batch file {str(path)!r} is missing")
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = batch[b"data"] if b"data" in batch else batch["data"]
        data = np.asarray(data, dtype=np.uint8)
    except Exception as e:  # pickle/KeyError/TypeError on a corrupt or foreign file
        raise _read_error(path, "CIFAR-10 batch file", f"{type(e).__name__}: {e}") from None
    if data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(
            f"CIFAR-10 batch file {str(path)!r} has data of shape {data.shape}; expected (N, 3072)"
        )
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def iter_cifar10(folder, split: str = "train"):
    """Yield the CIFAR-10 batches of ``split`` one file at a time, float32 (10000, 32, 32, 3).

    For streaming PCA (``spectra.pca(iter_cifar10(folder))``): one batch file (123 MB as
    float32) is in memory at a time. Scaling and layout as ``load_cifar10``.
    """
    folder = _folder(folder, "CIFAR-10")
    _check_split(split)
    names = {"train": CIFAR_TRAIN, "test": CIFAR_TEST, "all": CIFAR_TRAIN + CIFAR_TEST}[split]
    for n in names:
        yield _scale_uint8(_cifar_batch(folder / n))


def load_cifar10(folder, split: str = "train") -> np.ndarray:
    """CIFAR-10 from the python-pickle folder ``cifar-10-batches-py``.

    ``train``: data_batch_1..5; ``test``: test_batch; ``all``: both. Each batch is a pickle
    of a dict with ``b"data"``, uint8 (N, 3072) rows of R, G, B planes of 32×32. Returns
    float32 (N, 32, 32, 3), channels last, x/127.5 − 1.
    """
    return np.concatenate(list(iter_cifar10(folder, split)), 0)


def _resample_linear(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Linear interpolation onto the grid t_j = j/rate_out (no anti-alias filter)."""
    if rate_in == rate_out:
        return x
    n_out = int(math.floor(len(x) * rate_out / rate_in))
    t_out = np.arange(n_out) * (rate_in / rate_out)
    return np.interp(t_out, np.arange(len(x)), x)


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    try:
        with wave.open(str(path), "rb") as w:
            ch, width, rate, n = (
                w.getnchannels(),
                w.getsampwidth(),
                w.getframerate(),
                w.getnframes(),
            )
            raw = w.readframes(n)
    except (wave.Error, EOFError, OSError) as e:
        raise _read_error(path, "WAV file", e) from None
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float64) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float64) / 32768.0
    elif width == 4:
        x = np.frombuffer(raw, "<i4").astype(np.float64) / 2.0**31
    else:
        raise ValueError(
            f"WAV file {str(path)!r} has {8 * width}-bit samples; 8/16/32-bit PCM only"
        )
    if x.size != n * ch:
        raise ValueError(f"WAV file {str(path)!r} is truncated ({x.size} of {n * ch} samples)")
    return x.reshape(-1, ch).mean(axis=1), rate


def load_wav_folder(folder, sample_rate: int = 16000, seconds: float = 1.0) -> np.ndarray:
    """Every ``*.wav`` in ``folder`` (sorted by name; SC09-style clips) as (N, L) float32.

    Per file: PCM samples scaled to [−1, 1) (16-bit: x/32768), channels averaged to mono,
    resampled to ``sample_rate`` by linear interpolation when the file's rate differs
    (no anti-alias filter), then cropped to the first L = round(sample_rate·seconds) samples
    or zero-padded at the end to L.
    """
    folder = _folder(folder, "WAV")
    if not sample_rate > 0 or not seconds > 0:
        raise ValueError(f"sample_rate and seconds must be > 0, got {sample_rate}, {seconds}")
    files = sorted(folder.glob("*.wav")) + sorted(folder.glob("*.WAV"))
    if not files:
        raise ValueError(f"WAV folder {str(folder)!r} contains no .wav files")
    length = int(round(sample_rate * seconds))
    out = np.zeros((len(files), length), dtype=np.float32)
    for i, path in enumerate(files):
        x, rate = _read_wav(path)
        x = _resample_linear(x, rate, int(sample_rate))[:length]
        out[i, : len(x)] = x
    return out


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def load_image_folder(folder, size: int | None = None, gray: bool = False) -> np.ndarray:
    """Every PNG (and JPEG, where Pillow is installed) in ``folder``, sorted by name.

    Read with ``matplotlib.image.imread``: PNGs give floats in [0, 1] (scaled 2x − 1),
    JPEGs uint8 (scaled x/127.5 − 1). Alpha is dropped, grey images get one channel
    repeated to 3 unless ``gray=True`` (then RGB becomes Rec. 709 luma, shape (N, H, W)).
    ``size``: a centre crop to size×size (no resizing); without it all images must have the
    same shape. Returns float32 (N, H, W, 3) or (N, H, W).
    """
    import matplotlib.image as mpimg

    folder = _folder(folder, "image")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"image folder {str(folder)!r} contains no {'/'.join(IMAGE_SUFFIXES)}")
    out = []
    for path in files:
        try:
            img = np.asarray(mpimg.imread(path))
        except Exception as e:  # PIL/png errors on corrupt files
            raise _read_error(path, "image file", f"{type(e).__name__}: {e}") from None
        img = img.astype(np.float64) / 255.0 if img.dtype == np.uint8 else img.astype(np.float64)
        if img.ndim == 3:
            img = img[..., :3]
            img = img @ LUMA if gray else img
        elif not gray:
            img = np.repeat(img[..., None], 3, axis=-1)
        if size is not None:
            h, w = img.shape[:2]
            if h < size or w < size:
                raise ValueError(f"image file {str(path)!r} ({h}×{w}) is smaller than {size}")
            r, c = (h - size) // 2, (w - size) // 2
            img = img[r : r + size, c : c + size]
        if out and img.shape != out[0].shape:
            raise ValueError(
                f"image file {str(path)!r} has shape {img.shape}, others {out[0].shape}; "
                "pass size= to centre-crop them to one size"
            )
        out.append(img)
    return (2.0 * np.stack(out) - 1.0).astype(np.float32)


def load_npy(path) -> np.ndarray:
    """A ``.npy`` array (N, ...) as float32, values unchanged (no pickles are loaded)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f".npy file {str(path)!r} does not exist")
    try:
        x = np.load(path, allow_pickle=False)
    except Exception as e:
        raise _read_error(path, ".npy file", f"{type(e).__name__}: {e}") from None
    if not isinstance(x, np.ndarray) or x.ndim < 2 or not np.issubdtype(x.dtype, np.number):
        raise ValueError(f".npy file {str(path)!r} must hold a numeric array (N, ...) of ndim ≥ 2")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f".npy file {str(path)!r} contains NaN or infinite values")
    return x
