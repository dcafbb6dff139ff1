"""The per-eigenvalue sweep (issues 13, 14): the compiled block loop against a plain
per-problem reference, stop reasons, streaming in blocks, resuming, and several devices."""

import json
import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

import specdiff as sd
from experiments._common import forced_cpu_devices
from specdiff.design import one_eigenvalue
from specdiff.design import problem as P
from specdiff.design.common import _heuristic_candidates, _tol

DDIM = sd.samplers.DDIM()
LAM = np.array([9.0, 1.0, 0.04, 0.3, 2.5, 0.01, 0.6])
MEAN = np.array([0.1, -0.2, 0.05, 0.0, 0.3, -0.02, 0.1])
STEPS = 6


def run(**kw):
    kw = {"mean": MEAN, "chunk_size": 2, "progress": False} | kw
    return sd.design_per_eigenvalue(LAM, STEPS, DDIM, **kw)


def reference(lam, mean, max_iter=500):
    """One problem at a time, the plain way: the heuristic with the lowest W2 as the start,
    the single-problem compiled loop (``problem._segment``, not vmapped) to its end, then
    the better of the best point and the start. Returns (log_snr, W2, iterations)."""
    cfg = P._Config(STEPS, "vp", DDIM, "w2", "free", "lbfgs_parallel", 0.0, None,
                    _tol(None, np.float64), 5)  # fmt: skip
    cands = _heuristic_candidates(STEPS, "free", np.zeros(2))
    ends = jnp.zeros(2)
    out = []
    for lam_i, m_i in zip(lam, mean):
        spec = sd.Spectrum([lam_i], [m_i])

        def w2(rho, spec=spec):
            sch = sd.Schedule.from_log_snr(rho, "vp")
            return float(sd.divergence(spec, sd.output_moments(spec, sch, DDIM), "w2"))

        start = min(cands.values(), key=w2)
        theta0 = P.log_snr_to_theta(jnp.asarray(start), ends, "free")
        rho_h = P.theta_to_log_snr(theta0, ends, STEPS, "free")
        loss0 = P._loss_of_rho(start, P._Data(spec, ends, jnp.ones(1)), cfg)
        scale = P._unit_scale([loss0], np.float64)
        data = P._Data(spec, ends, jnp.asarray(scale))
        state = P._segment(P._init_state(theta0, max_iter, cfg), data, max_iter, cfg)
        rho = P.theta_to_log_snr(state.best_theta, ends, STEPS, "free")
        rho = rho if w2(rho) < w2(rho_h) else rho_h
        out.append((np.asarray(rho), w2(rho), int(state.it)))
    rho, loss, iters = zip(*out)
    return np.stack(rho), np.array(loss), np.array(iters)


def test_sweep_equals_a_per_problem_reference(monkeypatch):
    """Float64, a pool of 2 slots refilled in the loop, on the engine's objective (as the
    reference): every problem's schedule, W2 and iteration count are those of the problem
    solved alone."""
    monkeypatch.setattr(one_eigenvalue, "applies", lambda cfg, ends: False)
    res = run()
    rho, loss, iters = reference(LAM, MEAN)
    np.testing.assert_array_equal(res.iterations, iters)
    np.testing.assert_allclose(res.loss, loss, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.log_snr, rho, rtol=0, atol=1e-7)
    assert (res.stop_reason == "converged").all() and res.converged.all()
    assert np.all(res.loss <= res.heuristic_loss)


def test_fused_objective_sweep_reaches_the_reference():
    """The default sweep (DDIM η = 0: the fused objective, equal to the engine's up to
    round-off) reaches the reference's W2 per problem; iterations may differ by round-off."""
    res = run()
    _, loss, _ = reference(LAM, MEAN)
    np.testing.assert_allclose(res.loss, loss, rtol=1e-6, atol=1e-12)
    assert (res.stop_reason == "converged").all()
    assert np.all(res.loss <= res.heuristic_loss)


def test_stop_reasons_budget_and_stalled():
    """A budget of 3 stops every unconverged problem at 3 iterations ("budget"); a stall
    window of 3 with an unreachable improvement stops them at 3 too ("stalled"), at the
    same points; problems that converge first say so."""
    full = run()
    budget = run(max_iter=3)
    stalled = run(stall_window=3, stall_tol=1e9)
    early = full.iterations <= 3
    assert (budget.stop_reason == np.where(early, "converged", "budget")).all()
    assert (stalled.stop_reason == np.where(early, "converged", "stalled")).all()
    np.testing.assert_array_equal(budget.iterations, np.minimum(full.iterations, 3))
    np.testing.assert_array_equal(stalled.iterations, budget.iterations)
    np.testing.assert_array_equal(stalled.log_snr, budget.log_snr)
    rho, loss, _ = reference(LAM[~early], MEAN[~early], max_iter=3)
    np.testing.assert_allclose(budget.loss[~early], loss, rtol=1e-9)
    assert (budget.converged == early).all()


def test_streaming_in_blocks_smaller_than_d(monkeypatch):
    """Blocks of 3 problems (three compiled calls, the last one padded) give the one-block
    answer bit for bit; the progress bar counts every problem, out of d."""
    import tqdm.auto

    bars = []

    class Bar(tqdm.auto.tqdm):
        def close(self):
            bars.append((self.n, self.total))
            super().close()

    one = run()
    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    streamed = run(block_size=3, progress=True)
    for field in ("log_snr", "loss", "iterations", "stop_reason", "heuristic_name"):
        np.testing.assert_array_equal(getattr(streamed, field), getattr(one, field))
    assert bars and set(bars) == {(LAM.size, LAM.size)}


def test_rejects_bad_sweep_arguments():
    for kw, msg in (
        ({"block_size": 0}, "block_size"),
        ({"stall_window": -1}, "stall_window"),
        ({"stall_tol": -1.0}, "stall_tol"),
        ({"devices": 0}, "devices"),
    ):
        with pytest.raises(ValueError, match=msg):
            run(**kw)


# --------------------------------------------------------------------------- resuming


class Interrupted(Exception):
    pass


def _count_started(monkeypatch):
    """Count the problems handed to fresh pools (a continued pool starts none anew)."""
    from specdiff.design import pool

    real, count = pool.run_block, [0]

    def run_block(p, block, *a, **kw):
        if int(np.sum(p.next)) == 0:
            count[0] += int(np.sum(block.count))
        return real(p, block, *a, **kw)

    monkeypatch.setattr(pool, "run_block", run_block)
    return count


def _run_killed(monkeypatch, cls, method, n, folder, every):
    """A checkpointed ``run`` killed right after the n-th call of ``cls.method`` (which
    completes)."""
    real, calls = getattr(cls, method), [0]

    def killing(self, *args):
        real(self, *args)
        calls[0] += 1
        if calls[0] == n:
            raise Interrupted

    with monkeypatch.context() as m:
        m.setattr(cls, method, killing)
        with pytest.raises(Interrupted):
            run(checkpoint_dir=folder, checkpoint_every=every)


def test_resumes_losing_nothing_finished(tmp_path, monkeypatch):
    """Killed right after finished problems were saved (no pool state saved): the rerun
    starts only the unfinished problems and gives the same result."""
    from specdiff.design.checkpoint import PoolCheckpoint

    monkeypatch.setattr("specdiff.design.pool.CHECKPOINT_TICKS", 3)
    full = run()
    _run_killed(monkeypatch, PoolCheckpoint, "save_finished", 2, tmp_path, 1e9)
    done_before = np.load(tmp_path / "finished.npz")["finished"]
    assert 0 < done_before.sum() < LAM.size
    started = _count_started(monkeypatch)
    resumed = run(checkpoint_dir=tmp_path, checkpoint_every=1e9)
    assert started[0] == LAM.size - done_before.sum()
    for field in ("log_snr", "loss", "iterations", "stop_reason"):
        np.testing.assert_array_equal(getattr(resumed, field), getattr(full, field))


def test_resumes_the_block_in_flight(tmp_path, monkeypatch):
    """The block in flight saved every call: the rerun continues it (no problem starts
    anew) and gives the same result; other arguments are refused."""
    from specdiff.design.checkpoint import RunCheckpoint

    monkeypatch.setattr("specdiff.design.pool.CHECKPOINT_TICKS", 3)
    full = run()
    _run_killed(monkeypatch, RunCheckpoint, "save", 3, tmp_path, 0)
    started = _count_started(monkeypatch)
    resumed = run(checkpoint_dir=tmp_path, checkpoint_every=0)
    assert started[0] == 0
    for field in ("log_snr", "loss", "iterations", "stop_reason"):
        np.testing.assert_array_equal(getattr(resumed, field), getattr(full, field))
    with pytest.raises(ValueError, match="other arguments"):
        sd.design_per_eigenvalue(LAM, 7, DDIM, mean=MEAN, chunk_size=2, checkpoint_dir=tmp_path)


# --------------------------------------------------------------------------- devices

_MULTI = textwrap.dedent(
    """
    import json, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    import specdiff as sd
    from specdiff.core.mesh import use_devices

    lam, mean = np.array(json.loads(sys.argv[1])), np.array(json.loads(sys.argv[2]))
    out = {"devices": len(jax.devices())}
    for n in (7, 3):  # 7 on 4 devices: one padding row; 3: fewer problems than devices
        run = lambda: sd.design_per_eigenvalue(
            lam[:n], 6, sd.samplers.DDIM(), mean=mean[:n], chunk_size=2, progress=False
        )
        with use_devices(1):
            one = run()
        four = run()
        out[n] = {
            k: bool(np.array_equal(getattr(one, k), getattr(four, k)))
            for k in ("log_snr", "loss", "iterations", "stop_reason")
        }
        out[n]["converged"] = bool(four.converged.all())
    print(json.dumps(out))
    """
)


def test_four_devices_equal_one_device():
    """Float64 on 4 forced host devices, 7 and 3 problems (padded to equal shares): the
    sharded sweep equals the one-device sweep bit for bit."""
    env = forced_cpu_devices(4)
    args = [json.dumps(LAM.tolist()), json.dumps(MEAN.tolist())]
    proc = subprocess.run(
        [sys.executable, "-c", _MULTI, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 4
    for n in ("7", "3"):
        assert all(out[n].values()), out
