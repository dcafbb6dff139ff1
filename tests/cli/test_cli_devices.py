"""``specdiff --devices``: the mesh a command runs on, and one-line errors (issue 14)."""

import importlib

import jax

from specdiff.cli.main import main
from specdiff.core import mesh


def test_devices_flag_selects_the_mesh(monkeypatch, capsys):
    seen = []
    cli_main = importlib.import_module("specdiff.cli.main")
    monkeypatch.setitem(
        cli_main.COMMANDS, "compare", lambda args: seen.append(mesh.current_mesh()) or 0
    )
    assert main(["--devices", "1", "compare", "--synthetic", "ata", "--dim", "8"]) == 0
    assert seen[0].devices.size == 1
    assert mesh.current_mesh().devices.size == len(jax.devices())  # restored afterwards


def test_bad_devices_is_one_line_and_exit_2(capsys):
    n = len(jax.devices())
    assert main(["--devices", str(n + 1), "compare", "--synthetic", "ata", "--dim", "8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"asked for {n + 1}" in err
