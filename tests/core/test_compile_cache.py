"""The persistent compilation cache: the CLI fills it on a first run and reuses it after."""

import os
import subprocess
import sys
from pathlib import Path

from specdiff.core.compile_cache import cache_dir

ROOT = Path(__file__).resolve().parents[2]


def _run_cli(args, env):
    return subprocess.run(
        [sys.executable, "-m", "specdiff", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _entries(path: Path) -> set[str]:
    return {p.name for p in path.rglob("*") if p.is_file()}


def test_second_cli_run_compiles_nothing_new(tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "SPECDIFF_CACHE_DIR": str(cache), "JAX_PLATFORMS": "cpu"}
    args = ["evaluate", str(tmp_path / "s.json"), "--synthetic", "powerlaw", "--dim", "8"]
    design = ["design", "--synthetic", "powerlaw", "--dim", "8", "--steps", "3"]
    first = _run_cli([*design, "--out", str(tmp_path / "s.json")], env)
    assert first.returncode == 0, first.stderr
    after_first = _entries(cache)
    assert after_first, "the first run wrote no compiled executable to the cache"
    assert _run_cli(args, env).returncode == 0
    after_eval = _entries(cache)
    # The same design again: every executable it needs is already cached.
    again = _run_cli([*design, "--out", str(tmp_path / "t.json")], env)
    assert again.returncode == 0, again.stderr
    assert _entries(cache) == after_eval


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SPECDIFF_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    for off in ("off", "0", "none", ""):
        monkeypatch.setenv("SPECDIFF_CACHE_DIR", off)
        assert cache_dir() is None
    monkeypatch.delenv("SPECDIFF_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "specdiff" / "jax"
