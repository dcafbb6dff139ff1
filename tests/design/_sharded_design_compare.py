"""Run by tests/design/test_sharded_design.py in a subprocess with 4 forced CPU devices.

Designs small schedules (S = 10, a few L-BFGS iterations) on ``use_devices(1)`` and on
``use_devices(4)`` (spectrum sharded, schedule and optimiser state replicated) and prints
both as one JSON object; the test compares them. Also records what shows that the 4-device
design really ran sharded: the objective traced with a 4-device mesh inside the design loop,
and the all-reduce in the lowered objective.
"""

import json
import sys

import jax
import numpy as np

import specdiff as sd
from specdiff.core import mesh, sharded
from specdiff.design import optimise, problem

# (sampler, d, metric, weighted): d not divisible by 4, divisible, and below 4.
CASES = (("ddim", 10, "w2", False), ("heun", 12, "kl", True), ("dpmpp_2m_sde", 3, "w2", False))
STEPS, ITERS = 10, 4

_traced_meshes = []
_weighted_divergence = sharded.weighted_divergence


def _spy(*args, **kwargs):
    """``sharded.weighted_divergence``, noting the device count of each trace."""
    m = args[6] if len(args) > 6 else kwargs.get("mesh")
    _traced_meshes.append(None if m is None else int(m.devices.size))
    return _weighted_divergence(*args, **kwargs)


def _design(name, d, metric, weighted, seed):
    rng = np.random.default_rng(seed)
    spec = sd.Spectrum(np.exp(2 * rng.normal(size=d)), rng.normal(size=d))
    weights = None
    if weighted:
        weights = rng.uniform(0.5, 2.0, size=d)
        weights[0] = 0.0
    res = sd.design_schedule(
        spec, STEPS, sd.samplers.from_name(name), metric=metric, weights=weights,
        max_iter=ITERS, progress=False,
    )  # fmt: skip
    return {
        "log_snr": np.asarray(res.schedule.log_snr).tolist(),
        "loss": res.loss,
        "history": np.asarray(res.history).tolist(),
        "heuristics": res.heuristics,
        "init": res.init,
        "iterations": res.iterations,
    }, spec


def _lowered_objective(spec, name, metric):
    """Whether the compiled objective's text holds an all-reduce, and the mesh it used."""
    setup = optimise._validate(
        spec, STEPS, sd.samplers.from_name(name), "vp", metric, None,
        optimise._Options("lbfgs", 1e-2, ITERS, None, 5, None, None, None),
    )  # fmt: skip
    data, cfg = problem._on_devices(setup.data, setup.cfg)
    rho = np.asarray(sd.schedules.cosine(STEPS).log_snr)
    text = problem._loss_of_rho_jit.lower(sharded.replicate(rho, cfg.mesh), data, cfg).as_text()
    size = None if cfg.mesh is None else int(cfg.mesh.devices.size)
    return {"all_reduce": "all_reduce" in text or "all-reduce" in text, "cfg_mesh": size}


def main():
    jax.config.update("jax_enable_x64", True)
    if len(jax.devices()) != 4:
        raise SystemExit(f"expected 4 forced host devices, got {jax.devices()}")
    sharded.weighted_divergence = _spy
    out = {}
    for k, (name, d, metric, weighted) in enumerate(CASES):
        runs, evidence = {}, {}
        for n in (1, 4):
            with mesh.use_devices(n):
                del _traced_meshes[:]
                runs[n], spec = _design(name, d, metric, weighted, k)
                evidence[n] = {"traced": sorted(set(_traced_meshes), key=str)}
                evidence[n] |= _lowered_objective(spec, name, metric)
        out[f"{name}/d={d}/{metric}"] = {"runs": runs, "evidence": evidence}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
