"""Loaders of the data people have, in external formats (issue 4, item 3).

Holds ``load_cifar10``/``iter_cifar10`` (the python-pickle CIFAR-10 folder),
``load_wav_folder`` (PCM WAV clips), ``load_image_folder`` (PNG/JPEG) and ``load_npy``.
Every loader returns float32 (N, *sample_shape) scaled as described in ``datasets``, which
re-exports them; a file that cannot be read raises a ``ValueError`` naming it.
"""

from __future__ import annotations

import math
import pickle
import wave
from pathlib import Path

import numpy as np

from specdiff.data.conventions import LUMA, _check_split, _scale_uint8

__all__ = ["load_cifar10", "iter_cifar10", "load_wav_folder", "load_image_folder", "load_npy"]


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
    folder = _folder(folder, "image")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"image folder {str(folder)!r} contains no {'/'.join(IMAGE_SUFFIXES)}")
    out = []
    for path in files:
        img = _read_image(path, gray)
        if size is not None:
            img = _centre_crop(img, size, path)
        if out and img.shape != out[0].shape:
            raise ValueError(
                f"image file {str(path)!r} has shape {img.shape}, others {out[0].shape}; "
                "pass size= to centre-crop them to one size"
            )
        out.append(img)
    return (2.0 * np.stack(out) - 1.0).astype(np.float32)


def _read_image(path: Path, gray: bool) -> np.ndarray:
    """One image as float64 in [0, 1]: (H, W) if ``gray``, else (H, W, 3) (alpha dropped)."""
    import matplotlib.image as mpimg

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
    return img


def _centre_crop(img: np.ndarray, size: int, path: Path) -> np.ndarray:
    h, w = img.shape[:2]
    if h < size or w < size:
        raise ValueError(f"image file {str(path)!r} ({h}×{w}) is smaller than {size}")
    r, c = (h - size) // 2, (w - size) // 2
    return img[r : r + size, c : c + size]


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
