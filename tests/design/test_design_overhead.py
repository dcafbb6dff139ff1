"""What a ``design_schedule`` call compiles: a few programs the first time, nothing on a
second call with the same shapes (the overhead around the loop stays small)."""

import contextlib
import time

import jax
import numpy as np
import pytest

import specdiff as sd

# Every program JAX compiles is lowered to MLIR first, also when the persistent cache then
# supplies the executable: counting lowerings counts compiled programs, eager ops included.
_LOWERING = "/jax/core/compile/jaxpr_to_mlir_module_duration"


@contextlib.contextmanager
def lowered_programs():
    names = []

    def listener(event, duration, **kwargs):
        del duration
        if event == _LOWERING:
            names.append(kwargs.get("fun_name", "?"))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def _spectrum(d, seed):
    rng = np.random.default_rng(seed)
    return sd.Spectrum(rng.uniform(0.01, 3.0, d), rng.normal(0, 0.1, d))


@pytest.mark.parametrize("progress", [False, True], ids=["one-call", "segments"])
def test_second_call_compiles_nothing(progress, monkeypatch):
    # Short segments: the segmented run (a bar asked for) needs the loop and the finish
    # programs too.
    monkeypatch.setattr("specdiff.design.optimise.SEGMENT_ITERS", 3)
    steps, d = 7, 11 if progress is False else 12  # shapes no other test uses
    first_spec, second_spec = _spectrum(d, 0), _spectrum(d, 1)  # (their own compilations)
    with lowered_programs() as first:
        res = sd.design_schedule(first_spec, steps, sd.samplers.DDIM(), progress=progress)
    assert res.iterations > 3  # more than one segment
    assert 1 <= len(first) <= 3, first  # start(+loop+finish), loop, finish: nothing eager
    with lowered_programs() as second:
        again = sd.design_schedule(second_spec, steps, sd.samplers.DDIM(), progress=progress)
    assert second == []
    assert again.loss != res.loss  # a different problem, same shapes


def test_one_call_and_segments_agree(monkeypatch):
    """The loop in one compiled call and the loop run in segments give the same design."""
    spec = _spectrum(9, 2)
    whole = sd.design_schedule(spec, 6, sd.samplers.DDIM(), progress=False)
    monkeypatch.setattr("specdiff.design.optimise.SEGMENT_ITERS", 2)
    parts = sd.design_schedule(spec, 6, sd.samplers.DDIM(), progress=True)
    assert whole.iterations == parts.iterations > 4
    np.testing.assert_array_equal(whole.schedule.log_snr, parts.schedule.log_snr)
    np.testing.assert_array_equal(whole.history, parts.history)
    assert whole.heuristics == parts.heuristics and whole.init == parts.init


@pytest.mark.parametrize("redo", [True, False], ids=["short-run-once", "long-run-segments"])
def test_default_progress_finishes_a_short_run_in_one_program(redo, monkeypatch, capsys):
    """progress=None: a run the first segment leaves unfinished is run again to the end by
    the program already compiled when it is short (no bar, no loop or finish program), and
    goes on in segments when it is not; both give the one-call design."""
    monkeypatch.setattr("specdiff.design.optimise.SEGMENT_ITERS", 2)
    if not redo:  # every run counts as long
        monkeypatch.setattr("specdiff.design.optimise.REDO_SECONDS", -1.0)
    spec = _spectrum(13 if redo else 14, 3)  # shapes no other test uses
    kw = {"max_iter": 40}  # the pace bound: 40 iterations at the first call's pace
    whole = sd.design_schedule(spec, 5, sd.samplers.DDIM(), progress=False, **kw)
    capsys.readouterr()
    with lowered_programs() as first:
        auto = sd.design_schedule(spec, 5, sd.samplers.DDIM(), **kw)
    assert auto.iterations == whole.iterations > 2  # the first segment did not finish it
    np.testing.assert_array_equal(auto.schedule.log_snr, whole.schedule.log_snr)
    np.testing.assert_array_equal(auto.history, whole.history)
    if redo:
        assert first == []  # the one-call program, compiled for `whole`, ran it all
        assert "design S=5" not in capsys.readouterr().err  # a short run shows no bar
    else:
        assert len(first) == 2, first  # the loop's segments and the finish


@pytest.mark.parametrize(
    "first, later, calls",
    [(0.1, 0.0, [2, 2, 40]), (0.1, 0.1, [2, 2]), (0.3, 0.0, [2])],
    ids=["slow-first-call-timed-again", "slow-every-call", "too-slow-to-time-again"],
)
def test_a_slow_first_call_is_timed_again_warm(first, later, calls, monkeypatch):
    """progress=None: a first call whose own time (here a sleep) projects the run into
    (REDO_SECONDS, RECHECK · REDO_SECONDS] runs its segment once more, warm; the run is
    finished by the program it has if that pace is short (stops 2, 2, 40), else it goes on
    in segments (2, 2), as does a run projected beyond the band without a second look (2).
    """
    from specdiff.design import optimise

    monkeypatch.setattr(optimise, "SEGMENT_ITERS", 2)
    assert optimise.REDO_SECONDS == 1.0 and optimise.RECHECK == 4.0  # the sleeps below
    spec, kw = _spectrum(15, 4), {"max_iter": 40}  # 40 / 2: a call's time × 20 projected
    whole = sd.design_schedule(spec, 5, sd.samplers.DDIM(), progress=False, **kw)
    real, stops = optimise._start_and_run, []

    def timed(*args):
        out = jax.block_until_ready(real(*args))
        time.sleep(later if stops else first)
        stops.append(int(args[-1]))
        return out

    monkeypatch.setattr(optimise, "_start_and_run", timed)
    with lowered_programs() as lowered:
        auto = sd.design_schedule(spec, 5, sd.samplers.DDIM(), **kw)
    assert stops == calls
    if calls[-1] == kw["max_iter"]:
        assert lowered == []  # the program compiled for `whole` ran it all
    assert auto.iterations == whole.iterations > 2
    np.testing.assert_array_equal(auto.schedule.log_snr, whole.schedule.log_snr)
