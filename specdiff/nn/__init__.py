"""Networks: flax NNX denoisers, their training, real-network sampling and sample metrics.

Holds ``denoisers`` (U-Net, exact Gaussian denoiser, training, shipped checkpoints under
``weights/``), ``sampling`` (the samplers run on a network) and ``metrics`` (Fréchet
distances, KID, the in-project classifiers). flax and orbax are imported here only.

Imports: ``specdiff.core``, ``specdiff.samplers`` and ``specdiff.data``.
"""
