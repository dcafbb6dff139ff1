"""Data: built-in datasets, loaders of real external formats, and spectrum estimation.

Holds ``datasets`` (built-in and file-backed datasets), ``loaders`` (CIFAR-10 pickles, WAV
folders and other external formats), ``conventions`` (splits and scaling), ``spectra``
(PCA and synthetic spectra, SPEC §1) and ``fourier`` (periodogram/Welch spectra of
shift-invariant data).

Imports: ``specdiff.core`` only.
"""
