"""Schedule design: heuristics, the compiled optimiser, per-eigenvalue sweeps, fits, exports.

Holds the published heuristic schedules (SPEC §10, ``heuristics``), ``design_schedule`` and
``design_per_eigenvalue`` (§6, ``optimise``, ``per_eigenvalue``), family fits (``fit``), the
exports for diffusers and k-diffusion (``export``) and run checkpoints (``checkpoint``).

Imports: ``specdiff.core`` and ``specdiff.samplers``; never data, nn, linear or cli.
"""
