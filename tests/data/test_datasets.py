"""sd.datasets: built-in datasets (shapes, scaling, deterministic splits, no global state) and
the file loaders, round-tripped through files the tests write in each format."""

import pickle
import wave

import matplotlib.image as mpimg
import numpy as np
import pytest

import specdiff as sd
from specdiff import datasets

# ----------------------------------------------------------------------------- built-ins


def test_registry_is_documented():
    assert set(datasets.DATASETS) == {"digits", "patches_gray", "patches_color", "lfw", "mnist1d"}
    for name, info in datasets.DATASETS.items():
        assert info.name == name and info.description and callable(info.loader)


def test_digits_split_is_deterministic_disjoint_and_complete():
    from sklearn.datasets import load_digits

    raw = load_digits().images / 8.0 - 1.0
    tr, te = datasets.load_dataset("digits"), datasets.load_dataset("digits", split="test")
    al = datasets.load_dataset("digits", split="all")
    assert tr.shape == (1437, 8, 8) and te.shape == (360, 8, 8) and tr.dtype == np.float32
    assert al.shape == (1797, 8, 8) and -1.0 <= al.min() and al.max() <= 1.0
    np.testing.assert_array_equal(al, np.concatenate([tr, te]))
    # Together they are exactly the bundled images, each once.
    key = lambda a: sorted(map(bytes, a.astype(np.float32)))  # noqa: E731
    assert key(al) == key(raw)
    np.testing.assert_array_equal(tr, datasets.load_dataset("digits", split="train"))


def test_patches_small_deterministic_and_spatially_split():
    g = datasets.load_dataset("patches_gray", per_image=8)
    assert g.shape == (11 * 8, 32, 32) and g.dtype == np.float32
    assert -1.0 <= g.min() < g.max() <= 1.0
    np.testing.assert_array_equal(g, datasets.load_dataset("patches_gray", per_image=8))
    te = datasets.load_dataset("patches_gray", split="test", per_image=8)
    assert te.shape == (11 * 2, 32, 32)
    c = datasets.load_dataset("patches_color", split="all", per_image=4)
    assert c.shape == (5 * 4 + 5 * 1, 32, 32, 3)
    assert not np.array_equal(c[..., 0], c[..., 1])  # real colour, not grey copies


def test_patch_cutting_keeps_train_and_test_regions_apart():
    img = np.tile(np.arange(100), (40, 1))  # pixel value = column index
    rng = np.random.default_rng(0)
    tr = datasets.patches(img, 8, 200, "train", rng)
    te = datasets.patches(img, 8, 200, "test", rng)
    assert tr.max() < 80 <= te.min()
    # Each patch is a contiguous crop: columns increase by one.
    assert np.all(np.diff(tr, axis=2) == 1) and np.all(np.diff(te, axis=2) == 1)


def test_patches_come_from_bundled_files_only():
    for filename in {**datasets.PHOTOS_GRAY, **datasets.PHOTOS_COLOR}.values():
        assert (datasets._skimage_dir() / filename).is_file(), filename


def test_lfw_and_mnist1d(monkeypatch):
    x = datasets.load_dataset("lfw")
    assert x.shape == (160, 25, 25) and x.dtype == np.float32 and x.min() >= -1 and x.max() <= 1
    state = np.random.get_state()[1].copy()  # noqa: NPY002
    m = datasets.load_dataset("mnist1d", split="all", num_samples=500)
    assert m.shape == (500, 40) and m.dtype == np.float32
    assert np.quantile(np.abs(m), 0.95) < 1.0
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # noqa: NPY002
    te = datasets.load_dataset("mnist1d", split="test", num_samples=500)
    np.testing.assert_array_equal(m[400:], te)


def test_dataset_spectrum_is_pca_of_the_training_split():
    spec = datasets.dataset_spectrum("digits")
    assert isinstance(spec, sd.Spectrum) and spec.name == "digits" and spec.dim == 64
    x = datasets.load_dataset("digits").reshape(-1, 64).astype(np.float64)
    ref = np.sort(np.linalg.eigvalsh(np.cov(x.T)))[::-1]
    np.testing.assert_allclose(np.asarray(spec.eigenvalues), np.clip(ref, 0, None), atol=1e-10)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "cifar100"}, "unknown dataset"),
        ({"name": "digits", "split": "val"}, "unknown split"),
    ],
)
def test_load_dataset_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        datasets.load_dataset(**kwargs)


# ----------------------------------------------------------------------------- CIFAR-10


def _write_cifar(folder, n=3):
    rng = np.random.default_rng(0)
    raw = {}
    for name in datasets.CIFAR_TRAIN + datasets.CIFAR_TEST:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        raw[name] = data
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": [0] * n}, f)
    return raw


def test_cifar10_round_trip(tmp_path):
    raw = _write_cifar(tmp_path)
    x = datasets.load_cifar10(tmp_path)
    assert x.shape == (15, 32, 32, 3) and x.dtype == np.float32
    first = raw["data_batch_1"][0]
    # Row layout: 1024 red, 1024 green, 1024 blue values, each 32×32 row-major.
    np.testing.assert_allclose(x[0, 2, 5, 1], first[1024 + 2 * 32 + 5] / 127.5 - 1, rtol=1e-6)
    te = datasets.load_cifar10(tmp_path, split="test")
    np.testing.assert_allclose(
        te[1].transpose(2, 0, 1).ravel(), raw["test_batch"][1] / 127.5 - 1, atol=1e-6
    )
    assert datasets.load_cifar10(tmp_path, split="all").shape == (18, 32, 32, 3)
    # The streaming reader (one batch file at a time, for sd.spectra.pca) yields the same data.
    batches = list(datasets.iter_cifar10(tmp_path))
    assert len(batches) == 5
    np.testing.assert_array_equal(np.concatenate(batches), x)


def test_cifar10_missing_and_corrupt(tmp_path):
    _write_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(ValueError, match="data_batch_3"):
        datasets.load_cifar10(tmp_path)
    (tmp_path / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="data_batch_3.*could not be read"):
        datasets.load_cifar10(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        datasets.load_cifar10(tmp_path / "nope")


# ----------------------------------------------------------------------------- WAV


def _write_wav(path, samples, rate, channels=1):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, "<i2").tobytes())


def test_wav_folder_round_trip_resample_and_pad(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(-32768, 32767, 16000)
    _write_wav(tmp_path / "a.wav", a, 16000)
    ramp = np.arange(4000) * 4  # 0.5 s at 8 kHz, stereo with identical channels
    _write_wav(tmp_path / "b.wav", np.repeat(ramp, 2), 8000, channels=2)
    _write_wav(tmp_path / "c.wav", np.full(20000, 1000), 16000)  # 1.25 s: cropped
    x = datasets.load_wav_folder(tmp_path)
    assert x.shape == (3, 16000) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], a / 32768, rtol=1e-6)
    # Linear interpolation of a ramp is a ramp at half the slope; then zero padding.
    np.testing.assert_allclose(x[1, :7998], np.arange(7998) * 2 / 32768, rtol=1e-6, atol=1e-9)
    assert np.all(x[1, 8000:] == 0)
    np.testing.assert_allclose(x[2], 1000 / 32768, rtol=1e-6)


def test_wav_errors(tmp_path):
    with pytest.raises(ValueError, match="no .wav"):
        datasets.load_wav_folder(tmp_path)
    (tmp_path / "bad.wav").write_bytes(b"RIFF1234WAVEjunk")
    with pytest.raises(ValueError, match="bad.wav"):
        datasets.load_wav_folder(tmp_path)


# ----------------------------------------------------------------------------- images, .npy


def test_image_folder_round_trip_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(3, 10, 12, 3)) / 255.0
    for i, im in enumerate(imgs):
        mpimg.imsave(tmp_path / f"im{i}.png", im)
    x = datasets.load_image_folder(tmp_path)
    assert x.shape == (3, 10, 12, 3) and x.dtype == np.float32
    np.testing.assert_allclose((x + 1) / 2, imgs, atol=1e-6)
    c = datasets.load_image_folder(tmp_path, size=8, gray=True)
    assert c.shape == (3, 8, 8)
    np.testing.assert_allclose((c[0] + 1) / 2, imgs[0, 1:9, 2:10] @ datasets.LUMA, atol=1e-6)
    (tmp_path / "zz.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match="zz.png"):
        datasets.load_image_folder(tmp_path)


def test_npy_round_trip_and_errors(tmp_path):
    a = np.random.default_rng(0).normal(size=(4, 3, 2))
    np.save(tmp_path / "a.npy", a)
    np.testing.assert_allclose(datasets.load_npy(tmp_path / "a.npy"), a.astype(np.float32))
    with pytest.raises(ValueError, match="missing.npy"):
        datasets.load_npy(tmp_path / "missing.npy")
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.npy"):
        datasets.load_npy(tmp_path / "bad.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="obj.npy"):
        datasets.load_npy(tmp_path / "obj.npy")
