"""Design benchmarks for ``python -m experiments.benchmark`` (issue: schedule design).

Compared in the same run:
- compiled: ``sd.design_schedule`` (the whole L-BFGS loop in one ``lax.while_loop``);
- python loop, eager update: a Python loop of optax L-BFGS steps around a jitted
  value-and-grad (the update and its line search run op by op; not run at S > 100, where
  its re-traced line searches ran the process out of memory maps);
- python loop, jitted step: a Python loop around one jitted L-BFGS step (a stronger
  baseline: only the per-iteration dispatch and host sync remain).
Each baseline stops as soon as its loss is within 1e-4 relative of the compiled optimum,
or when its time budget runs out (then the time is a lower bound, marked ">").
Overhead: the whole ``sd.design_schedule`` call against its compiled loop alone (the same
start, the same iterations), for L-BFGS (the default) and Adam, timed side by side
(``paired``: the two alternate, so a neighbour's load falls on both).
PyTorch: the same DDIM W2 objective written the obvious way in torch (the VP DDIM recurrence
step by step, as ``benchmark.w2_scan``), the same parameterisation, start, unit scaling and
``torch.optim.Adam`` with specdiff's learning rate, run until it reaches the W2 that
``design_schedule(optimizer="adam")`` reached (within 1e-4), against that whole call and
against its loop alone. torch is a benchmark-only dependency: without it the row says so.
Per-eigenvalue: ``sd.design_per_eigenvalue`` against a Python loop of ``sd.design_schedule``
over the eigenvalues, with the losses of both.
"""

from __future__ import annotations

import inspect
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import specdiff as sd
from specdiff.design import optimise as O
from specdiff.design import problem as D

DDIM = sd.samplers.DDIM()


def _options(optimizer):
    """``design_schedule``'s options at its own defaults (read from its signature), but for
    ``optimizer``."""
    params = inspect.signature(sd.design_schedule).parameters
    values = {f: params[f].default for f in O._Options._fields} | {"optimizer": optimizer}
    return O._Options(**values)


def _problem(spec, steps):
    # design_schedule's own set-up (L-BFGS, its defaults): the compiled loop below is then
    # the very program that ``_loop_setup`` times, compiled once for both.
    setup = O._validate(spec, steps, DDIM, "vp", "w2", None, _options("lbfgs"))
    cfg, data, dt = setup.cfg, setup.data, setup.dtype
    rho0 = max(
        sd.schedules.heuristics(steps).items(),
        key=lambda kv: -float(sd.divergence(spec, sd.output_moments(spec, kv[1], DDIM), "w2")),
    )[1].log_snr
    theta0 = D.log_snr_to_theta(jnp.asarray(rho0, dt), data.ends, "free")
    # As design_schedule does: the optimiser sees the objective divided by its start value.
    loss0 = float(D._loss(theta0, data, cfg))
    data = data._replace(weights=data.weights / loss0)
    return cfg, data, theta0, loss0


def _python_loop(spec, steps, target, budget, jit_step):
    """Seconds until W2 ≤ target (or the budget), and iterations."""
    cfg, data, theta, loss0 = _problem(spec, steps)
    fun = jax.jit(lambda t: D._loss(t, data, cfg))
    vg = jax.jit(jax.value_and_grad(lambda t: D._loss(t, data, cfg)))
    opt = optax.lbfgs()

    def step(theta, state):
        value, grad = vg(theta)
        upd, state = opt.update(grad, state, theta, value=value, grad=grad, value_fn=fun)
        return optax.apply_updates(theta, upd), state, value

    def init(theta):
        # optax's initial state holds weakly typed scalars, the state after a step does not:
        # strongly typed from the start, the jitted step compiles once, not twice.
        return jax.tree.map(lambda x: jnp.asarray(x, x.dtype), opt.init(theta))

    if jit_step:
        step = jax.jit(step)
        jax.block_until_ready(step(theta, init(theta)))  # compiled outside the timing
    state = init(theta)
    t0 = time.perf_counter()
    it = 0
    while True:
        theta, state, value = step(theta, state)
        it += 1
        w2 = float(np.sqrt(max(float(value) * loss0, 0.0)))  # host sync, as such loops do
        elapsed = time.perf_counter() - t0
        if w2 <= target:
            return elapsed, it, True
        if elapsed > budget or it > 5000:
            return elapsed, it, False


def _compiled_to_target(spec, steps, target, median_time):
    """Median time of the compiled loop alone (same start, L-BFGS and line search as the
    baselines) run for exactly the iterations it needs to reach ``target``."""
    cfg, data, theta0, loss0 = _problem(spec, steps)
    state0 = D._init_state(theta0, 1000, cfg)
    full = D._segment(state0, data, 1000, cfg)
    hist = np.sqrt(np.maximum(np.asarray(full.history)[: int(full.it)] * loss0, 0.0))
    k = int(np.argmax(hist <= target)) + 1 if np.any(hist <= target) else int(full.it)
    D._segment(state0, data, k, cfg)  # same compiled function; stop_at is traced
    return median_time(lambda: D._segment(state0, data, k, cfg).value, reps=5), k


def _loop_setup(spec, steps, optimizer):
    """The compiled loop that ``design_schedule`` runs, alone (the same start, at unit
    scale, to the end): (a call of it, its iterations, the start, the setup)."""
    setup = O._validate(spec, steps, DDIM, "vp", "w2", None, _options(optimizer))
    start, state, _ = O._initialise(setup, "best", None, False, False)
    data = start.out[6]
    end = D._segment(state, data, setup.max_iter, setup.cfg)
    run = lambda: D._segment(state, data, setup.max_iter, setup.cfg).value  # noqa: E731
    return run, int(end.it), start, setup


def _loop_alone(spec, steps, optimizer, median_time):
    """(median seconds, iterations, start, setup) of ``_loop_setup``'s loop."""
    run, iters, start, setup = _loop_setup(spec, steps, optimizer)
    return median_time(run, reps=5), iters, start, setup


def _overhead_rows(spec, steps, timing):
    """The whole call against its loop alone, side by side (``timing["paired"]``), for
    L-BFGS and Adam (target: within 2x)."""
    rows = []
    for optimizer in ("lbfgs", "adam"):
        loop, iters, _, _ = _loop_setup(spec, steps, optimizer)
        call = lambda o=optimizer: (  # noqa: E731
            sd.design_schedule(spec, steps, DDIM, optimizer=o, progress=False).loss
        )
        p = timing["paired"](loop, call, reps=5, min_time=0.0, max_time=60.0)
        rows.append(
            {
                "section": "design",
                "what": f"whole design_schedule call vs its loop alone ({optimizer}, "
                f"{iters} iterations; x = call/loop)",
                "d": spec.dim,
                "S": steps,
                "dtype": "float32",
                **timing["pair_fields"](p),
                "iterations": iters,
            }
        )
        print(rows[-1], flush=True)
    return rows


def bench_design(quick, median_time, benchmark_spectrum, timing):
    rows = []
    d = 256 if quick else 3072
    steps_list = (10,) if quick else (10, 100, 1000)
    budget = 0.5 if quick else 120.0
    spec = benchmark_spectrum(d, np.float32)
    for steps in steps_list:
        # Each S compiles its own programs (and the eager loops many small ones); a process
        # holding all of them ran out of memory mappings in LLVM at S = 1000.
        jax.clear_caches()
        rows += _overhead_rows(spec, steps, timing)
        if steps <= 100:
            rows.append(_torch_row(spec, steps, median_time, 1.0 if quick else 120.0))
        res = sd.design_schedule(spec, steps, DDIM, progress=False)  # compiles
        target = res.loss * (1 + 1e-4)
        t_call = median_time(
            lambda s=steps: sd.design_schedule(spec, s, DDIM, progress=False).loss,
            reps=3,
            min_time=0.0,
        )
        rows.append(
            {
                "section": "design",
                "what": "whole design_schedule call (heuristics + loop)",
                "d": d,
                "S": steps,
                "dtype": "float32",
                "fast_ms": 1e3 * t_call,
                "scan_ms": None,
                "speedup": None,
                "fast_label": f"{1e3 * t_call:.4g} ms",
                "slow_label": "-",
                "compiled_iterations": res.iterations,
                "w2": res.loss,
                "best_heuristic_w2": res.best_heuristic[1],
            }
        )
        print(rows[-1], flush=True)
        t_fast, k = _compiled_to_target(spec, steps, target, median_time)
        for label, jit_step in (
            ("python loop, jitted step", True),
            ("python loop, eager update", False),
        ):
            row = {
                "section": "design",
                "what": f"compiled loop to W2 within 1e-4 vs {label}",
                "d": d,
                "S": steps,
                "dtype": "float32",
                "fast_ms": 1e3 * t_fast,
                "fast_label": f"{1e3 * t_fast:.4g} ms",
                "baseline": label,
                "compiled_iterations_to_target": k,
                "w2": res.loss,
                "best_heuristic_w2": res.best_heuristic[1],
            }
            if not jit_step and steps > 100:
                # optax re-traces its line search at every eager update; at S = 1000 the
                # process ran out of memory maps after a few seconds of it (LLVM "Unable
                # to allocate section memory", twice in a row), killing the whole run.
                row.update(scan_ms=None, speedup=None)
                row["slow_label"] = "not run at S > 100 (memory maps, see the source)"
            elif not jit_step and quick:
                # Its first update alone compiles every eager operation (seconds): within
                # --quick's budget it ran one iteration, which measures nothing.
                row.update(scan_ms=None, speedup=None)
                row["slow_label"] = "not run with --quick"
            else:
                if not jit_step:
                    jax.clear_caches()
                t_slow, iters, ok = _python_loop(spec, steps, target, budget, jit_step)
                row.update(scan_ms=1e3 * t_slow, speedup=t_slow / t_fast)
                row.update(baseline_reached_target=ok, baseline_iterations=iters)
                row["slow_label"] = ("" if ok else ">") + f"{1e3 * t_slow:.4g} ms"
            rows.append(row)
            print(rows[-1], flush=True)

    # Per-eigenvalue sweep: all eigenvalues through one compiled, vmapped pool vs a Python
    # loop of designs over every eigenvalue (--quick: 4 of them, scaled). The quality of
    # the two is compared too: W2 of the sweep over W2 of the loop, per eigenvalue.
    n = 256 if quick else 3072
    steps = 100
    lam = np.asarray(benchmark_spectrum(n, np.float32).eigenvalues)
    mean = np.asarray(benchmark_spectrum(n, np.float32).mean)
    t0 = time.perf_counter()
    sd.design_per_eigenvalue(lam, steps, DDIM, mean=mean, progress=False)  # compiles
    t_first = time.perf_counter() - t0
    times = []
    for _ in range(1 if quick else 3):
        t0 = time.perf_counter()
        per = sd.design_per_eigenvalue(lam, steps, DDIM, mean=mean, progress=False)
        times.append(time.perf_counter() - t0)
    t_fast = float(np.median(times))
    m = 4 if quick else n  # the quick run times the loop on 4 and scales
    sub = np.linspace(0, n - 1, m).astype(int)
    sd.design_schedule(sd.Spectrum(lam[:1], mean[:1]), steps, DDIM, progress=False)  # compiles
    loop_loss = []
    t0 = time.perf_counter()
    for i in sub:
        res = sd.design_schedule(
            sd.Spectrum(lam[i : i + 1], mean[i : i + 1]), steps, DDIM, progress=False
        )
        loop_loss.append(res.loss)
    t_loop = (time.perf_counter() - t0) * n / m
    ratio = per.loss[sub] / np.asarray(loop_loss)  # W2 of the sweep / W2 of the loop
    rows.append(
        {
            "section": "design",
            "what": f"per-eigenvalue sweep (median of {len(times)}; loop over {m} eigenvalues"
            + (", scaled)" if m < n else ")"),
            "d": n,
            "S": steps,
            "dtype": "float32",
            "fast_ms": 1e3 * t_fast,
            "scan_ms": 1e3 * t_loop,
            "speedup": t_loop / t_fast,
            "sweep_times_s": times,
            "first_call_s": t_first,
            "mean_iterations": float(per.iterations.mean()),
            "max_iterations": int(per.iterations.max()),
            "total_iterations": int(per.iterations.sum()),
            "all_not_worse_than_heuristic": bool(np.all(per.loss <= per.heuristic_loss)),
            "w2_ratio_sweep_over_loop": {
                "median": float(np.median(ratio)),
                "min": float(ratio.min()),
                "max": float(ratio.max()),
                "fraction_within_1e-3": float(np.mean(ratio <= 1 + 1e-3)),
                "fraction_within_1pct": float(np.mean(ratio <= 1.01)),
            },
            "fast_label": f"{t_fast:.3g} s",
            "slow_label": f"{t_loop:.3g} s",
        }
    )
    print(rows[-1], flush=True)
    return rows


# --- PyTorch Adam on the same problem ------------------------------------------------------


def _torch_w2sq(torch, theta, lam, m, scale):
    """W2² at unit scale, the obvious torch version: θ → ρ (the parameterisation of
    ``problem.theta_to_log_snr``, free mode), then the VP DDIM (η = 0) recurrence step by
    step in ᾱ on the centred state, as ``benchmark.w2_scan``."""
    f = torch.nn.functional.softplus
    rho0 = D.RHO_FLOOR + f(theta[:1] - D.RHO_FLOOR)
    rho = torch.cat([rho0, rho0 + torch.cumsum(f(theta[1:]) + D.MIN_INCREMENT, 0)])
    a = torch.sigmoid(rho)
    mean, var = -torch.sqrt(a[0]) * m, torch.ones_like(lam)
    for k in range(a.shape[0] - 1):
        a0, a1 = a[k], a[k + 1]
        g = (torch.sqrt(a0 * a1) * lam + torch.sqrt((1 - a0) * (1 - a1))) / (a0 * lam + 1 - a0)
        mean, var = g * mean, g**2 * var
    g = torch.sqrt(a[-1]) * lam / (a[-1] * lam + 1 - a[-1])  # last step: x̂0
    mean, var = g * mean, g**2 * var
    return scale * torch.sum(mean**2 + (torch.sqrt(var) - torch.sqrt(lam)) ** 2)


def _torch_adam(spec, start, target_w2, lr, budget, max_iter):
    """(seconds, iterations, reached, W2 at θ0) of torch Adam from specdiff's start."""
    import torch

    lam = torch.tensor(np.asarray(spec.eigenvalues))
    m = torch.tensor(np.asarray(spec.mean))
    scale = float(np.asarray(start.out[4]))
    theta = torch.tensor(np.asarray(start.out[2]), requires_grad=True)
    with torch.no_grad():
        w2_0 = float(np.sqrt(float(_torch_w2sq(torch, theta, lam, m, 1.0))))
    opt = torch.optim.Adam([theta], lr=lr)
    t0 = time.perf_counter()
    for it in range(1, max_iter + 1):
        opt.zero_grad()
        loss = _torch_w2sq(torch, theta, lam, m, scale)
        loss.backward()
        opt.step()
        if np.sqrt(max(loss.item() / scale, 0.0)) <= target_w2:
            return time.perf_counter() - t0, it, True, w2_0
        if time.perf_counter() - t0 > budget:
            break
    return time.perf_counter() - t0, it, False, w2_0


def _torch_row(spec, steps, median_time, budget):
    """torch.optim.Adam to the W2 of ``design_schedule(optimizer="adam")``, against the
    whole call and its loop alone (the same start, learning rate and unit scaling)."""
    row = {"section": "design", "d": spec.dim, "S": steps, "dtype": "float32"}
    row["what"] = "design_schedule(adam) call (loop alone) vs torch.optim.Adam to its W2"
    t_loop, iters, start, setup = _loop_alone(spec, steps, "adam", median_time)
    res = sd.design_schedule(spec, steps, DDIM, optimizer="adam", progress=False)
    t_call = median_time(
        lambda: sd.design_schedule(spec, steps, DDIM, optimizer="adam", progress=False).loss,
        reps=5,
    )
    row |= {"fast_ms": 1e3 * t_call, "loop_ms": 1e3 * t_loop, "iterations": iters}
    row["fast_label"] = f"{1e3 * t_call:.4g} ms ({1e3 * t_loop:.4g} ms loop, {iters} it)"
    try:
        import torch  # noqa: F401  (benchmark-only dependency)
    except ImportError:
        return row | {"scan_ms": None, "speedup": None, "slow_label": "torch not installed"}
    target = res.loss * (1 + 1e-4)
    t, it, ok, w2_0 = _torch_adam(spec, start, target, setup.learning_rate, budget, 20 * iters)
    row |= {
        "scan_ms": 1e3 * t,
        "speedup": t / t_call,
        "speedup_vs_loop": t / t_loop,
        "torch_iterations": it,
        "torch_reached_target": ok,
        "w2": res.loss,
        "w2_start_torch_over_specdiff": w2_0 / res.init_loss,
        "slow_label": ("" if ok else ">") + f"{1e3 * t:.4g} ms ({it} it); "
        f"{t / t_loop:.1f}x vs loop",
    }
    print(row, flush=True)
    return row
