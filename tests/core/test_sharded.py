"""The eigenvalue axis sharded over 4 devices gives the single-device results (issue 14).

One subprocess (``_sharded_compare``, 4 forced CPU devices, float64) computes every case on
``use_devices(1)`` and ``use_devices(4)``; the tests here compare them to round-off and check
that the 4-device run really was distributed.
"""

import numpy as np
import pytest

from tests._devices import run_forced_devices
from tests.core import _sharded_compare as compare

RTOL = 1e-12


@pytest.fixture(scope="module")
def result():
    return run_forced_devices("tests.core._sharded_compare")


def assert_close(sharded, single, what):
    """max |sharded − single| <= RTOL · max |single| (elementwise for scalars)."""
    a, b = np.asarray(sharded, float), np.asarray(single, float)
    assert a.shape == b.shape, what
    assert np.isfinite(b).all(), what
    err = np.max(np.abs(a - b)) if a.size else 0.0
    assert err <= RTOL * np.max(np.abs(b)), f"{what}: error {err:.3g}, scale {np.abs(b).max():.3g}"


CASES = [f"{s}/d={d}" for s in compare.SAMPLERS for d in compare.DIMS]


def test_every_case_ran(result):
    assert sorted(result["cases"]) == sorted(CASES)
    kinds = {(c.split("/")[0], result["cases"][c]["fused"]) for c in CASES}
    assert kinds == {(s, f) for s in compare.SAMPLERS for f in (False, True)}
    metrics = {result["cases"][c]["metric"] for c in CASES}
    assert metrics == set(compare.sd.METRICS)


@pytest.mark.parametrize("case", CASES)
def test_moments_transfer_divergences_match_one_device(result, case):
    runs = result["cases"][case]["runs"]
    for key in ("mean", "var", "H"):
        assert_close(runs["4"][key], runs["1"][key], f"{case} {key}")
    for i, metric in enumerate(compare.sd.METRICS):
        assert_close(runs["4"]["div"][i], runs["1"]["div"][i], f"{case} {metric}")


@pytest.mark.parametrize("case", CASES)
def test_gradients_match_one_device(result, case):
    c = result["cases"][case]
    keys = ("fused", "fused_grad") if c["fused"] else ("grad",)
    for key in keys:
        assert_close(c["runs"]["4"][key], c["runs"]["1"][key], f"{case} {c['metric']} {key}")
    assert np.abs(c["runs"]["1"][keys[-1]]).max() > 0  # a gradient that can fail


@pytest.mark.parametrize("case", CASES)
def test_four_devices_really_ran(result, case):
    c = result["cases"][case]
    one, four = c["evidence"]["1"], c["evidence"]["4"]
    assert one["active_mesh"] is None and one["var_devices"] == 1
    assert four["active_mesh"] == 4 and four["var_devices"] == 4
    d = int(case.split("=")[1])
    if d % 4 == 0:  # sharded: each device holds a quarter of the eigenvalues
        assert four["var_spec"] == "P('devices',)"
        assert four["var_shards"] == [[d // 4]] * 4
    if c["fused"]:  # the partial sums are added across devices
        assert four["all_reduce"] and not one["all_reduce"]


def test_one_device_runs_the_unsharded_program(result):
    assert result["shard_map_traced"] == [
        {"devices": 1, "shard_map": False, "on": 1},
        {"devices": 4, "shard_map": True, "on": 4},
        {"devices": 1, "shard_map": False, "on": 1},
    ]
