"""Data: built-in datasets, loaders of real external formats, and spectrum estimation.

Holds ``datasets`` (built-in and file-backed datasets, CIFAR-10 pickles, WAV folders) and
``spectra`` (PCA, Fourier/Welch and synthetic spectra, SPEC §1).

Imports: ``specdiff.core`` only.
"""
