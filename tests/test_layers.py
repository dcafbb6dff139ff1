"""The package's layers: each subpackage imports only from the layers below it.

core → samplers → design / data / nn / linear → cli (the top-level ``specdiff`` package and
``cli`` may import anything). Checked on every import statement in the source, including
imports inside functions, so a lazy import cannot hide an upward dependency.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "specdiff"

ALLOWED = {
    "core": {"core"},
    "samplers": {"core", "samplers"},
    "design": {"core", "samplers", "design"},
    "data": {"core", "data"},
    "nn": {"core", "samplers", "data", "nn"},
    "linear": {"core", "samplers", "linear"},
}
# Names of the top-level package that are not layers (importable from anywhere).
TOP_LEVEL_NAMES = {"__version__"}


def _imports(path: pathlib.Path):
    """(line, imported specdiff module path) for every import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "specdiff":
                    yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "specdiff":
                for a in node.names:
                    if a.name not in TOP_LEVEL_NAMES:
                        yield node.lineno, f"specdiff.{a.name}"
            elif node.module.startswith("specdiff."):
                yield node.lineno, node.module


def _modules():
    return sorted(p for p in ROOT.rglob("*.py") if p.parent != ROOT)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_layer_imports(path):
    layer = path.relative_to(ROOT).parts[0]
    if layer not in ALLOWED:  # cli: the top layer
        return
    bad = []
    for line, module in _imports(path):
        parts = module.split(".")
        target = parts[1] if len(parts) > 1 else ""
        if target not in ALLOWED[layer]:
            bad.append(f"line {line}: {module}")
    assert not bad, f"{path.relative_to(ROOT)} ({layer}) imports above its layer: {bad}"


def test_every_layer_is_checked():
    layers = {p.relative_to(ROOT).parts[0] for p in _modules()}
    assert layers == set(ALLOWED) | {"cli"}


def test_the_check_catches_an_upward_import(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from specdiff.nn.denoisers import UNet\n")
    assert list(_imports(bad)) == [(2, "specdiff.nn.denoisers")]


def test_import_specdiff_is_light():
    """``import specdiff`` loads no network, checkpoint or optimiser library."""
    import subprocess
    import sys

    code = (
        "import sys, specdiff; "
        "print(','.join(m for m in ('flax', 'orbax', 'optax', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400
LONG_MODULE_REASON = "Why this module is long:"


def test_functions_and_modules_stay_short():
    """No function over 60 lines; no module over 400 lines without a reason at its top."""
    long_functions, long_modules = [], []
    for path in sorted(ROOT.rglob("*.py")):
        source = path.read_text()
        tree = ast.parse(source)
        name = str(path.relative_to(ROOT))
        if len(source.splitlines()) > MAX_MODULE_LINES:
            doc = ast.get_docstring(tree) or ""
            if LONG_MODULE_REASON not in doc:
                long_modules.append(name)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long_functions.append(f"{name}::{node.name} ({n} lines)")
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines: {long_functions}"
    assert not long_modules, f"modules over {MAX_MODULE_LINES} lines, no reason: {long_modules}"
