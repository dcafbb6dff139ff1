"""Denoisers: exact Gaussian formula, training smoke test, checkpoints, shipped weights."""

import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from specdiff import denoisers as dn
from specdiff.nn import training

TINY = dn.ModelConfig(shape=(4, 4), channels=(8, 16), groups=4, emb_dim=16)


def test_gaussian_denoiser_matches_per_eigenvalue_formula():
    """SPEC §2: in the eigenbasis ε̂ = √(1−a)/(aλ + 1 − a)·(x − √a·m)."""
    rng = np.random.default_rng(0)
    lam = np.array([4.0, 1.0, 0.25, 0.0])
    u = np.linalg.qr(rng.normal(size=(4, 4)))[0]
    m = rng.normal(size=4)
    den = dn.GaussianDenoiser(u @ m, u @ np.diag(lam) @ u.T)
    x = rng.normal(size=(3, 4))
    rho = np.array([-3.0, 0.0, 5.0])
    a = 1 / (1 + np.exp(-rho))[:, None]
    y = x @ u - np.sqrt(a) * m
    want = (np.sqrt(1 - a) / (a * lam + 1 - a) * y) @ u.T
    np.testing.assert_allclose(np.asarray(den(jnp.asarray(x), jnp.asarray(rho))), want, rtol=1e-10)


def test_gaussian_denoiser_rejects_bad_covariance():
    with pytest.raises(ValueError, match="shape"):
        dn.GaussianDenoiser(np.zeros(3), np.eye(2))
    with pytest.raises(ValueError, match="positive semi-definite"):
        dn.GaussianDenoiser(np.zeros(2), np.diag([1.0, -1.0]))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 4-step training run on 64 tiny images, checkpoints every 2 steps."""
    root = tmp_path_factory.mktemp("train")
    data = np.asarray(jax.random.uniform(jax.random.key(1), (64, 4, 4), minval=-1, maxval=1))
    cfg = dn.TrainConfig(
        dataset="tiny", model=TINY, steps=4, batch_size=8, chunk=2, checkpoint_every=2, warmup=1
    )
    model, info = dn.train(cfg, root / "run", jax.random.key(0), data=data, progress=False)
    return cfg, data, root, model, info


def test_training_smoke(tiny_run):
    cfg, _, root, model, info = tiny_run
    assert info["steps"] == 4 and np.isfinite(info["final_loss"])
    assert sorted(p.name for p in (root / "run" / "checkpoints").iterdir()) == ["2", "4"]
    out = dn.apply(model, jnp.zeros((2, 4, 4)), jnp.array([-1.0, 1.0]))
    assert out.shape == (2, 4, 4) and np.isfinite(np.asarray(out)).all()


def test_training_starts_from_init_unet(tiny_run):
    """``train`` starts from ``init_unet(config.model, fold_in(key, 2**31 − 1))`` (its
    docstring's key); ``init_unet`` depends on its key and gives a model that runs."""
    cfg = tiny_run[0]
    key = jax.random.fold_in(jax.random.key(0), 2**31 - 1)
    model = dn.init_unet(cfg.model, key)
    _, state = training._init_state(cfg, key)
    weights = jax.tree.leaves(nnx.split(model)[1])
    for name in ("params", "ema"):
        start = jax.tree.leaves(state[name])
        assert len(start) == len(weights) > 0
        assert all(np.array_equal(a, b) for a, b in zip(start, weights)), name
    other = jax.tree.leaves(nnx.split(dn.init_unet(cfg.model, jax.random.key(5)))[1])
    assert any(not np.array_equal(a, b) for a, b in zip(other, weights))
    out = dn.apply(model, jnp.zeros((2, *cfg.model.shape)), jnp.array([-1.0, 1.0]))
    assert out.shape == (2, *cfg.model.shape) and np.isfinite(np.asarray(out)).all()


def test_interrupted_training_resumes_on_the_same_path(tiny_run):
    """Drop the last checkpoint (an interruption after step 2): the rerun resumes at step 2
    and ends with the same weights as the uninterrupted run."""
    cfg, data, root, model, _ = tiny_run
    shutil.copytree(root / "run", root / "cut")
    shutil.rmtree(root / "cut" / "checkpoints" / "4")
    resumed, info = dn.train(cfg, root / "cut", jax.random.key(0), data=data, progress=False)
    assert info["resumed_from"] == 2
    a, b = nnx.state(model), nnx.state(resumed)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-5, atol=1e-6)
    # a different config in the same workdir is refused, not mixed
    with pytest.raises(ValueError, match="different config"):
        dn.train(
            dataclasses.replace(cfg, lr=1e-4),
            root / "cut",
            jax.random.key(0),
            data=data,
            progress=False,
        )


def test_checkpoint_round_trip_and_errors(tiny_run, tmp_path):
    _, _, _, model, _ = tiny_run
    path = dn.save_denoiser(model, tmp_path / "den", metadata={"note": "test"})
    back = dn.load_denoiser(path)
    x, rho = jnp.ones((2, 4, 4)) * 0.3, jnp.array([-2.0, 3.0])
    np.testing.assert_array_equal(
        np.asarray(dn.apply(back, x, rho)), np.asarray(dn.apply(model, x, rho))
    )

    with pytest.raises(ValueError, match="no denoiser checkpoint"):
        dn.load_denoiser(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="model.json"):
        dn.load_denoiser(tmp_path / "empty")
    # incompatible: the stored parameters do not fit the architecture the record declares
    shutil.copytree(path, tmp_path / "wrong")
    rec = json.loads((tmp_path / "wrong" / "model.json").read_text())
    rec["config"]["channels"] = [16, 32]
    (tmp_path / "wrong" / "model.json").write_text(json.dumps(rec))
    with pytest.raises(ValueError, match="incompatible|does not match"):
        dn.load_denoiser(tmp_path / "wrong")
    (tmp_path / "wrong" / "model.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        dn.load_denoiser(tmp_path / "wrong")


def test_exact_limits_outside_trained_range(tiny_run):
    """ε̂ = σ·x + α·F: ε̂ → x as ᾱ → 0 and x̂0 = (x − σ·ε̂)/α → x as ᾱ → 1, whatever F is."""
    _, _, _, model, _ = tiny_run
    lo, hi = model.config.log_snr_range
    x = jax.random.normal(jax.random.key(2), (2, 4, 4))
    rho = jnp.array([lo - 20.0, lo - 20.0, hi + 20.0, hi + 20.0])
    eps = dn.apply(model, jnp.concatenate([x, x]), rho)
    np.testing.assert_allclose(np.asarray(eps[:2]), np.asarray(x), atol=1e-4)
    r = hi + 20.0
    x0 = (x - jnp.sqrt(jax.nn.sigmoid(-r)) * eps[2:]) / jnp.sqrt(jax.nn.sigmoid(r))
    np.testing.assert_allclose(np.asarray(x0), np.asarray(x), atol=1e-4)


def test_records_without_parametrization_load_as_eps():
    cfg = dn.ModelConfig.from_dict({"shape": [4, 4], "channels": [8, 16], "groups": 4})
    assert cfg.parametrization == "eps"
    with pytest.raises(ValueError, match="unknown model config fields"):
        dn.ModelConfig.from_dict({"shape": [4, 4], "width": 3})


@pytest.mark.parametrize("name", ["digits", "patches_gray"])
def test_shipped_denoisers(name):
    model = dn.load_denoiser(name)
    rec = json.loads((dn.SHIPPED_DIR / name / "training.json").read_text())
    assert rec["dataset"] == name and np.isfinite(rec["final_loss"]) and rec["final_loss"] < 0.2
    assert (dn.SHIPPED_DIR / name / "TRAINING.md").is_file()
    x = jnp.zeros((2, *model.config.shape))
    assert np.isfinite(np.asarray(dn.apply(model, x, jnp.zeros(2)))).all()


def test_shipped_checkpoints_are_small():
    total = sum(p.stat().st_size for p in dn.SHIPPED_DIR.rglob("*") if p.is_file())
    assert total <= 25 * 2**20, total
