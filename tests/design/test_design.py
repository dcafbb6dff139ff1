"""Schedule design (SPEC §6): exact optima where they are known, agreement across starts,
a grid search, endpoint handling, resumable runs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import specdiff as sd
from specdiff.design.problem import log_snr_to_theta, theta_to_log_snr

DDIM = sd.samplers.DDIM()


def synthetic_50():
    k = np.arange(1, 51)
    return sd.Spectrum(5.0 / k**1.5, mean=0.05 * np.ones(50), name="powerlaw50")


def test_isotropic_ve_kl_optimum_is_arctan_uniform():
    """N(0, c²I), VE DDIM, KL, both endpoints fixed: arctan-uniform is exactly optimal."""
    c, steps = 0.5, 8
    spec = sd.Spectrum(np.full(4, c**2))
    res = sd.design_schedule(
        spec,
        steps,
        DDIM,
        process="ve",
        metric="kl",
        endpoints=(80.0, 0.002),
        init="log_snr_uniform",
    )
    ref = sd.schedules.arctan(steps, c=c)
    ref_loss = float(sd.divergence(spec, sd.output_moments(spec, ref, DDIM), "kl"))
    assert res.loss <= ref_loss * (1 + 1e-9)
    assert res.loss >= ref_loss * (1 - 1e-9)  # nothing beats the known optimum
    np.testing.assert_allclose(res.schedule.log_snr, ref.log_snr, atol=1e-4)
    assert res.init_loss > ref_loss * 1.01  # it had to move to get there


def test_random_starts_reach_the_same_optimum():
    spec = synthetic_50()
    losses = [
        sd.design_schedule(spec, 8, DDIM, init="random", key=jax.random.key(i)).loss
        for i in range(4)
    ]
    best = sd.design_schedule(spec, 8, DDIM).loss
    assert (max(losses) - min(losses)) / min(losses) < 1e-3
    assert abs(best - min(losses)) / min(losses) < 1e-3


def test_two_steps_one_eigenvalue_agrees_with_grid_search():
    spec = sd.Spectrum([0.7], mean=[0.3])
    res = sd.design_schedule(spec, 2, DDIM)
    r0 = jnp.linspace(-12.0, 6.0, 721)
    r1 = jnp.linspace(-6.0, 16.0, 881)

    def w2(a, b):
        ok = b > a
        rho = jnp.stack([a, jnp.where(ok, b, a + 1.0)])
        mom = sd.output_moments(spec, sd.Schedule.from_log_snr(rho, "vp"), DDIM)
        return jnp.where(ok, sd.divergence(spec, mom, "w2"), jnp.inf)

    grid = jax.jit(jax.vmap(jax.vmap(w2, (None, 0)), (0, None)))(r0, r1)
    i, j = np.unravel_index(np.argmin(grid), grid.shape)
    assert res.loss <= float(grid[i, j]) + 1e-9
    assert float(grid[i, j]) - res.loss < 1e-3 * res.loss  # the grid is fine enough to agree
    np.testing.assert_allclose(res.schedule.log_snr, [r0[i], r1[j]], atol=0.05)


@pytest.mark.parametrize(
    "sampler, metric", [(DDIM, "w2"), (sd.samplers.DDPM(), "kl")], ids=["ddim-w2", "ddpm-kl"]
)
def test_never_worse_than_the_best_heuristic(sampler, metric):
    spec = synthetic_50()
    res = sd.design_schedule(spec, 8, sampler, metric=metric)
    name, best = res.best_heuristic
    assert res.loss <= best + 1e-12
    assert res.loss < 0.99 * best  # and on this spectrum clearly better
    assert res.history.shape == (res.iterations,)
    again = float(sd.divergence(spec, sd.output_moments(spec, res.schedule, sampler), metric))
    np.testing.assert_allclose(res.loss, again, rtol=1e-12)


@pytest.mark.parametrize("endpoints", [(1e-3, 0.999), (1e-3, None), (None, 0.999)])
def test_endpoints_are_respected(endpoints):
    res = sd.design_schedule(synthetic_50(), 8, DDIM, endpoints=endpoints)
    lv = np.asarray(res.schedule.levels)
    if endpoints[0] is not None:
        np.testing.assert_allclose(lv[0], endpoints[0], rtol=1e-9)
    if endpoints[1] is not None:
        np.testing.assert_allclose(lv[-1], endpoints[1], rtol=1e-9)
    assert np.all(np.diff(lv) > 0)


@pytest.mark.parametrize("mode", ["free", "first", "last", "both"])
def test_parameterisation_round_trip(mode):
    rho = jnp.asarray(sd.schedules.cosine(9).log_snr)
    ends = jnp.asarray([rho[0], rho[-1]])
    back = theta_to_log_snr(log_snr_to_theta(rho, ends, mode), ends, 9, mode)
    np.testing.assert_allclose(back, rho, rtol=1e-10, atol=1e-10)


def test_float32_design_is_monotone_and_close_to_float64():
    spec = synthetic_50()
    r64 = sd.design_schedule(spec, 8, DDIM)
    spec32 = sd.Spectrum(
        np.asarray(spec.eigenvalues, np.float32), np.asarray(spec.mean, np.float32)
    )
    r32 = sd.design_schedule(spec32, 8, DDIM)
    assert r32.schedule.log_snr.dtype == jnp.float32
    assert np.all(np.diff(np.asarray(r32.schedule.log_snr)) > 0)
    assert abs(r32.loss - r64.loss) < 1e-3 * r64.loss


def test_bad_design_input():
    spec = synthetic_50()
    with pytest.raises(ValueError, match="steps"):
        sd.design_schedule(spec, 0, DDIM)
    with pytest.raises(ValueError, match="metric"):
        sd.design_schedule(spec, 5, DDIM, metric="tv")
    with pytest.raises(ValueError, match="sampler"):
        sd.design_schedule(spec, 5, "ddim")
    with pytest.raises(ValueError, match="init"):
        sd.design_schedule(spec, 5, DDIM, init="nope")
    with pytest.raises(ValueError, match="noisiest"):
        sd.design_schedule(spec, 5, DDIM, endpoints=(0.9, 0.1))
    with pytest.raises(ValueError, match="floor"):
        sd.design_schedule(sd.Spectrum([1.0, 0.0]), 5, DDIM, metric="kl")


def test_per_eigenvalue_matches_single_designs():
    lam = np.array([9.0, 1.0, 0.04])
    res = sd.design_per_eigenvalue(lam, 6, DDIM, chunk_size=2)  # two chunks, one padded
    assert res.log_snr.shape == (3, 6)
    for i, lam_i in enumerate(lam):
        single = sd.design_schedule(sd.Spectrum([lam_i]), 6, DDIM)
        # Same optimum; a lone eigenvalue's optimum can be exactly 0, so the tolerance is
        # relative to the problem's scale (its best heuristic's loss).
        assert abs(res.loss[i] - single.loss) < 1e-6 * res.heuristic_loss[i]
        assert res.loss[i] <= res.heuristic_loss[i] + 1e-12


class Interrupted(Exception):
    pass


def interrupt_after_saves(monkeypatch, n):
    """Make the n-th checkpoint save raise after writing, like a run killed right then."""
    from specdiff.design.checkpoint import RunCheckpoint

    real = RunCheckpoint.save
    count = [0]

    def save(self, step, state):
        real(self, step, state)
        count[0] += 1
        if count[0] == n:
            raise Interrupted

    monkeypatch.setattr(RunCheckpoint, "save", save)
    return count


def test_design_resumes_from_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(
        "specdiff.design.optimise.SEGMENT_ITERS", 5
    )  # short segments: several saves
    spec = synthetic_50()
    full = sd.design_schedule(spec, 8, DDIM)
    assert full.iterations > 10
    with monkeypatch.context() as m:
        interrupt_after_saves(m, 1)
        with pytest.raises(Interrupted):
            sd.design_schedule(spec, 8, DDIM, checkpoint_dir=tmp_path)
    count = interrupt_after_saves(monkeypatch, -1)
    resumed = sd.design_schedule(spec, 8, DDIM, checkpoint_dir=tmp_path)
    np.testing.assert_array_equal(resumed.schedule.log_snr, full.schedule.log_snr)
    assert resumed.iterations == full.iterations
    saves_needed = -(-full.iterations // 5)
    assert count[0] == saves_needed - 1  # the first segment was not run again
    with pytest.raises(ValueError, match="other arguments"):
        sd.design_schedule(spec, 8, sd.samplers.DDPM(), checkpoint_dir=tmp_path)


PE_LAM = np.array([9.0, 1.0, 0.04, 0.3, 2.5, 0.01, 0.6])
PE_MEAN = np.array([0.1, -0.2, 0.05, 0.0, 0.3, -0.02, 0.1])


# Resuming a per-eigenvalue sweep: tests/design/test_per_eigenvalue_sweep.py.


def test_per_eigenvalue_pool_width_does_not_change_the_answer():
    """One slot or all problems at once: each problem's iterates are its own (to rounding)."""
    one = sd.design_per_eigenvalue(PE_LAM, 6, DDIM, mean=PE_MEAN, chunk_size=1)
    wide = sd.design_per_eigenvalue(PE_LAM, 6, DDIM, mean=PE_MEAN, chunk_size=PE_LAM.size)
    np.testing.assert_allclose(one.loss, wide.loss, rtol=1e-6, atol=1e-12)


def test_per_eigenvalue_float32_reaches_the_float64_optimum():
    """Small eigenvalues with a mean (losses ~1e-6, the ill-conditioned ones) in float32
    reach the float64 optimum: each problem is optimised at its own scale."""
    k = np.array([100, 300, 600, 900, 1200, 1500, 1800, 2100, 2400, 2700, 3000])
    lam, mu = 20.0 / k**1.2, 0.1 * np.cos(k)
    ref = sd.design_per_eigenvalue(  # run to convergence: no stall rule
        lam, 100, DDIM, mean=mu, dtype="float64", max_iter=1000, stall_window=0
    )
    assert ref.converged.all()
    f32 = sd.design_per_eigenvalue(lam.astype(np.float32), 100, DDIM, mean=mu.astype(np.float32))
    ratio = f32.loss / ref.loss
    assert np.all(f32.loss < f32.heuristic_loss)
    assert np.median(ratio) < 1.01
    assert ratio.max() < 1.15, ratio


def test_per_eigenvalue_rejects_bad_arguments():
    for kw, msg in (
        ({"chunk_size": 0}, "chunk_size"),
        ({"max_iter": 0}, "max_iter"),
        ({"checkpoint_every": -1.0}, "checkpoint_every"),
    ):
        with pytest.raises(ValueError, match=msg):
            sd.design_per_eigenvalue(PE_LAM, 6, DDIM, **kw)


def test_design_at_nfe_gives_each_sampler_its_steps():
    """Equal NFE: heun (2 evaluations a step, 1 at the last) gets S = 5 of 9, dpmpp_2m
    (1 a step) S = 9; each design is never worse than its own best heuristic."""
    spec = sd.Spectrum(5.0 / np.arange(1, 9) ** 1.5, mean=0.05 * np.ones(8))
    heun, dpm = sd.samplers.from_name("heun"), sd.samplers.from_name("dpmpp_2m")
    res = sd.design_at_nfe(spec, 9, [heun, dpm], max_iter=50)
    assert list(res) == ["heun", "dpmpp_2m"]
    assert res["heun"].schedule.num_steps == 5 and heun.nfe(5) <= 9 < heun.nfe(6)
    assert res["dpmpp_2m"].schedule.num_steps == 9 and dpm.nfe(9) == 9
    for label, r in res.items():
        assert r.loss <= r.best_heuristic[1] + 1e-12, label
        again = sd.divergence(spec, sd.output_moments(spec, r.schedule, r.sampler), "w2")
        np.testing.assert_allclose(r.loss, float(again), rtol=1e-10)


def test_design_at_nfe_labels_and_bad_input():
    from specdiff.design.at_nfe import sampler_labels as labels

    assert labels([DDIM, sd.samplers.DDIM(eta=0.5)]) == ["ddim", "ddim(eta=0.5)"]
    assert labels([DDIM, sd.samplers.DDPM()]) == ["ddim", "ddpm"]
    spec = sd.Spectrum([1.0, 0.1])
    with pytest.raises(ValueError, match="differ"):
        sd.design_at_nfe(spec, 4, [DDIM, sd.samplers.DDIM()])
    with pytest.raises(ValueError, match="nfe"):
        sd.design_at_nfe(spec, 0, [DDIM])
    with pytest.raises(ValueError, match="steps"):
        sd.design_at_nfe(spec, 4, [DDIM], steps=3)
    with pytest.raises(ValueError, match="at least one"):
        sd.design_at_nfe(spec, 4, [])
