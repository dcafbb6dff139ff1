"""Schedule design: heuristics, the compiled optimiser, per-eigenvalue sweeps, fits, exports.

Holds the published heuristic schedules (SPEC §10, ``heuristics``); the optimisation problem
(log-SNR parameterisation, loss, line search, compiled loop: ``problem``; shared argument
checks: ``common``); ``design_schedule`` (``optimise``), ``design_at_nfe`` (``at_nfe``:
samplers compared at equal NFE) and ``design_per_eigenvalue`` (``per_eigenvalue`` over the
refilled ``pool``) (§6); family fits (``fit``); exports for diffusers and k-diffusion
(``export``); run checkpoints (``checkpoint``).

Imports: ``specdiff.core`` and ``specdiff.samplers``; never data, nn, linear or cli.
"""
