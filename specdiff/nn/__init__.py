"""Networks: flax NNX denoisers, their training, real-network sampling and sample metrics.

Holds ``unet`` (model config, the flax U-Net, init/apply), ``training`` (train config, the
compiled train step, ``train``), ``denoisers`` (the public face: the exact Gaussian
denoiser, save/load, shipped checkpoints under ``weights/``), ``sampling`` (every sampler
run on a network through its own step), ``metrics`` (Fréchet distances, KID) and
``classifier`` (the in-project feature classifiers). flax and orbax are imported here only.

Imports: ``specdiff.core``, ``specdiff.samplers`` and ``specdiff.data``.
"""
