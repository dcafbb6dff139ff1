"""Conventions shared by the built-in datasets and the loaders of external files.

Holds the split names and rule (``SPLITS``, the fixed permutation split with its seed and
test fraction), the Rec. 709 luma weights and the 8-bit scaling x/127.5 − 1. Both
``datasets`` and ``loaders`` import these, so neither imports the other's internals.
"""

from __future__ import annotations

import math

import numpy as np

from specdiff.core.checks import check_choice

SPLITS = ("train", "test", "all")
TEST_FRACTION = 0.2
SPLIT_SEED = 0
# Rec. 709 luma, as skimage.color.rgb2gray.
LUMA = np.array([0.2125, 0.7154, 0.0721])


def _check_split(split: str) -> str:
    check_choice("split", split, SPLITS)
    return split


def _permutation_split(n: int, split: str) -> np.ndarray:
    """Indices of ``split`` under the fixed permutation split (first ⌈N/5⌉ are test)."""
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_test = math.ceil(TEST_FRACTION * n)
    test, train = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    return {"train": train, "test": test, "all": np.concatenate([train, test])}[split]


def _scale_uint8(x) -> np.ndarray:
    return (np.asarray(x, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)).astype(
        np.float32
    )
