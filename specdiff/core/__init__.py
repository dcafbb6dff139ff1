"""The closed-form core: what every other layer builds on.

Holds the data ``Spectrum``, the noise ``Schedule`` (levels, log-SNR, process conversions,
the DDPM training schedule), input checks, the spectral engine (output moments, transfer
function, trajectory; SPEC §3–4, §11), the divergences (§5), the slow float64 references
(§7) and the schedule/spectrum file formats; the device mesh (``mesh``) and the joining of a
multi-process run (``multihost``).

Imports: numpy, jax and the standard library only; nothing else of specdiff. The engine
works with any sampler object through its interface (``specdiff.samplers`` documents it)
and never imports a sampler module.
"""
