"""``design_schedule`` with the spectrum sharded over 4 devices designs the single-device
schedule (issue 14).

One subprocess (``_sharded_design_compare``, 4 forced CPU devices, float64) designs every
case on ``use_devices(1)`` and ``use_devices(4)``: same schedule, loss, history and
heuristic losses to round-off, and the 4-device objective traced with the 4-device mesh and
summed with an all-reduce.
"""

import numpy as np
import pytest

from tests._devices import run_forced_devices
from tests.core.test_sharded import assert_close
from tests.design import _sharded_design_compare as compare

NAMES = [f"{s}/d={d}/{m}" for s, d, m, _ in compare.CASES]


@pytest.fixture(scope="module")
def result():
    return run_forced_devices("tests.design._sharded_design_compare")


@pytest.mark.parametrize("name", NAMES)
def test_design_matches_one_device(result, name):
    one, four = result[name]["runs"]["1"], result[name]["runs"]["4"]
    assert four["init"] == one["init"] and four["iterations"] == one["iterations"] > 0
    for key in ("log_snr", "loss", "history"):
        assert_close(four[key], one[key], f"{name} {key}")
    assert four["heuristics"].keys() == one["heuristics"].keys()
    for h, v in one["heuristics"].items():
        assert_close(four["heuristics"][h], v, f"{name} heuristic {h}")
    assert one["loss"] <= min(one["heuristics"].values())  # the design ran: never worse


@pytest.mark.parametrize("name", NAMES)
def test_design_really_sharded(result, name):
    ev = result[name]["evidence"]
    assert ev["1"] == {"traced": [], "all_reduce": False, "cfg_mesh": None}
    assert ev["4"] == {"traced": [4], "all_reduce": True, "cfg_mesh": 4}
    assert np.all(np.diff(result[name]["runs"]["4"]["log_snr"]) > 0)
