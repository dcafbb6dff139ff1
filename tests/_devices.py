"""Run a module in a subprocess with N forced CPU devices (multi-device tests, issue 14).

``XLA_FLAGS=--xla_force_host_platform_device_count`` must be set before jax starts, so a
test that needs several devices runs its computations in a fresh ``python -m module`` that
prints one JSON object, and asserts on that.
"""

import json
import pathlib
import subprocess
import sys

from experiments._common import forced_cpu_devices

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_forced_devices(module: str, devices: int = 4) -> dict:
    """``python -m module`` from the repository root on ``devices`` CPU devices, float64;
    its standard output read as JSON (the test fails with the subprocess's stderr)."""
    env = forced_cpu_devices(devices) | {"JAX_ENABLE_X64": "1", "SPECDIFF_CACHE_DIR": "off"}
    res = subprocess.run(
        [sys.executable, "-m", module], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-4000:]
    return json.loads(res.stdout)
