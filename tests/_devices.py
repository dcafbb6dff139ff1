"""Run a module in a subprocess with N forced CPU devices (multi-device tests, issue 14).

``XLA_FLAGS=--xla_force_host_platform_device_count`` must be set before jax starts, so a
test that needs several devices runs its computations in a fresh ``python -m module`` that
prints one JSON object, and asserts on that.
"""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_forced_devices(module: str, devices: int = 4) -> dict:
    """``python -m module`` from the repository root on ``devices`` CPU devices, float64;
    its standard output read as JSON (the test fails with the subprocess's stderr)."""
    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "")
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    env |= {"JAX_PLATFORMS": "cpu", "JAX_ENABLE_X64": "1", "SPECDIFF_CACHE_DIR": "off"}
    env.pop("SPECDIFF_DEVICES", None)
    res = subprocess.run(
        [sys.executable, "-m", module], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-4000:]
    return json.loads(res.stdout)
