"""Schedule design: ``design_schedule``, the levels that minimise an exact divergence (SPEC §6).

Holds ``DesignResult`` and ``design_schedule``, which runs in five stages:

1. validate: the arguments, into a ``_Setup`` (static ``_Config`` and traced ``_Data``);
2. initialise: one compiled call (``problem._start_and_run``) evaluates every heuristic
   (moved onto fixed endpoints; they share S, so their grids are one batch), picks the
   start, runs the loop to the end (``progress=False``) or for a first segment, and judges
   the outcome (with the default ``progress=None``, a run too short ever to show its bar
   is run again to the end by the same program); with ``checkpoint_dir`` it only starts
   (``problem._start``);
3. optimise: the rest of the compiled loop (``problem._segment``), segment by segment
   (``_run_loop``), with a tqdm bar and, given ``checkpoint_dir``, an orbax checkpoint
   between segments;
4. compare: the best point against the start, by the same loss (``problem._finish``),
   unless the first call did it already;
5. report: one transfer to the host, the ``DesignResult`` in metric units.

Nothing eager runs between the compiled calls, so a design that converges within its first
call is one compiled program, and a second call with the same shapes compiles nothing.

Why this module is long: the stages of the one public call, and the segment
driver with its progress bar, read best together.

The start is the best heuristic by default, so the result is never worse than it. The
parameterisation and the loop itself are in ``problem``; the per-eigenvalue sweep is in
``per_eigenvalue``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import numpy as np

from specdiff.core.checks import check_int, is_concrete
from specdiff.core.schedule import Schedule
from specdiff.core.spectrum import Spectrum
from specdiff.design.common import (
    _check_floor,
    _digest,
    _dtype,
    _ends_to_log_snr,
    _heuristic_candidates,
    _map_to_ends,
    _run_args,
    _to_metric_units,
    _tol,
    _validate_common,
)
from specdiff.design.problem import (
    _Config,
    _Data,
    _finish,
    _segment,
    _start,
    _start_and_run,
    _State,
)
from specdiff.design.run_clock import RunClock

SEGMENT_ITERS = 25
# With the default progress=None, a run that its first segment did not finish and that
# could not take longer than this (max_iter iterations at the segment's pace, compilation
# excluded) would never show its bar: it is run again to the end by the program already
# compiled instead of compiling the segment and finish programs.
REDO_SECONDS = 1.0
# A cold first call also pays one-time costs that are not compilation (BUILD_NOTES, issue
# 13, eleventh pass), enough to make a short run look long. Where its pace projects to at
# most this many times REDO_SECONDS, the segment is timed once more, warm (at most
# RECHECK · REDO_SECONDS · SEGMENT_ITERS / max_iter seconds).
RECHECK = 4.0


@dataclasses.dataclass(frozen=True)
class DesignResult:
    """The outcome of ``design_schedule``.

    Attributes:
      schedule: the designed ``Schedule``.
      loss: its divergence (metric units: W2, not squared, for ``"w2"``).
      metric, sampler, process: what it was designed for.
      history: (iterations,) objective per iteration, in metric units.
      heuristics: loss of every heuristic compared (mapped to the endpoints if fixed).
      init: name of the starting point; init_loss its loss.
      converged: the stopping criterion was met before ``max_iter``.
      iterations: optimiser iterations run.
    """

    schedule: Schedule
    loss: float
    metric: str
    sampler: object
    process: str
    history: np.ndarray
    heuristics: dict
    init: str
    init_loss: float
    converged: bool
    iterations: int

    @property
    def best_heuristic(self) -> tuple[str, float]:
        name = min(self.heuristics, key=self.heuristics.get)
        return name, self.heuristics[name]


class _Options(NamedTuple):
    """The keyword-only arguments of ``design_schedule`` that define the problem."""

    optimizer: str
    learning_rate: float
    max_iter: int
    tol: float | None
    patience: int
    weights: object
    floor: float | None
    dtype: object


class _Setup(NamedTuple):
    """A validated ``design_schedule`` problem."""

    cfg: _Config
    data: _Data
    ends: np.ndarray  # (2,) float64 log-SNR endpoints, host copy
    dtype: np.dtype
    max_iter: int
    floor: float | None  # as given (part of a checkpoint's run identity)
    learning_rate: float


class _Start(NamedTuple):
    """Where the optimiser starts, and what it is compared with (device values until the
    end: ``_compare`` reads them all in one transfer)."""

    cands: dict  # heuristic name → (S,) float64 grid, in the compiled call's row order
    name: str | None  # the start asked for; None for "best" (the compiled call picks it)
    rho0: np.ndarray | None  # (S,) float64 grid the start is built from (None for "best")
    out: tuple  # ``problem._start``'s outputs: losses, row, θ0, loss0, scale, state, data

    def chosen(self, row) -> tuple:
        """(name, grid) of the start: the one asked for, or for "best" the heuristic in
        ``row`` (the compiled start's pick)."""
        if self.name is not None:
            return self.name, self.rho0
        name = list(self.cands)[int(row)]
        return name, self.cands[name]


class _Host(NamedTuple):
    """The start and the run, on the host."""

    name: str
    loss: float  # objective at the start (W2² for "w2")
    scale: float  # the optimiser sees the objective times this (``problem._unit_scale``)
    heuristics: dict  # name → objective of every heuristic
    iterations: int
    history: np.ndarray  # (max_iter,) objective at unit scale, NaN after the last
    done: bool
    value: float


def _finished(state, stop_total: int) -> bool:
    """Whether every problem of the loop's ``state`` has converged or reached ``stop_total``
    iterations (waits for the call that made it)."""
    return bool(np.all(np.asarray(state.done) | (np.asarray(state.it) >= stop_total)))


def _run_loop(step_fn, state, stop_total, progress, checkpoint, total_label, clock):
    """Drive a compiled loop segment by segment: progress bar and checkpoints between.

    The bar appears once the run (``clock``, a ``RunClock``) has taken a second,
    compilation not counted.
    """
    from tqdm.auto import tqdm

    bar = None
    while True:
        it = int(np.max(np.asarray(state.it)))
        if _finished(state, stop_total):
            break
        state = step_fn(state, it + SEGMENT_ITERS)
        if checkpoint is not None:
            checkpoint(state)
        if progress is not False and bar is None and (progress or clock.seconds() > 1.0):
            # Iterations run before the bar existed count as its start, not in its rate.
            now = int(np.max(np.asarray(state.it)))
            bar = tqdm(total=stop_total, initial=now, desc=total_label, leave=False)
        if bar is not None:
            bar.update(int(np.max(np.asarray(state.it))) - bar.n)
    if bar is not None:
        _finish_bar(bar, state, stop_total)
    return state


def _finish_bar(bar, state, stop_total):
    """End the bar at 100% with the reason: converged (iterations used) or the budget."""
    it = int(np.max(np.asarray(state.it)))
    converged = bool(np.all(np.asarray(state.done)))
    if converged and it < stop_total:
        bar.total = max(it, 1)  # converged early: this many iterations were the whole job
        bar.set_postfix_str(f"converged after {it} iterations", refresh=False)
    else:
        bar.set_postfix_str(f"stopped at the {stop_total}-iteration budget", refresh=False)
    bar.n = bar.total
    bar.leave = True  # the finished line stays: how the design ended
    bar.refresh()
    bar.close()


def design_schedule(
    spectrum: Spectrum,
    steps: int,
    sampler,
    process: str = "vp",
    metric: str = "w2",
    endpoints=None,
    init="best",
    *,
    optimizer: str = "lbfgs",
    learning_rate: float = 1e-2,
    max_iter: int = 1000,
    tol: float | None = None,
    patience: int = 5,
    weights=None,
    floor: float | None = None,
    dtype=None,
    key: jax.Array | None = None,
    checkpoint_dir=None,
    progress: bool | None = None,
) -> DesignResult:
    """The S-level schedule minimising the exact divergence for a spectrum and sampler.

    Args:
      spectrum: the data ``Spectrum``.
      steps: S, the number of sampler steps.
      sampler: a ``specdiff.samplers`` object (``samplers.DDIM(eta)``, ``from_name("heun")``).
      process: ``"vp"``, ``"ve"`` or ``"flow"``; metric: ``"w2"``, ``"kl"`` or ``"reverse_kl"``.
      endpoints: None, or ``(first, last)`` fixing the first (noisiest) and/or last level
        in the schedule's own units (ᾱ for VP, σ for VE); either may be None.
      init: ``"best"`` (the best heuristic), a heuristic name, a ``Schedule``, or
        ``"random"`` (needs ``key``).
      optimizer: ``"lbfgs"`` (default) or ``"adam"`` (with ``learning_rate``).
      max_iter: iteration cap; tol: relative decrease per iteration below which the run
        counts as converged after ``patience`` iterations (default 1e-6 float32,
        1e-10 float64).
      weights: optional (d,) per-eigenvalue weights; floor: for the KLs (see ``divergence``).
      dtype: float32 or float64 (default: the spectrum's).
      key: a typed PRNG key, used by ``init="random"``.
      checkpoint_dir: if given, the optimiser state is saved there with orbax between
        segments, and a rerun with the same arguments resumes from it.
      progress: show a tqdm bar (None: for runs over a second, compilation not counted).

    Returns:
      ``DesignResult``; ``result.loss <= min(result.heuristics.values())`` always.

    Example:
      >>> import specdiff as sd
      >>> spec = sd.Spectrum([4.0, 1.0, 0.25, 0.01])
      >>> res = sd.design_schedule(spec, 10, sd.samplers.DDIM())
      >>> res.loss <= res.best_heuristic[1]
      True
    """
    opts = _Options(optimizer, learning_rate, max_iter, tol, patience, weights, floor, dtype)
    setup = _validate(spectrum, steps, sampler, process, metric, endpoints, opts)
    clock = RunClock()
    start, state, fin = _initialise(setup, init, key, checkpoint_dir is None, progress)
    state, fin = _optimise(setup, start, state, fin, checkpoint_dir, progress, clock)
    schedule, loss, host = _compare(setup, start, state, fin)
    return _report(setup, schedule, loss, host)


# --------------------------------------------------------------------------- 1. validate


def _validate(spectrum, steps, sampler, process, metric, endpoints, opts: _Options) -> _Setup:
    """The checked arguments of ``design_schedule``."""
    if not isinstance(spectrum, Spectrum) or not is_concrete(spectrum.eigenvalues):
        raise ValueError("spectrum must be a concrete specdiff.Spectrum")
    _validate_common(steps, sampler, process, metric, opts.optimizer)
    steps = int(steps)
    check_int("max_iter", opts.max_iter)
    dt = _dtype(opts.dtype, np.asarray(spectrum.eigenvalues).dtype)
    tol = _tol(opts.tol, dt)
    mode, ends = _ends_to_log_snr(endpoints, process, steps)
    _check_floor(metric, opts.floor, spectrum.eigenvalues)
    spec = spectrum.anonymous()  # its arrays as they are if already of this dtype
    if spec.eigenvalues.dtype != dt or spec.mean.dtype != dt:
        spec = Spectrum(np.asarray(spectrum.eigenvalues, dt), np.asarray(spectrum.mean, dt))
    w = np.ones(spec.dim, dt) if opts.weights is None else np.asarray(opts.weights, dt)
    if w.shape != (spec.dim,) or not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"weights must be {spec.dim} finite numbers >= 0")
    cfg = _Config(
        steps,
        process,
        sampler,
        metric,
        mode,
        opts.optimizer,
        float(opts.learning_rate),
        None if opts.floor is None else float(opts.floor),
        tol,
        int(opts.patience),
    )
    data = _Data(spec, jax.device_put(np.asarray(ends, dt)), jax.device_put(w))
    return _Setup(cfg, data, ends, dt, int(opts.max_iter), opts.floor, float(opts.learning_rate))


# --------------------------------------------------------------------------- 2. initialise


def _initialise(setup: _Setup, init, key, run: bool, progress):
    """(start, state, finish): every heuristic's loss (on the endpoints if fixed), the start
    they give and its initial state, in one compiled call.

    With ``run`` the same call also runs the loop, to the end (``progress=False``) or for
    a first segment, and judges its outcome: a design that converges within it takes one
    compiled call (``finish`` is then ``_finish``'s outcome, else None). With
    ``progress=None`` a short run the segment left unfinished (``REDO_SECONDS``, at the
    pace of that call alone) is run again to the end by the same program.
    """
    cfg, data = setup.cfg, setup.data
    cands = _heuristic_candidates(cfg.steps, cfg.mode, setup.ends)
    name, rho0 = _start_grid(init, cands, cfg, setup.ends, key)
    rows = list(cands.values())
    if name is None:  # "best": chosen inside the compiled call
        pick = -1
    elif name in cands:
        pick = list(cands).index(name)
    else:  # a Schedule or a random grid: one more row
        pick = len(rows)
        rows.append(rho0)
    args = (np.stack(rows).astype(setup.dtype), np.int32(pick), data, cfg, setup.max_iter)
    if not run:
        out = _start(*args)
        return _Start(cands, name, rho0, out), out[5], None
    stop = setup.max_iter if progress is False else SEGMENT_ITERS
    call = RunClock()
    out, state, fin = _start_and_run(*args, stop)
    if progress is None and _short_and_unfinished(
        state, setup.max_iter, call, lambda: _start_and_run(*args, stop)[1]
    ):
        out, state, fin = _start_and_run(*args, setup.max_iter)  # its stop is traced
    return _Start(cands, name, rho0, out), state, fin


def _short_and_unfinished(state, max_iter: int, call, again) -> bool:
    """Whether the loop stopped before its end and the whole run, projected from the
    iterations done so far, takes at most ``REDO_SECONDS`` (compilation excluded).

    ``call``: the clock started with the call that ran the segment; ``again()``: the same
    segment run once more (warm), for a projection within ``RECHECK`` of the bound.
    """
    if _finished(state, max_iter):
        return False
    per_run = max_iter / max(int(np.max(np.asarray(state.it))), 1)
    projected = call.seconds() * per_run
    if REDO_SECONDS < projected <= RECHECK * REDO_SECONDS:
        warm = RunClock()
        _finished(again(), max_iter)  # waits for the result
        projected = warm.seconds() * per_run
    return projected <= REDO_SECONDS


def _start_grid(init, cands, cfg: _Config, ends, key):
    """(name, float64 log-SNR grid) of the start that ``init`` asks for; (None, None) for
    ``"best"``, which the compiled start picks."""
    if isinstance(init, Schedule):
        if init.num_steps != cfg.steps:
            raise ValueError(f"init schedule has {init.num_steps} steps, expected {cfg.steps}")
        return "schedule", _map_to_ends(np.asarray(init.log_snr, np.float64), cfg.mode, ends)
    if isinstance(init, str) and init == "best":
        return None, None
    if isinstance(init, str) and init == "random":
        if key is None:
            raise ValueError("init='random' needs key=jax.random.key(seed)")
        rho0 = _random_grid(cands["log_snr_uniform"], cfg.steps, key)
        return "random", _map_to_ends(rho0, cfg.mode, ends)
    if isinstance(init, str) and init in cands:
        return init, cands[init]
    raise ValueError(
        f"unknown init {init!r}; allowed: 'best', 'random', a Schedule, or one of "
        f"{', '.join(sorted(cands))}"
    )


@functools.partial(jax.jit, static_argnums=1)
def _random_draws(key, n: int):
    """(n,) and () standard normals from ``key``, in one compiled call (eagerly, the split
    and the two draws compiled four programs)."""
    k1, k2 = jax.random.split(key)
    return jax.random.normal(k1, (n,)), jax.random.normal(k2, ())


def _random_grid(base, steps: int, key) -> np.ndarray:
    """A random monotone grid: log-normal increments around the uniform log-SNR one."""
    steps_draw, start_draw = jax.device_get(_random_draws(key, steps - 1))
    spacing = (base[-1] - base[0]) / max(steps - 1, 1)
    inc = spacing * np.exp(0.7 * np.asarray(steps_draw, float))
    start = base[0] + 2.0 * float(start_draw)
    return start + np.concatenate([[0.0], np.cumsum(inc)])


# --------------------------------------------------------------------------- 3. optimise


def _optimise(setup: _Setup, start: _Start, state, fin, checkpoint_dir, progress, clock):
    """(state, finish): the compiled loop from ``state`` (or a checkpoint), at unit scale, to
    the end, segment by segment (progress bar, checkpoints); finish is None if it ran."""
    cfg, opt_data = setup.cfg, start.out[6]
    store = ckpt = None
    if checkpoint_dir is not None:
        store = _checkpoint_store(setup, start, checkpoint_dir)
        restored = store.restore(state)
        if restored is not None:
            state = restored
        ckpt = lambda s: store.save(int(s.it), s)  # noqa: E731
    if progress is False and store is None:
        return state, fin  # the compiled call ran to the end

    def step(s, stop):
        return _segment(s, opt_data, stop, cfg)

    label = f"design S={cfg.steps}"
    ran = _run_loop(step, state, setup.max_iter, progress, ckpt, label, clock)
    if store is not None:
        store.close()
    return ran, (fin if ran is state else None)


def _checkpoint_store(setup: _Setup, start: _Start, checkpoint_dir):
    """The ``RunCheckpoint`` of this run (refuses a folder of a run with other arguments)."""
    from specdiff.design.checkpoint import RunCheckpoint

    spec = setup.data.spectrum
    name, rho0 = start.chosen(start.out[1])
    run_args = _run_args(
        "design_schedule", setup.cfg, setup.ends, setup.max_iter, setup.dtype, setup.floor
    ) | {
        "init": name,
        "rho0": _digest(rho0),
        "learning_rate": setup.learning_rate,
        "spectrum": _digest(spec.eigenvalues, spec.mean),
        "weights": _digest(setup.data.weights),
    }
    return RunCheckpoint(checkpoint_dir, run_args)


# --------------------------------------------------------------------------- 4-5. compare, report


def _compare(setup: _Setup, start: _Start, state: _State, fin):
    """(schedule, loss, host values): the best point or the start (``_finish``, unless the
    compiled call already judged it), and everything the report needs, in one transfer."""
    cfg = setup.cfg
    losses, row, theta0, loss0, scale = start.out[:5]
    schedule, loss = fin if fin is not None else _finish(state, theta0, setup.data, cfg)
    got = (losses, row, loss0, scale, schedule.log_snr, loss)
    got += (state.it, state.history, state.done, state.value)
    losses, row, loss0, scale, rho, loss, it, hist, done, value = jax.device_get(got)
    if not (np.isfinite(rho).all() and (np.diff(rho) > 0).all()):
        Schedule.from_log_snr(rho, cfg.process)  # raises the error that says why
    name, _ = start.chosen(row)
    heur = {n: float(v) for n, v in zip(start.cands, losses)}
    host = _Host(name, float(loss0), float(scale), heur, int(it), hist, bool(done), value)
    return schedule, float(loss), host


def _report(setup: _Setup, schedule, loss, h: _Host) -> DesignResult:
    metric = setup.cfg.metric
    hist = h.history[: h.iterations] / h.scale
    return DesignResult(
        schedule=schedule,
        loss=float(_to_metric_units(loss, metric)),
        metric=metric,
        sampler=setup.cfg.sampler,
        process=setup.cfg.process,
        history=_to_metric_units(hist, metric),
        heuristics={n: float(_to_metric_units(v, metric)) for n, v in h.heuristics.items()},
        init=h.name,
        init_loss=float(_to_metric_units(h.loss, metric)),
        converged=h.done and bool(np.isfinite(h.value)),
        iterations=h.iterations,
    )
